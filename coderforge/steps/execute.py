"""Run one step the same way everywhere: parse the recipe, open the step's MLflow child run, call
the step's function from the table, log its ledger counts / metrics / artifacts and write
``step.json``.

``run_component`` is all a KFP component does (``components/``); ``execute_step_with_uris`` is
``coderforge step`` (what a KubeRay RayJob runs); tests call ``execute_step``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from coderforge import progress, storage, tracking
from coderforge.config import RecipeConfig, load_recipe_text
from coderforge.steps import StepResult, ledger_of_report, read_step_report, write_step_report
from coderforge.steps.table import Step, get_step, input_payload, recipe_value, step_key, step_params
from coderforge.workspace import setup_logging, tracking_uri_of

log = logging.getLogger("coderforge")
IMAGE_TAGS = {"CODERFORGE_IMAGE": "coderforge.image", "CODERFORGE_PIPELINE_IMAGE": "coderforge.pipeline_image"}


def _log_result(run: tracking.StepRun, result: StepResult, out_dir: str) -> dict[str, float]:
    metrics = dict(result.metrics)
    if result.ledger is not None:
        metrics.update(result.ledger.metrics())
    run.log_metrics(metrics)
    for path in result.artifacts:
        run.log_artifact(path)
    return metrics


def _log_reports(run: tracking.StepRun, out_dir: str) -> None:
    if storage.is_s3(out_dir):
        return
    local = Path(storage.local_path(out_dir))
    run.log_artifact(local / "step.json")
    if (local / "ledger.json").exists():
        run.log_artifact(local / "ledger.json")


STAGE_OF_STEP = {"sft": "sft", "dpo": "dpo"}  # every other model step makes a base model


def _register(cfg: RecipeConfig, run: tracking.StepRun, name: str, model_dir: str, result: StepResult) -> None:
    """The step's model as a new version of ``<run.name>-<step>`` in MLflow's model registry."""
    from coderforge.registry import model_tags, register_model

    reg = register_model(tracking_uri_of(cfg), run.run_id, model_dir, f"{cfg.run.name}-{name}",
                         model_tags(cfg, STAGE_OF_STEP.get(name, "base"), step=name))
    result.info["registered_model"] = f"{reg.name}/{reg.version}"


def _progress_fields(result: StepResult) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if result.ledger is not None:
        fields.update(docs_in=result.ledger.inputs, docs_kept=result.ledger.kept)
    for key in ("tokens", "final_loss"):
        if key in result.metrics:
            fields["loss" if key == "final_loss" else key] = result.metrics[key]
    return fields


def execute_step(name: str, recipe_yaml: str, parent_run_id: str, out_dir: str, **inputs: Any) -> StepResult:
    """Run step ``name`` (``fn(cfg, **inputs, out_dir=out_dir, run=child_run)``) in an MLflow child run."""
    setup_logging()
    step = get_step(name)
    cfg = load_recipe_text(recipe_yaml, origin=f"recipe passed to step {name}")
    if not storage.is_s3(out_dir):
        Path(storage.local_path(out_dir)).mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with progress.step_log(name, os.environ.get(progress.LOG_DIR_ENV)):
        log.info("step %s: starting (out=%s)", name, out_dir)
        with tracking.StepRun(tracking_uri_of(cfg), parent_run_id or None, name, step_params(cfg, name),
                              experiment=cfg.tracking.experiment) as run:
            run.set_tag("coderforge.step_key", step_key(cfg, name))
            for env, tag in IMAGE_TAGS.items():  # the container image the step runs in (docker runner, cluster)
                if os.environ.get(env):
                    run.set_tag(tag, os.environ[env])
            result = step.load()(cfg, **inputs, out_dir=out_dir, run=run)
            metrics = _log_result(run, result, out_dir)
            if step.output_kind == "Model" and step.payload:
                _register(cfg, run, name, storage.join(out_dir, step.payload), result)
            result.info.setdefault("mlflow_run_id", run.run_id)
            result.info.setdefault("seconds", round(time.time() - t0, 2))
            write_step_report(out_dir, name, result)
            _log_reports(run, out_dir)
        progress.report(**_progress_fields(result))
        log.info("step %s: done in %.1fs %s", name, time.time() - t0,
                 result.ledger.as_dict() if result.ledger else metrics)
    return result


# --- what a KFP component runs ------------------------------------------------------------------

def to_s3_uri(uri: str) -> str:
    """KFP artifact URIs as S3 URIs (KFP's MinIO store writes ``minio://bucket/key``)."""
    for scheme in ("minio://", "s3://"):
        if uri.startswith(scheme):
            return "s3://" + uri[len(scheme):]
    raise ValueError(f"artifact URI {uri!r} is not in object storage; a RayJob cannot read it")


def _on_rayjob(step: Step, cfg: RecipeConfig) -> bool:
    rj = cfg.k8s.rayjob
    return step.resources == "ray" and rj.enabled and step.name in rj.steps


def _run_on_rayjob(step: Step, recipe_yaml: str, cfg: RecipeConfig, parent_run_id: str, out_path: str,
                   out_uri: str, input_uris: dict[str, str]) -> StepResult:
    """The step on an ephemeral KubeRay cluster, reading inputs from and writing its output to object
    storage; the output is then copied to ``out_path``, which the KFP launcher uploads."""
    from coderforge.k8s.rayjob import run_step_on_rayjob

    remote_out = to_s3_uri(out_uri)
    args = ["step", step.name, "--recipe", "{recipe}", "--parent-run-id", parent_run_id, "--out", remote_out]
    for arg, uri in input_uris.items():
        args += ["--in", f"{arg}={to_s3_uri(uri)}"]
    log.info("step %s: running on a KubeRay RayJob, output %s", step.name, remote_out)
    run_step_on_rayjob(step.name, recipe_yaml, cfg.k8s, module="coderforge.cli", args=args, emit=log.info)
    storage.download_dir(remote_out, out_path)
    report = read_step_report(out_path)
    return StepResult(ledger=ledger_of_report(report), metrics=report.get("metrics", {}),
                      info=report.get("info", {}))


def _join(path: str, sub: str) -> str:
    return path.rstrip("/") + "/" + sub if sub else path


def run_component(name: str, recipe_yaml: str, parent_run_id: str, output: Any, inputs: dict[str, Any],
                  markdown: Any = None) -> str:
    """The body of every step's KFP component: ``output``/``inputs`` are KFP artifacts (``.path``,
    ``.uri``). An input produced by a step with a ``payload`` (a model's HF directory) is passed as
    that subdirectory. Returns the step report as JSON."""
    setup_logging()
    step = get_step(name)
    cfg = load_recipe_text(recipe_yaml, origin=f"recipe passed to step {name}")
    paths, uris = {}, {}
    for inp in step.inputs:
        artifact, payload = inputs.get(inp.arg), input_payload(inp)
        if artifact is None and inp.fallback:  # no step of this pipeline made it: the recipe names it
            paths[inp.arg] = uris[inp.arg] = str(recipe_value(cfg, inp.fallback))
        elif artifact is None:  # optional and unfed: the function gets its default
            continue
        else:
            paths[inp.arg], uris[inp.arg] = _join(artifact.path, payload), _join(artifact.uri, payload)
    if _on_rayjob(step, cfg):
        result = _run_on_rayjob(step, recipe_yaml, cfg, parent_run_id, output.path, output.uri, uris)
    elif any(storage.is_s3(p) for p in paths.values()):
        result = execute_step_with_uris(name, recipe_yaml, parent_run_id, output.path, paths)
    else:
        result = execute_step(name, recipe_yaml, parent_run_id, output.path, **paths)
    if step.payload:
        result.info["model_path"] = os.path.join(output.path, step.payload)
    if markdown is not None:
        report = Path(output.path) / step.markdown_report
        if report.exists():
            shutil.copyfile(report, markdown.path)
        else:
            Path(markdown.path).write_text(f"# {name}\n\n(the step wrote no {step.markdown_report})\n")
    return result.to_json()


# --- `coderforge step`: one step outside a pipeline ---------------------------------------------

def execute_step_with_uris(name: str, recipe_yaml: str, parent_run_id: str, out_uri: str,
                           inputs: dict[str, str]) -> StepResult:
    """Run a step whose inputs/outputs may be ``s3://`` prefixes (inputs are copied to a scratch
    directory first, the output directory is uploaded at the end)."""
    with tempfile.TemporaryDirectory(prefix=f"coderforge-{name}-") as scratch:
        local_inputs = {}
        for arg, uri in inputs.items():
            if storage.is_s3(uri):
                local_inputs[arg] = str(storage.download_dir(uri, Path(scratch) / "in" / arg))
            else:
                local_inputs[arg] = str(storage.local_path(uri))
        out_local = str(Path(scratch) / "out") if storage.is_s3(out_uri) else str(storage.local_path(out_uri))
        result = execute_step(name, recipe_yaml, parent_run_id, out_local, **local_inputs)
        if storage.is_s3(out_uri):
            storage.upload_dir(out_local, out_uri)
    return result
