"""The Markdown summary of an evaluation (shown as the evaluate step's KFP Markdown artifact)."""

from __future__ import annotations

import json
from pathlib import Path

_MAX_ROWS = 50


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _cell(text: str, width: int = 80) -> str:
    text = " ".join(str(text).split())
    text = text.replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def summary_markdown(metrics: dict[str, float], info: dict, out_dir: Path) -> str:
    lines = ["# Evaluation summary", ""]
    lines += ["| metric | value |", "|---|---|"]
    for k in sorted(metrics):
        lines.append(f"| {k} | {_fmt(metrics[k])} |")
    skipped = info.get("skipped") or {}
    if skipped:
        lines += ["", "## Skipped", ""]
        lines += [f"- **{k}**: {v}" for k, v in skipped.items()]
    for path in sorted(Path(out_dir).glob("*_results.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if not rows:
            continue
        bench = path.name[: -len("_results.jsonl")]
        lines += ["", f"## {bench}: per-problem results ({len(rows)})", ""]
        if "verdict" in rows[0]:
            lines += ["| task | sample | verdict | detail |", "|---|---|---|---|"]
            for r in rows[:_MAX_ROWS]:
                lines.append(f"| {r['task_id']} | {r.get('sample', 0)} | {r['verdict']} "
                             f"| {_cell(r.get('detail', ''))} |")
        else:
            keys = [k for k in rows[0] if k not in ("prompt", "completion", "generation")][:6]
            lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            for r in rows[:_MAX_ROWS]:
                lines.append("| " + " | ".join(_cell(_fmt(r.get(k, ""))) for k in keys) + " |")
        if len(rows) > _MAX_ROWS:
            lines.append(f"\n… {len(rows) - _MAX_ROWS} more rows in `{path.name}`")
    return "\n".join(lines) + "\n"
