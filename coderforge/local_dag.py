"""The embedded default: run a recipe DAG on this machine with ``kfp.local``.

The same compiled DAG a cluster would run executes here in subprocesses
(``kfp.local.SubprocessRunner``); one local Ray serves the run's Ray steps (``coderforge.shared_ray``);
MLflow writes to a SQLite store under the work directory (unless ``MLFLOW_TRACKING_URI`` says otherwise); artifacts
go to ``WORKDIR/pipeline_root``. With ``runner="docker"`` each step runs in its container image instead
(kfp.local's ``DockerRunner``; paths, permissions, shared memory and the sandbox's privileges per step:
:mod:`coderforge.images.runner`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path

from coderforge import tracking
from coderforge.config import RecipeConfig, encode_recipe_b64
from coderforge.liveview import run_with_live_view
from coderforge.shared_ray import shared_ray
from coderforge.steps.table import get_step, steps_of
from coderforge.workspace import setup_logging, tracking_uri_of, workdir_of

log = logging.getLogger("coderforge.local_dag")
RUNNERS = ("subprocess", "docker")  # kfp.local's SubprocessRunner, or DockerRunner (coderforge.images.runner)


def run_local(cfg: RecipeConfig, pipeline: str = "recipe", verbose: bool = False, runner: str = "subprocess") -> dict:
    """Run ``pipeline`` for ``cfg`` locally; returns the summary (also written to WORKDIR/summary.json).

    The terminal shows a live view of the DAG and each step's full log goes to WORKDIR/logs/STEP.log;
    ``verbose`` streams everything instead. ``runner``: each step in a subprocess, or in its container
    image (``docker``)."""
    if runner not in RUNNERS:
        raise ValueError(f"unknown runner {runner!r}; choose one of {RUNNERS}")
    workdir = workdir_of(cfg)
    workdir.mkdir(parents=True, exist_ok=True)
    return run_with_live_view(lambda: _run(cfg, pipeline, runner), steps_of(pipeline, cfg), workdir,
                              verbose=verbose)


@contextlib.contextmanager
def _kfp_runner(runner: str, cfg: RecipeConfig, pipeline: str, workdir: Path):
    """(a factory of kfp.local's runner, the recipe the steps get) for the duration of the run."""
    if runner == "docker":
        from coderforge.images.runner import docker_session

        with docker_session(cfg, pipeline, workdir) as session:
            yield session["runner"], session["cfg"]
        return
    from kfp import local

    yield (lambda: local.SubprocessRunner(use_venv=False)), cfg


def _run(cfg: RecipeConfig, pipeline: str, runner: str = "subprocess") -> dict:
    setup_logging()
    workdir = workdir_of(cfg)
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = cfg.model_copy(deep=True)
    cfg.run.workdir = str(workdir)
    # the subprocess runner's Ray steps share one local Ray (containers start their own)
    steps = [get_step(n) for n in steps_of(pipeline, cfg)]
    ray_once = shared_ray(cfg, steps) if runner == "subprocess" else contextlib.nullcontext()
    with _kfp_runner(runner, cfg, pipeline, workdir) as (kfp_runner, step_cfg), ray_once:
        return _run_dag(cfg, step_cfg, pipeline, runner, kfp_runner)


def _run_dag(cfg: RecipeConfig, step_cfg: RecipeConfig, pipeline: str, runner: str, kfp_runner) -> dict:
    from kfp import local

    from pipelines.recipe import build_pipeline

    workdir = Path(cfg.run.workdir)
    uri = tracking_uri_of(step_cfg)
    run_id = tracking.start_parent_run(
        uri, cfg.tracking.experiment, f"{cfg.run.name}-{pipeline}", cfg.flat_params(),
        tags={"coderforge.pipeline": pipeline, "coderforge.recipe_fingerprint": cfg.fingerprint(),
              "coderforge.workdir": str(workdir), "coderforge.mode": "local", "coderforge.runner": runner},
    )
    (workdir / "recipe.yaml").write_text(cfg.to_yaml())
    local.init(runner=kfp_runner(), pipeline_root=str(workdir / "pipeline_root"), raise_on_error=True)
    try:
        task = build_pipeline(pipeline, step_cfg)(recipe=encode_recipe_b64(step_cfg.to_json()), mlflow_run_id=run_id)
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
