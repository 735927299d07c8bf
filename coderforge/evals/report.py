"""The Markdown summary of an evaluation (shown as the evaluate step's KFP Markdown artifact): one
column per evaluated model (base, SFT, DPO, with its mode), pass@k per language, what was skipped,
and the per-problem results."""

from __future__ import annotations

import json
from pathlib import Path

_MAX_ROWS = 50
STAGES = ("base", "sft", "dpo")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _cell(text: str, width: int = 80) -> str:
    text = " ".join(str(text).split())
    text = text.replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def stage_metrics(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """``{stage: {metric: value}}`` from stage-prefixed metric names (``sft.humaneval_pass_at_1``)."""
    out: dict[str, dict[str, float]] = {}
    for k, v in metrics.items():
        stage, dot, name = k.partition(".")
        if dot and stage in STAGES:
            out.setdefault(stage, {})[name] = v
    return {s: out[s] for s in STAGES if s in out}


def mode_of(values: dict[str, float]) -> str:
    flag = values.get("instruct_mode")
    return "" if flag is None else ("instruct" if flag else "completion")


def _stage_table(per_stage: dict[str, dict[str, float]]) -> list[str]:
    stages = list(per_stage)
    names = sorted({n for vals in per_stage.values() for n in vals if n != "instruct_mode"})
    lines = ["| metric | " + " | ".join(f"{s} ({mode_of(per_stage[s])})" for s in stages) + " |",
             "|---|" + "---|" * len(stages)]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(_fmt(per_stage[s].get(n, "-")) for s in stages) + " |")
    return lines


def _language_table(rows: list[dict]) -> list[str]:
    ks = sorted({k for r in rows for k in r if k.startswith("pass_at_") and k != "pass_at_1"},
                key=lambda k: int(k.rsplit("_", 1)[1]))
    extra = [k for k in ("sampled_pass_at_1", *ks) if any(k in r for r in rows)]
    head = ["stage", "mode", "language", "benchmark", "n", "pass@1 (greedy)", *(k.replace("_at_", "@")
                                                                                for k in extra)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = {s: i for i, s in enumerate(STAGES)}
    for r in sorted(rows, key=lambda r: (r["language"], order.get(r["stage"], 9), r["benchmark"])):
        cells = [r["stage"], r["mode"], r["language"], r["benchmark"], r["n"], r["pass_at_1"],
                 *(r.get(k, "-") for k in extra)]
        lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
    return lines


def _problem_rows(path: Path) -> list[str]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        return []
    bench = path.name[: -len("_results.jsonl")]
    lines = ["", f"## {bench}: per-problem results ({len(rows)})", ""]
    if "verdict" in rows[0]:
        lines += ["| task | sample | verdict | detail |", "|---|---|---|---|"]
        for r in rows[:_MAX_ROWS]:
            lines.append(f"| {r['task_id']} | {r.get('sample', 0)} | {r['verdict']} | {_cell(r.get('detail', ''))} |")
    else:
        keys = [k for k in rows[0] if k not in ("prompt", "completion", "generation")][:6]
        lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        for r in rows[:_MAX_ROWS]:
            lines.append("| " + " | ".join(_cell(_fmt(r.get(k, ""))) for k in keys) + " |")
    if len(rows) > _MAX_ROWS:
        lines.append(f"\n… {len(rows) - _MAX_ROWS} more rows in `{path.name}`")
    return lines


def summary_markdown(metrics: dict[str, float], info: dict, out_dir: Path) -> str:
    lines = ["# Evaluation summary", ""]
    per_stage = stage_metrics(metrics)
    if per_stage:
        models = ", ".join(f"{s['stage']}: `{s.get('model', '?')}`" for s in info.get("stages", []))
        if models:
            lines += [f"Models: {models}. Generation: {info.get('backend', '?')}.", ""]
        lines += _stage_table(per_stage)
    else:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(metrics[k])} |" for k in sorted(metrics)]
    if info.get("languages"):
        lines += ["", "## pass@k by language", ""] + _language_table(info["languages"])
    skipped = info.get("skipped") or {}
    if skipped:
        lines += ["", "## Skipped", ""]
        lines += [f"- **{k}**: {v}" for k, v in skipped.items()]
    order = {s: i for i, s in enumerate(STAGES)}

    def key(p: Path) -> tuple:
        stage = p.name.split(".", 1)[0] if "." in p.name[: -len(".jsonl")] else "base"
        return order.get(stage, 9), p.name

    for path in sorted(Path(out_dir).glob("*_results.jsonl"), key=key):
        lines += _problem_rows(path)
    return "\n".join(lines) + "\n"
