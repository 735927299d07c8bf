"""Side-by-side comparison of evaluation runs from MLflow, as a table and a bar chart.

A run id may be an evaluate step's run or a pipeline (parent) run: for a parent, the metrics of its
``evaluate`` child run are used (the other steps' metrics are added as ``<step>.<metric>``).

Stage view (``stage_columns``): an evaluate run holds the metrics of each model it evaluated under a
stage prefix (``base.``, ``sft.``, ``dpo.``); there every (run, stage) becomes a column of the
unprefixed metrics, labelled with the stage's mode, so base vs SFT vs DPO of one run, and the stages
of two runs of one recipe, stand side by side. ``recipe_note`` says whether the runs share a recipe
(the pipeline run's ``coderforge.recipe_fingerprint`` tag).
"""

from __future__ import annotations

import math
from pathlib import Path

from coderforge.evals.report import mode_of, stage_metrics

# needle_yarn_accuracy: the needle past the trained length with YaRN (eval.long_context; evals.needle)
HEADLINE = ("humaneval_pass_at_1", "mbpp_pass_at_1", "humaneval_plus_pass_at_1", "mbpp_plus_pass_at_1",
            "fim_exact_match", "needle_accuracy", "needle_yarn_accuracy", "heldout_loss", "heldout_ppl")


def run_metrics(uri: str, run_id: str) -> tuple[str, dict[str, float]]:
    """(label, metrics) of one run, following a pipeline run to its evaluate child."""
    from coderforge.tracking import _client, child_runs

    client = _client(uri)
    run = client.get_run(run_id)
    label = run.info.run_name or run_id[:8]
    metrics = dict(run.data.metrics)
    if run.data.tags.get("coderforge.kind") == "pipeline" or not any(k in metrics for k in HEADLINE):
        for child in child_runs(uri, run_id):
            step = child.data.tags.get("coderforge.step", child.info.run_name)
            for k, v in child.data.metrics.items():
                metrics[k if step == "evaluate" else f"{step}.{k}"] = v
    return f"{label} ({run_id[:8]})", metrics


def comparison(uri: str, run_ids: list[str]) -> tuple[list[str], list[str], list[dict[str, float]]]:
    """(column labels, metric names in display order, metrics per run)."""
    labels, per_run = [], []
    for rid in run_ids:
        label, m = run_metrics(uri, rid)
        labels.append(label)
        per_run.append(m)
    names = sorted(set().union(*per_run))
    head = [n for n in HEADLINE if n in names]
    evals = [n for n in names if n not in head and "." not in n]
    rest = [n for n in names if n not in head and n not in evals]
    return labels, head + evals + rest, per_run


def stage_columns(labels: list[str], per_run: list[dict[str, float]]
                  ) -> tuple[list[str], list[str], list[dict[str, float]]]:
    """One column per (run, evaluated stage): ``(labels, metric names, metrics per column)``; a run
    without stage-prefixed metrics keeps its one column."""
    out_labels, out_metrics = [], []
    for label, metrics in zip(labels, per_run, strict=True):
        stages = stage_metrics(metrics)
        if not stages:
            out_labels.append(label)
            out_metrics.append({k: v for k, v in metrics.items() if "." not in k})
            continue
        for stage, values in stages.items():
            mode = mode_of(values)
            out_labels.append(f"{label} {stage}" + (f" ({mode})" if mode else ""))
            out_metrics.append({k: v for k, v in values.items() if k != "instruct_mode"})
    names = sorted(set().union(*out_metrics)) if out_metrics else []
    head = [n for n in HEADLINE if n in names]
    return out_labels, head + [n for n in names if n not in head], out_metrics


def recipe_note(uri: str, run_ids: list[str]) -> str:
    """Whether the runs come from one recipe (by the pipeline runs' recipe fingerprints); "" if unknown."""
    from coderforge.tracking import PARENT_TAG, _client

    client, prints = _client(uri), []
    for rid in run_ids:
        tags = client.get_run(rid).data.tags
        fp = tags.get("coderforge.recipe_fingerprint")
        if fp is None and tags.get(PARENT_TAG):
            fp = client.get_run(tags[PARENT_TAG]).data.tags.get("coderforge.recipe_fingerprint")
        prints.append(fp)
    if len(run_ids) < 2 or all(p is None for p in prints):
        return ""
    if len(set(prints)) == 1:
        return f"recipe: the same in all runs (fingerprint {prints[0]})"
    return "recipes differ: " + ", ".join(f"{rid[:8]}={p or '?'}" for rid, p in zip(run_ids, prints, strict=True))


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return str(v)
    return f"{v:.4g}"


def format_table(labels: list[str], names: list[str], per_run: list[dict[str, float]]) -> str:
    rows = [["metric", *labels]]
    for n in names:
        vals = [m.get(n) for m in per_run]
        delta = ""
        if len(vals) >= 2 and vals[0] is not None and vals[-1] is not None:
            delta = f"{vals[-1] - vals[0]:+.4g}"
        rows.append([n, *(_fmt(v) for v in vals), delta])
    rows[0].append("Δ(last-first)" if len(per_run) >= 2 else "")
    widths = [max(len(r[i]) if i < len(r) else 0 for r in rows) for i in range(len(rows[0]))]
    out = []
    for j, r in enumerate(rows):
        out.append("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def write_chart(labels: list[str], names: list[str], per_run: list[dict[str, float]], path: Path,
                max_metrics: int = 8) -> list[str]:
    """Grouped bars, one panel per metric (the headline ones first); returns the metrics drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = [n for n in names if "." not in n and any(n in m for m in per_run)
             and not n.endswith(("_seconds", "_n")) and "_verdict_" not in n][:max_metrics]
    if not drawn:
        drawn = names[:max_metrics]
    cols = min(4, max(1, len(drawn)))
    rows = math.ceil(len(drawn) / cols) if drawn else 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, name in zip(axes.flat, drawn, strict=False):
        vals = [m.get(name, float("nan")) for m in per_run]
        ax.bar(range(len(vals)), vals, color=[colors[i % len(colors)] for i in range(len(vals))])
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(len(vals)), [str(i + 1) for i in range(len(vals))], fontsize=8)
    for ax in list(axes.flat)[len(drawn):]:
        ax.axis("off")
    fig.legend([plt.Rectangle((0, 0), 1, 1, color=colors[i % len(colors)]) for i in range(len(labels))],
               [f"{i + 1}: {lab}" for i, lab in enumerate(labels)], loc="lower center", ncol=min(3, len(labels)),
               fontsize=8)
    fig.tight_layout(rect=(0, 0.08 + 0.03 * math.ceil(len(labels) / 3), 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn
