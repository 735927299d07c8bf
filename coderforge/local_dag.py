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
from coderforge.liveview import run_with_live_view
from coderforge.steps.table import steps_of
from coderforge.workspace import setup_logging, tracking_uri_of, workdir_of

log = logging.getLogger("coderforge.local_dag")


def run_local(cfg: RecipeConfig, pipeline: str = "recipe", verbose: bool = False) -> dict:
    """Run ``pipeline`` for ``cfg`` locally; returns the summary (also written to WORKDIR/summary.json).

    The terminal shows a live view of the DAG and each step's full log goes to WORKDIR/logs/STEP.log;
    ``verbose`` streams everything instead."""
    workdir = workdir_of(cfg)
    workdir.mkdir(parents=True, exist_ok=True)
    return run_with_live_view(lambda: _run(cfg, pipeline), steps_of(pipeline, cfg), workdir, verbose=verbose)


def _run(cfg: RecipeConfig, pipeline: str) -> dict:
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
