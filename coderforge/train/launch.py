"""Running a training task under Ray Train, and logging its history to MLflow (any training stage).

``fit`` runs ``loop.train_loop`` on ``num_workers`` Ray Train workers (gloo on CPU, NCCL on GPU)
with ``FailureConfig(max_failures)`` and ``CheckpointConfig(keep)``; the loop configuration, the
task and the hooks travel to the workers in ``train_loop_config``. It starts a local Ray (or
attaches to ``RAY_ADDRESS`` / ``executor.address``; ``ray.init`` only when none is running, shut
down only when it started one). ``run_name`` names a run after what it trains, so re-running the
same step resumes from its last checkpoint in the same storage.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time

from coderforge.config import RecipeConfig
from coderforge.train.hooks import TrainHooks
from coderforge.train.loop_config import LoopConfig
from coderforge.train.task import TrainTask

HISTORY_KEYS = ("loss", "lr", "grad_norm", "tokens_per_s", "tokens_per_s_per_worker", "mfu", "mem_peak_gb",
                "tokens")


def ray_train_fn(config: dict) -> None:
    """``train_loop_per_worker`` for ``TorchTrainer``: ``config`` holds ``loop``, ``task`` and ``hooks``."""
    from coderforge.train.loop import train_loop

    train_loop(config["loop"], config["task"], hooks=config["hooks"])


def _start_ray(cfg: RecipeConfig) -> bool:
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from coderforge.shared_ray import local_ray_kwargs

    address = os.environ.get("RAY_ADDRESS") or cfg.executor.address
    local = local_ray_kwargs(cfg)  # the same Ray a run would share, started here for this step alone
    if address:  # a cluster, or the run's shared local Ray (coderforge.shared_ray)
        ray.init(address=address, log_to_driver=True, runtime_env=local["runtime_env"])
    else:
        ray.init(**{**local, "log_to_driver": True})
    return True


def run_name(cfg: RecipeConfig, stage: str, loop: LoopConfig) -> str:
    blob = json.dumps(loop.identity(), sort_keys=True, default=str)
    return f"{cfg.run.name}-{stage}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def ray_storage(storage: str):
    """(storage_path, storage_filesystem) for Ray Train. ``s3://bucket/prefix`` goes through a pyarrow
    S3 filesystem built from the same environment as :mod:`coderforge.storage` (endpoint from
    ``S3_ENDPOINT_URL`` & co., so MinIO works; credentials from ``AWS_ACCESS_KEY_ID`` /
    ``AWS_SECRET_ACCESS_KEY``): Ray's own default would ignore a custom endpoint. Local paths pass as they are."""
    from coderforge import storage as st

    if not st.is_s3(storage):
        return storage, None
    from urllib.parse import urlparse

    import pyarrow.fs

    st.ensure_bucket(storage)
    endpoint, access, secret, region = st.s3_settings()
    parsed = urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")
    fs = pyarrow.fs.S3FileSystem(access_key=access, secret_key=secret, endpoint_override=parsed.netloc,
                                 scheme=parsed.scheme or "http", region=region or "us-east-1")
    return storage[len("s3://"):].rstrip("/"), fs


def fit(cfg: RecipeConfig, loop: LoopConfig, task: TrainTask, name: str, storage: str, num_workers: int,
        use_gpu: bool, max_failures: int, keep: int, hooks: TrainHooks | None = None):
    """Run ``ray_train_fn`` under ``TorchTrainer``; returns the Ray ``Result``."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    path, filesystem = ray_storage(storage)
    called = time.time()
    started = _start_ray(cfg)
    ray_ready = time.time()
    try:
        trainer = TorchTrainer(
            ray_train_fn, train_loop_config={"loop": loop, "task": task, "hooks": hooks},
            scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
            run_config=RunConfig(name=name, storage_path=path, storage_filesystem=filesystem,
                                 failure_config=FailureConfig(max_failures=max_failures),
                                 checkpoint_config=CheckpointConfig(num_to_keep=keep)),
        )
        result = trainer.fit()
        if result.metrics is not None:
            result.metrics.update({"time.called": called, "time.ray_ready": ray_ready, "time.returned": time.time()})
        return result
    finally:
        if started:
            ray.shutdown()


PHASES = (  # (phase, start mark, end mark): where a training step's time goes, driver and rank 0 together
    ("ray_start", "called", "ray_ready"),          # ray.init (0 when attached to a running cluster)
    ("workers_start", "ray_ready", "loop_entered"),  # Ray Train controller, worker actors, imports, process group
    ("setup", "loop_entered", "model_ready"),      # device, model build or load, wrapping, resume
    ("first_step", "model_ready", "first_step"),   # the first optimizer step (warm-up, lazy init)
    ("steps", "first_step", "last_step"),          # the other steps (intermediate checkpoints taken out below)
    ("teardown", "last_step", "returned"),         # final checkpoint and export, worker group shutdown
)


def phase_metrics(metrics: dict | None) -> dict[str, float]:
    """``phase.<name>_s`` from the ``time.*`` marks of a fit's last report (:func:`fit` and
    ``loop.Clock``); checkpoint saves are their own phase (``phase.checkpoint_s``). Empty when the
    marks are missing (e.g. a re-run of a finished run, which reports without training)."""
    m = metrics or {}
    marks = {k[len("time."):]: float(v) for k, v in m.items() if k.startswith("time.")}
    names = {a for _, a, _ in PHASES} | {b for _, _, b in PHASES}
    if not names <= marks.keys():
        return {}
    out = {f"phase.{name}_s": round(marks[b] - marks[a], 3) for name, a, b in PHASES}
    out["phase.steps_s"] = round(out["phase.steps_s"] - (marks["checkpoint_s"] - marks["final_checkpoint_s"]), 3)
    out["phase.teardown_s"] = round(out["phase.teardown_s"] - marks["final_checkpoint_s"], 3)
    out["phase.checkpoint_s"] = round(marks["checkpoint_s"], 3)
    out["phase.total_s"] = round(marks["returned"] - marks["called"], 3)
    out["phase.overhead_s"] = round(out["phase.total_s"] - out["phase.steps_s"], 3)
    return out


def log_history(run, rows: list[dict]) -> None:
    for row in rows:
        if "step" not in row:
            continue
        run.log_metrics({k: float(row[k]) for k in HISTORY_KEYS if k in row and row[k] == row[k]},
                        step=int(row["step"]))


def log_schedule_plot(run, loop: LoopConfig) -> None:
    from coderforge.train.schedules import plot_schedules, schedule_kwargs

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "lr_schedule.png")
        plot_schedules(path, loop.steps, loop.lr, loop.warmup_steps, loop.min_lr_ratio, loop.schedule,
                       **schedule_kwargs(vars(loop)))
        run.log_artifact(path)
