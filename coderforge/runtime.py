"""What every KFP component does around its step function: parse the recipe, open the step's MLflow
child run, call the step, log its ledger counts / metrics / artifacts, and write ``step.json``.

Components stay thin (one call into ``execute_step``), so a step behaves the same under
``kfp.local``, on a cluster, and when called directly from a test.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coderforge import storage, tracking
from coderforge.config import RecipeConfig, load_recipe_text
from coderforge.steps import StepResult, write_step_report

log = logging.getLogger("coderforge")


def setup_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def workdir_of(cfg: RecipeConfig) -> Path:
    return Path(cfg.run.workdir or Path.cwd() / "runs" / cfg.run.name).resolve()


def tracking_uri_of(cfg: RecipeConfig) -> str:
    return tracking.resolve_tracking_uri(cfg.tracking.uri, workdir_of(cfg))


def step_params(cfg: RecipeConfig, step: str) -> dict[str, str]:
    """The recipe sections a step reads, flattened, as the child run's params."""
    sections = {
        "ingest": ("data", "executor"),
        "filter": ("filter", "executor"),
        "dedup": ("dedup", "executor"),
        "decontam": ("decontam", "executor"),
        "quality": ("quality",),
        "mixture": ("mixture",),
        "tokenizer": ("tokenizer",),
        "pack": ("pack", "data", "fim"),
        "pack_repo": ("repo", "data"),
        "pretrain": ("model", "train", "pack"),
        "pretrain_repo": ("model", "train", "repo"),
        "evaluate": ("eval", "sandbox"),
    }.get(step, ())
    flat = cfg.flat_params()
    return {k: v for k, v in flat.items() if k.split(".", 1)[0] in sections}


def execute_step(step: str, recipe_yaml: str, parent_run_id: str, fn: Callable[..., StepResult],
                 out_dir: str, **inputs: Any) -> StepResult:
    """Run ``fn(cfg, **inputs, out_dir=out_dir, run=child_run)`` inside an MLflow child run."""
    setup_logging()
    cfg = load_recipe_text(recipe_yaml, origin=f"recipe passed to step {step}")
    if not storage.is_s3(out_dir):
        Path(storage.local_path(out_dir)).mkdir(parents=True, exist_ok=True)
    uri = tracking_uri_of(cfg)
    t0 = time.time()
    log.info("step %s: starting (out=%s)", step, out_dir)
    with tracking.StepRun(uri, parent_run_id or None, step, step_params(cfg, step),
                          experiment=cfg.tracking.experiment) as run:
        result = fn(cfg, **inputs, out_dir=out_dir, run=run)
        metrics = dict(result.metrics)
        if result.ledger is not None:
            metrics.update(result.ledger.metrics())
        run.log_metrics(metrics)
        for path in result.artifacts:
            run.log_artifact(path)
        result.info.setdefault("mlflow_run_id", run.run_id)
        result.info.setdefault("seconds", round(time.time() - t0, 2))
        write_step_report(out_dir, step, result)
        if not storage.is_s3(out_dir):
            run.log_artifact(Path(storage.local_path(out_dir)) / "step.json")
            ledger_json = Path(storage.local_path(out_dir)) / "ledger.json"
            if ledger_json.exists():
                run.log_artifact(ledger_json)
    log.info("step %s: done in %.1fs %s", step, time.time() - t0,
             result.ledger.as_dict() if result.ledger else metrics)
    return result


# --- pipeline-run level -------------------------------------------------------------------------

def start_pipeline_run(recipe_yaml: str, pipeline: str, existing_run_id: str = "") -> str:
    """The MLflow parent run of a pipeline run: adopt ``existing_run_id`` or create one with the
    whole recipe as params."""
    setup_logging()
    cfg = load_recipe_text(recipe_yaml, origin="recipe passed to start-run")
    uri = tracking_uri_of(cfg)
    if existing_run_id:
        return existing_run_id
    return tracking.start_parent_run(
        uri, cfg.tracking.experiment, f"{cfg.run.name}-{pipeline}", cfg.flat_params(),
        tags={"coderforge.pipeline": pipeline, "coderforge.recipe_fingerprint": cfg.fingerprint()},
    )


def build_summary(reports: dict[str, dict], tracking_uri: str, run_id: str) -> dict:
    """The run summary (``summary.json``): a per-step table, training and evaluation numbers."""
    steps = {}
    for name, rep in reports.items():
        ledger = rep.get("ledger")
        row = {"seconds": rep.get("info", {}).get("seconds")}
        if ledger:
            row.update({k: ledger[k] for k in ("in", "kept", "dropped", "quarantined")})
            row["reasons"] = ledger.get("reasons", {})
        for key in ("tokens", "rows", "padding_fraction", "vocab_size", "final_loss"):
            if key in rep.get("metrics", {}):
                row[key] = rep["metrics"][key]
        steps[name] = row
    stages = {name: reports[name].get("metrics", {}) for name in ("pretrain", "pretrain_repo") if name in reports}
    final = reports.get("pretrain_repo") or reports.get("pretrain", {})
    train = {}
    if stages:
        last = final.get("metrics", {})
        train = {
            "final_loss": last.get("final_loss"),
            "tokens": sum(m.get("tokens") or 0 for m in stages.values()),
            "steps": sum(m.get("steps") or 0 for m in stages.values()),
            "stages": {name: {k: m.get(k) for k in ("final_loss", "tokens", "steps", "tokens_per_s")}
                       for name, m in stages.items()},
        }
    evaluation = reports.get("evaluate", {}).get("metrics", {})
    return {
        "steps": steps,
        "train": train,
        "eval": evaluation,
        "mlflow": {"tracking_uri": tracking_uri, "run_id": run_id},
        "model_path": final.get("info", {}).get("model_path"),
    }


def summary_markdown(summary: dict) -> str:
    lines = ["# CoderForge run summary", "", "| step | in | kept | dropped | quarantined | tokens | seconds |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, row in summary["steps"].items():
        lines.append(f"| {name} | {row.get('in', '')} | {row.get('kept', '')} | {row.get('dropped', '')} | "
                     f"{row.get('quarantined', '')} | {row.get('tokens', '')} | {row.get('seconds', '')} |")
    if summary.get("train"):
        lines += ["", f"Training: final loss {summary['train'].get('final_loss')}, "
                      f"tokens {summary['train'].get('tokens')}"]
    if summary.get("eval"):
        lines += ["", "Evaluation: " + ", ".join(f"{k} = {v}" for k, v in sorted(summary["eval"].items()))]
    lines += ["", f"MLflow run `{summary['mlflow']['run_id']}` at `{summary['mlflow']['tracking_uri']}`", ""]
    return "\n".join(lines)


def finish_pipeline_run(recipe_yaml: str, parent_run_id: str, reports_json: dict[str, str],
                        summary_path: str, report_path: str) -> dict:
    """Write the summary, log it (and per-step counts) to the parent run, and close the run."""
    import json

    setup_logging()
    cfg = load_recipe_text(recipe_yaml, origin="recipe passed to finish-run")
    uri = tracking_uri_of(cfg)
    reports = {k: json.loads(v) for k, v in reports_json.items()}
    summary = build_summary(reports, uri, parent_run_id)
    Path(summary_path).parent.mkdir(parents=True, exist_ok=True)
    Path(summary_path).write_text(json.dumps(summary, indent=2, default=str))
    Path(report_path).write_text(summary_markdown(summary))
    parent = tracking.RunLogger(uri, parent_run_id)
    metrics = {}
    for step, row in summary["steps"].items():
        for key in ("in", "kept", "dropped", "quarantined", "tokens", "seconds"):
            if isinstance(row.get(key), (int, float)):
                metrics[f"{step}.{key}"] = row[key]
    for key, value in (summary.get("train") or {}).items():
        if isinstance(value, (int, float)):
            metrics[f"train.{key}"] = value
    for key, value in summary["eval"].items():
        if isinstance(value, (int, float)):
            metrics[f"eval.{key}"] = value
    parent.log_metrics(metrics)
    curation = [dict(reports[s]["ledger"], step=s) for s in ("ingest", "filter", "dedup", "decontam", "quality")
                if reports.get(s, {}).get("ledger")]
    if curation:
        from coderforge.data.funnel import write_funnel

        funnel = write_funnel(str(Path(summary_path).parent / "funnel"), curation, run=parent)
        summary["funnel_png"] = funnel["png"]
        Path(summary_path).write_text(json.dumps(summary, indent=2, default=str))
    parent.log_dict(summary, "summary.json")
    parent.client.log_text(parent_run_id, summary_markdown(summary), "summary.md")
    parent.client.set_terminated(parent_run_id, status="FINISHED")
    return summary


# --- heavy steps on a cluster ------------------------------------------------------------------

def to_s3_uri(uri: str) -> str:
    """KFP artifact URIs as S3 URIs (KFP's MinIO store writes ``minio://bucket/key``)."""
    for scheme in ("minio://", "s3://"):
        if uri.startswith(scheme):
            return "s3://" + uri[len(scheme):]
    raise ValueError(f"artifact URI {uri!r} is not in object storage; a RayJob cannot read it")


def execute_heavy_step(step: str, recipe_yaml: str, parent_run_id: str, out_path: str, out_uri: str,
                       inputs: dict[str, tuple[str, str]]) -> StepResult:
    """Run a heavy step (training, large curation) where the recipe says: on an ephemeral KubeRay
    cluster (``k8s.rayjob.enabled`` and the step listed in ``k8s.rayjob.steps``), reading inputs
    from and writing outputs to object storage; otherwise here, on local Ray.

    ``inputs`` maps each input argument name to ``(local_path, artifact_uri)``.
    """
    from coderforge.steps import read_step_report, step_function

    setup_logging()
    cfg = load_recipe_text(recipe_yaml, origin=f"recipe passed to step {step}")
    rj = cfg.k8s.rayjob
    if not (rj.enabled and step in rj.steps):
        return execute_step(step, recipe_yaml, parent_run_id, step_function(step), out_path,
                            **{k: local for k, (local, _uri) in inputs.items()})
    from coderforge.k8s.rayjob import run_step_on_rayjob

    remote_out = to_s3_uri(out_uri)
    args = ["step", step, "--recipe", "{recipe}", "--parent-run-id", parent_run_id, "--out", remote_out]
    for name, (_local, uri) in inputs.items():
        args += ["--in", f"{name}={to_s3_uri(uri)}"]
    log.info("step %s: running on a KubeRay RayJob, output %s", step, remote_out)
    run_step_on_rayjob(step, recipe_yaml, cfg.k8s, module="coderforge.cli", args=args, emit=log.info)
    storage.download_dir(remote_out, out_path)  # the KFP launcher uploads out_path as the artifact
    report = read_step_report(out_path)
    from coderforge.ledger import LedgerSummary

    ledger = report.get("ledger")
    return StepResult(
        ledger=LedgerSummary(step=step, inputs=ledger["in"], kept=ledger["kept"], dropped=ledger["dropped"],
                             quarantined=ledger["quarantined"], reasons=ledger["reasons"],
                             bytes_in=ledger["bytes_in"], bytes_kept=ledger["bytes_kept"],
                             fixed=ledger.get("fixed", 0)) if ledger else None,
        metrics=report.get("metrics", {}), info=report.get("info", {}),
    )


def execute_step_with_uris(step: str, recipe_yaml: str, parent_run_id: str, out_uri: str,
                           inputs: dict[str, str]) -> StepResult:
    """``coderforge step``: run a step whose inputs/outputs may be ``s3://`` prefixes (inputs are
    copied to a scratch directory first, the output directory is uploaded at the end)."""
    import tempfile

    from coderforge.steps import step_function

    with tempfile.TemporaryDirectory(prefix=f"coderforge-{step}-") as scratch:
        local_inputs = {}
        for name, uri in inputs.items():
            if storage.is_s3(uri):
                local_inputs[name] = str(storage.download_dir(uri, Path(scratch) / "in" / name))
            else:
                local_inputs[name] = str(storage.local_path(uri))
        out_local = str(Path(scratch) / "out") if storage.is_s3(out_uri) else str(storage.local_path(out_uri))
        result = execute_step(step, recipe_yaml, parent_run_id, step_function(step), out_local, **local_inputs)
        if storage.is_s3(out_uri):
            storage.upload_dir(out_local, out_uri)
    return result
