"""The pretraining step: ``run_pretrain`` drives ``loop.train_loop`` under Ray Train's ``TorchTrainer``.

``run_pretrain`` reads the shard meta, builds the loop config from the recipe (``model``, ``train``,
``repo`` sections), starts a local Ray (or attaches to ``RAY_ADDRESS`` / ``executor.address``;
``ray.init`` only when none is running, shut down only when it started one) and runs
``train.num_workers`` workers (gloo on CPU, NCCL on GPU) with ``FailureConfig(train.max_failures)``
and ``CheckpointConfig(train.checkpoints_to_keep)``. The run's name is derived from the recipe, the
stage and the data, so re-running the same step resumes from its last checkpoint in
``train.storage`` (default ``WORKDIR/ray_results``; local or ``s3://``).

After ``fit`` the driver logs the metric history (loss, lr, grad norm, tokens/s, MFU, memory) to the
step's MLflow run with the step number, plots the learning-rate schedule (``lr_schedule.png``) into
it, and copies the final Hugging Face checkpoint to ``out_dir/model`` with the tokenizer.

Stage ``repo`` (recipe.md §5): starts from the file-level model (``init_from``), switches the RoPE
base to 1M when the base has a smaller one (a pre-long-context model), trains on the repo-level
rows (``repo.seq_len``, 32K in the recipe) and writes YaRN (factor 4, original length = the repo
stage's length) into the saved config, which transformers accepts (``rope_parameters``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from coderforge.config import RecipeConfig
from coderforge.steps import StepResult
from coderforge.train.model import LONG_CONTEXT_ROPE_THETA, qwen2_config_dict, yarn_rope_parameters

log = logging.getLogger("coderforge.train")

HISTORY_KEYS = ("loss", "lr", "grad_norm", "tokens_per_s", "tokens_per_s_per_worker", "mfu", "mem_peak_gb",
                "tokens")


def ray_train_fn(config: dict) -> None:
    """``train_loop_per_worker`` for ``TorchTrainer``."""
    from coderforge.train.loop import train_loop

    train_loop(config)


def _base_theta(init_from: str | None) -> float | None:
    if not init_from:
        return None
    conf = json.loads((Path(init_from) / "config.json").read_text())
    return (conf.get("rope_parameters") or {}).get("rope_theta") or conf.get("rope_theta")


def loop_config(cfg: RecipeConfig, train_dir: str, stage: str, init_from: str | None) -> tuple[dict, dict]:
    """The loop's config dict and the stage facts (RoPE base before/after, sequence length)."""
    from coderforge.tokens.shards import TokenShards

    shards = TokenShards(train_dir)
    if len(shards) == 0:
        raise ValueError(f"{train_dir}: no packed rows to train on")
    seq = shards.seq_len
    tc = cfg.train
    if stage == "repo":
        tc = tc.model_copy(update={k: v for k, v in (("steps", cfg.repo.steps), ("lr", cfg.repo.lr),
                                                       ("micro_batch_size", cfg.repo.micro_batch_size)) if v})
    base_theta = _base_theta(init_from)
    overrides: dict = {}
    theta = cfg.model.rope_theta
    if stage == "repo":
        theta = max(base_theta or 0.0, LONG_CONTEXT_ROPE_THETA)
        overrides = {"rope_parameters": {"rope_type": "default", "rope_theta": theta},
                     "max_position_embeddings": max(seq, cfg.repo.seq_len)}
    explicit = cfg.model.model_dump()
    model_cfg = qwen2_config_dict(cfg.model.size, int(shards.meta["vocab_size"]),
                                  max(seq, cfg.model.max_position_embeddings), theta, explicit=explicit)
    peak = tc.peak_tflops * 1e12 if tc.peak_tflops else None
    config = {
        "data_dir": train_dir, "model_config": model_cfg, "init_from": init_from, "config_overrides": overrides,
        "seed": cfg.run.seed, "steps": tc.steps, "micro_batch_size": tc.micro_batch_size, "grad_accum": tc.grad_accum,
        "lr": tc.lr, "min_lr_ratio": tc.min_lr_ratio, "warmup_steps": tc.warmup_steps, "weight_decay": tc.weight_decay,
        "grad_clip": tc.grad_clip, "schedule": tc.schedule, "wsd_decay_fraction": tc.wsd_decay_fraction,
        "wcl_linear_fraction": tc.wcl_linear_fraction, "wcl_cosine_end": tc.wcl_cosine_end,
        "log_every": tc.log_every, "checkpoint_every": tc.checkpoint_every, "strategy": tc.strategy,
        "dtype": tc.dtype, "attention": tc.attention, "activation_checkpointing": tc.activation_checkpointing,
        "compile": tc.compile, "loss_chunk_tokens": tc.loss_chunk_tokens, "peak_flops": peak,
        "threads_per_worker": 1,
    }
    facts = {"seq_len": seq, "rope_theta": theta, "rope_theta_base": base_theta, "num_workers": tc.num_workers,
             "use_gpu": tc.use_gpu, "rows": len(shards)}
    return config, facts


def _start_ray(cfg: RecipeConfig) -> bool:
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = os.environ.get("RAY_ADDRESS") or cfg.executor.address
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(num_cpus=max(cfg.train.num_workers, cfg.executor.num_cpus or 0, 2), log_to_driver=True,
                 runtime_env={"env_vars": {"RAY_USAGE_STATS_ENABLED": "0", "DS_ACCELERATOR": "cpu"}}
                 if not cfg.train.use_gpu else None)
    return True


def run_name(cfg: RecipeConfig, stage: str, loop_cfg: dict) -> str:
    blob = json.dumps({k: v for k, v in loop_cfg.items() if k not in ("threads_per_worker",)}, sort_keys=True,
                      default=str)
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


def fit(cfg: RecipeConfig, config: dict, name: str, storage: str, num_workers: int, use_gpu: bool,
        max_failures: int, keep: int):
    """Run ``ray_train_fn`` under ``TorchTrainer``; returns the Ray ``Result``."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    path, filesystem = ray_storage(storage)
    started = _start_ray(cfg)
    try:
        trainer = TorchTrainer(
            ray_train_fn, train_loop_config=config,
            scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
            run_config=RunConfig(name=name, storage_path=path, storage_filesystem=filesystem,
                                 failure_config=FailureConfig(max_failures=max_failures),
                                 checkpoint_config=CheckpointConfig(num_to_keep=keep)),
        )
        return trainer.fit()
    finally:
        if started:
            ray.shutdown()


def log_history(run, rows: list[dict]) -> None:
    for row in rows:
        if "step" not in row:
            continue
        run.log_metrics({k: float(row[k]) for k in HISTORY_KEYS if k in row and row[k] == row[k]},
                        step=int(row["step"]))


def log_schedule_plot(run, config: dict) -> None:
    from coderforge.train.schedules import plot_schedules, schedule_kwargs

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "lr_schedule.png")
        plot_schedules(path, config["steps"], config["lr"], config["warmup_steps"], config["min_lr_ratio"],
                       config["schedule"], **schedule_kwargs(config))
        run.log_artifact(path)


def finish_model(model_dir: Path, stage: str, theta: float, repo_seq_len: int, tokenizer_dir: str | None) -> None:
    if stage == "repo":
        conf = json.loads((model_dir / "config.json").read_text())
        conf["rope_parameters"] = yarn_rope_parameters(theta, repo_seq_len)
        conf.pop("rope_theta", None)
        conf.pop("rope_scaling", None)
        conf["max_position_embeddings"] = int(repo_seq_len * yarn_rope_parameters(theta, repo_seq_len)["factor"])
        (model_dir / "config.json").write_text(json.dumps(conf, indent=2))
    if tokenizer_dir:
        for f in Path(tokenizer_dir).iterdir():
            if f.is_file() and not f.name.startswith(("ledger", "step.json")):
                shutil.copyfile(f, model_dir / f.name)


def run_pretrain(cfg: RecipeConfig, data_dir: str, out_dir: str, run, stage: str = "file",
                 init_from: str | None = None, tokenizer_dir: str | None = None) -> StepResult:
    """Train the ``stage`` ("file" or "repo") model on ``data_dir/train`` shards; save to ``out_dir/model``."""
    from coderforge.runtime import workdir_of

    if stage not in ("file", "repo"):
        raise ValueError(f"unknown pretrain stage {stage!r} (file or repo)")
    train_dir = str(Path(data_dir) / "train")
    init_from = init_from or (cfg.model.init_from if stage == "file" else None)
    if stage == "repo" and not init_from:
        raise ValueError("the repo-level stage starts from the file-level model: init_from is required")
    config, facts = loop_config(cfg, train_dir, stage, init_from)
    name = run_name(cfg, stage, config)
    storage = cfg.train.storage or str(workdir_of(cfg) / "ray_results")
    run.log_params({"pretrain.stage": stage, "pretrain.ray_run": name, "pretrain.storage": storage,
                    "pretrain.rope_theta": facts["rope_theta"], "pretrain.seq_len": facts["seq_len"],
                    "pretrain.flops_formula": "6*N + 12*L*d*S"})
    t0 = time.time()
    result = fit(cfg, config, name, storage, facts["num_workers"], facts["use_gpu"], cfg.train.max_failures,
                 cfg.train.checkpoints_to_keep)
    seconds = time.time() - t0
    if result.error:
        raise RuntimeError(f"pretraining ({stage}) failed: {result.error}") from result.error
    model_dir = Path(out_dir) / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    with result.checkpoint.as_directory() as d:
        shutil.copytree(Path(d) / "hf", model_dir)
        # every logged step since the start (resumed runs included) travels in the checkpoint
        state = json.loads((Path(d) / "trainer_state.json").read_text())
    log_history(run, state.get("history", []))
    log_schedule_plot(run, config)
    final = state["metrics"]
    finish_model(model_dir, stage, facts["rope_theta"], cfg.repo.seq_len, tokenizer_dir)
    steps = float(final["step"])
    tokens = float(final["tokens"])
    metrics = {"final_loss": float(final["loss"]), "tokens": tokens, "steps": steps,
               "tokens_per_s": tokens / max(seconds, 1e-9), "train_seconds": seconds,
               "train_tokens_per_s_last": float(final.get("tokens_per_s", 0.0)),
               "seq_len": float(facts["seq_len"]), "mem_peak_gb": float(final.get("mem_peak_gb", 0.0))}
    if "mfu" in final:
        metrics["mfu"] = float(final["mfu"])
    return StepResult(metrics=metrics, info={"model_path": str(model_dir), "stage": stage, "ray_run": name,
                                             "ray_storage": storage, "rope_theta": facts["rope_theta"],
                                             "rope_theta_base": facts["rope_theta_base"],
                                             "checkpoint": result.checkpoint.path})
