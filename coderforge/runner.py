"""The embedded default: run a recipe DAG on this machine with ``kfp.local``.

The same compiled DAG a cluster would run executes here in subprocesses
(``kfp.local.SubprocessRunner``); Ray starts locally inside the heavy steps; MLflow writes to a
SQLite store under the work directory (unless ``MLFLOW_TRACKING_URI`` says otherwise); artifacts
go to ``WORKDIR/pipeline_root``.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from coderforge import tracking
from coderforge.config import RecipeConfig, encode_recipe_b64
from coderforge.runtime import setup_logging, tracking_uri_of, workdir_of

log = logging.getLogger("coderforge.runner")


def run_local(cfg: RecipeConfig, pipeline: str = "recipe") -> dict:
    """Run ``pipeline`` for ``cfg`` locally; returns the summary (also written to WORKDIR/summary.json)."""
    from kfp import local

    from pipelines.recipe import build_pipeline

    setup_logging()
    workdir = workdir_of(cfg)
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = cfg.model_copy(deep=True)
    cfg.run.workdir = str(workdir)
    uri = tracking_uri_of(cfg)
    run_id = tracking.start_parent_run(
        uri, cfg.tracking.experiment, f"{cfg.run.name}-{pipeline}", cfg.flat_params(),
        tags={"coderforge.pipeline": pipeline, "coderforge.recipe_fingerprint": cfg.fingerprint(),
              "coderforge.workdir": str(workdir), "coderforge.mode": "local"},
    )
    (workdir / "recipe.yaml").write_text(cfg.to_yaml())
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(workdir / "pipeline_root"),
               raise_on_error=True)
    try:
        task = build_pipeline(pipeline, cfg)(recipe=encode_recipe_b64(cfg.to_json()), mlflow_run_id=run_id)
    except BaseException:
        tracking.finish_run(uri, run_id, "FAILED")
        raise
    summary_file = Path(task.output.path)
    summary = json.loads(summary_file.read_text())
    summary["workdir"] = str(workdir)
    summary["pipeline"] = pipeline
    summary["outputs"] = str(summary_file.parent.parent)
    if summary.get("funnel_png") and Path(summary["funnel_png"]).exists():
        shutil.copyfile(summary["funnel_png"], workdir / "data_funnel.png")
        summary["funnel_png"] = str(workdir / "data_funnel.png")
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def format_table(summary: dict) -> str:
    rows = [("step", "in", "kept", "dropped", "quarantined", "tokens", "seconds")]
    for name, row in summary["steps"].items():
        rows.append((name, *(str(row.get(k, "")) if row.get(k) is not None else ""
                             for k in ("in", "kept", "dropped", "quarantined", "tokens", "seconds"))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    out = ["\n".join(lines)]
    if summary.get("train"):
        out.append(f"train: final_loss={summary['train'].get('final_loss')} tokens={summary['train'].get('tokens')}")
    if summary.get("eval"):
        out.append("eval: " + "  ".join(f"{k}={_fmt(v)}" for k, v in sorted(summary["eval"].items())))
    return "\n".join(out)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
