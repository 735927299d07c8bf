"""A pipeline run as a whole: its MLflow parent run, and the summary gathered from every step's
report when it ends (``summary.json``, a Markdown report, the terminal table, the data funnel)."""

from __future__ import annotations

import json
from pathlib import Path

from coderforge import tracking
from coderforge.config import load_recipe_text
from coderforge.steps.funnel import plot_stages, posttrain_funnel, posttrain_languages, write_funnel
from coderforge.steps.table import STEPS
from coderforge.workspace import setup_logging, tracking_uri_of

TABLE_COLUMNS = ("in", "kept", "dropped", "quarantined", "tokens", "seconds")
ROW_METRICS = ("tokens", "rows", "padding_fraction", "vocab_size", "final_loss")
TRAIN_STEPS = tuple(s.name for s in STEPS if s.resources == "ray" and s.payload)
# per training stage in the table: loss, data, speed, start-up overhead, and each stage's own held-out measure
STAGE_METRICS = ("final_loss", "tokens", "steps", "tokens_per_s", "phase.overhead_s", "heldout_loss_before",
                 "heldout_loss_after", "heldout.reward_accuracy", "heldout.margin", "heldout.kl",
                 "train.reward_accuracy")
# the evaluate step's headline numbers, per model (base / sft / dpo prefixes)
EVAL_HEADLINES = ("heldout_loss", "humaneval_pass_at_1", "fim_exact_match", "mbpp_pass_at_1", "needle_accuracy",
                  "needle_yarn_accuracy")
EVAL_STAGE_OF = {"pretrain": "base", "pretrain_repo": "base", "sft": "sft", "dpo": "dpo"}
CURATION_STEPS = tuple(s.name for s in STEPS if "data" in s.pipelines)


def start_pipeline_run(recipe_yaml: str, pipeline: str, existing_run_id: str = "") -> str:
    """The MLflow parent run of a pipeline run: adopt ``existing_run_id`` or create one with the
    whole recipe as params."""
    setup_logging()
    cfg = load_recipe_text(recipe_yaml, origin="recipe passed to start_run")
    if existing_run_id:
        return existing_run_id
    return tracking.start_parent_run(
        tracking_uri_of(cfg), cfg.tracking.experiment, f"{cfg.run.name}-{pipeline}", cfg.flat_params(),
        tags={"coderforge.pipeline": pipeline, "coderforge.recipe_fingerprint": cfg.fingerprint()},
    )


def _step_row(rep: dict) -> dict:
    ledger = rep.get("ledger")
    row = {"seconds": rep.get("info", {}).get("seconds")}
    if ledger:
        row.update({k: ledger[k] for k in ("in", "kept", "dropped", "quarantined")})
        row["reasons"] = ledger.get("reasons", {})
    for key in ROW_METRICS:
        if key in rep.get("metrics", {}):
            row[key] = rep["metrics"][key]
    return row


def _train_summary(reports: dict[str, dict]) -> tuple[dict, dict]:
    stages = {name: reports[name].get("metrics", {}) for name in TRAIN_STEPS if name in reports}
    final = next((reports[name] for name in reversed(TRAIN_STEPS) if name in reports), {})
    if not stages:
        return {}, final
    last = final.get("metrics", {})
    return {
        "final_loss": last.get("final_loss"),
        "tokens": sum(m.get("tokens") or 0 for m in stages.values()),
        "steps": sum(m.get("steps") or 0 for m in stages.values()),
        "stages": {name: {k: m[k] for k in STAGE_METRICS if m.get(k) is not None} for name, m in stages.items()},
    }, final


def build_summary(reports: dict[str, dict], tracking_uri: str, run_id: str) -> dict:
    """The run summary (``summary.json``): a per-step table, training and evaluation numbers."""
    train, final = _train_summary(reports)
    return {
        "steps": {name: _step_row(rep) for name, rep in reports.items()},
        "train": train,
        "eval": reports.get("evaluate", {}).get("metrics", {}),
        "mlflow": {"tracking_uri": tracking_uri, "run_id": run_id},
        "model_path": final.get("info", {}).get("model_path"),
        "posttrain": _posttrain(reports),
    }


def _posttrain(reports: dict[str, dict]) -> dict:
    funnel = posttrain_funnel(reports)
    return {"funnel": funnel, "by_language": posttrain_languages(reports)} if funnel else {}


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else f"{v:.4g}"
    return str(v)


def render_table(summary: dict, markdown: bool = False) -> str:
    """The per-step table with the training and evaluation lines, as Markdown or aligned text."""
    header = ("step", *TABLE_COLUMNS)
    rows = [(name, *(_fmt(row.get(k)) for k in TABLE_COLUMNS)) for name, row in summary["steps"].items()]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * len(TABLE_COLUMNS)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    else:
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                 for r in [header, *rows]]
        lines.insert(1, "  ".join("-" * w for w in widths))
    train, evaluation = summary.get("train"), summary.get("eval")
    funnel = (summary.get("posttrain") or {}).get("funnel")
    if funnel:
        lines += ["", "post-training data: " + " → ".join(f"{k} {_fmt(v)}" for k, v in funnel.items())]
        for language, row in (summary["posttrain"].get("by_language") or {}).items():
            lines.append(f"  {language}: " + "  ".join(f"{k}={_fmt(v)}" for k, v in sorted(row.items())))
    if train:
        lines += ["", f"train: final_loss={_fmt(train.get('final_loss'))} tokens={_fmt(train.get('tokens'))}"]
        lines += [f"  {name}: " + "  ".join(f"{k}={_fmt(v)}" for k, v in m.items())
                  for name, m in (train.get("stages") or {}).items()]
    if evaluation:
        lines += ["", "eval: " + "  ".join(f"{k}={_fmt(v)}" for k, v in sorted(evaluation.items())
                                          if "." not in k and k in EVAL_HEADLINES)]
        for stage in dict.fromkeys(EVAL_STAGE_OF.values()):
            row = {k: evaluation[f"{stage}.{k}"] for k in EVAL_HEADLINES if f"{stage}.{k}" in evaluation}
            if row:
                lines.append(f"  {stage}: " + "  ".join(f"{k}={_fmt(v)}" for k, v in row.items()))
    return "\n".join(lines)


def summary_markdown(summary: dict) -> str:
    return "\n".join(["# CoderForge run summary", "", render_table(summary, markdown=True), "",
                      f"MLflow run `{summary['mlflow']['run_id']}` at `{summary['mlflow']['tracking_uri']}`", ""])


def _parent_metrics(summary: dict) -> dict[str, float]:
    metrics = {}
    for step, row in summary["steps"].items():
        for key in TABLE_COLUMNS:
            if isinstance(row.get(key), (int, float)):
                metrics[f"{step}.{key}"] = row[key]
    for stage, value in ((summary.get("posttrain") or {}).get("funnel") or {}).items():
        metrics[f"posttrain.{stage}"] = value
    for prefix in ("train", "eval"):
        for key, value in (summary.get(prefix) or {}).items():
            if isinstance(value, (int, float)):
                metrics[f"{prefix}.{key}"] = value
    return metrics


def finish_pipeline_run(recipe_yaml: str, parent_run_id: str, reports_json: dict[str, str],
                        summary_path: str, report_path: str) -> dict:
    """Write the summary, log it (and per-step counts) to the parent run, and close the run."""
    setup_logging()
    cfg = load_recipe_text(recipe_yaml, origin="recipe passed to finish_run")
    uri = tracking_uri_of(cfg)
    reports = {k: json.loads(v) for k, v in reports_json.items()}
    summary = build_summary(reports, uri, parent_run_id)
    Path(summary_path).parent.mkdir(parents=True, exist_ok=True)
    parent = tracking.RunLogger(uri, parent_run_id)
    parent.log_metrics(_parent_metrics(summary))
    curation = [dict(reports[s]["ledger"], step=s) for s in CURATION_STEPS if reports.get(s, {}).get("ledger")]
    if curation:
        funnel = write_funnel(str(Path(summary_path).parent / "funnel"), curation, run=parent)
        summary["funnel_png"] = funnel["png"]
    stages = (summary.get("posttrain") or {}).get("funnel")
    if stages:
        png = plot_stages(stages, str(Path(summary_path).parent / "funnel" / "posttrain_funnel.png"),
                          "post-training data: seeds to decontaminated instruction samples")
        parent.log_artifact(png)
        summary["posttrain"]["funnel_png"] = png
    Path(summary_path).write_text(json.dumps(summary, indent=2, default=str))
    Path(report_path).write_text(summary_markdown(summary))
    parent.log_dict(summary, "summary.json")
    parent.client.log_text(parent_run_id, summary_markdown(summary), "summary.md")
    parent.client.set_terminated(parent_run_id, status="FINISHED")
    return summary
