"""The pretraining step: ``run_pretrain`` trains a stage of the recipe with the shared training loop.

``run_pretrain`` builds the loop configuration from the recipe (``loop_config.loop_config``: the
``model``, ``train``, ``repo`` sections) and runs pretraining's task (``task.PackedLM``: packed
token shards, document-masked next-token loss) under Ray Train (``launch.fit``) on
``train.num_workers`` workers with ``FailureConfig(train.max_failures)`` and
``CheckpointConfig(train.checkpoints_to_keep)``. The run's name is derived from the recipe, the
stage and the data, so re-running the same step resumes from its last checkpoint in
``train.storage`` (default ``WORKDIR/ray_results``; local or ``s3://``).

After ``fit`` the driver logs the metric history (loss, lr, grad norm, tokens/s, MFU, memory) to the
step's MLflow run with the step number, plots the learning-rate schedule (``lr_schedule.png``) into
it, and copies the final Hugging Face checkpoint to ``out_dir/model`` with the tokenizer.

Stage ``repo`` (recipe.md §5): starts from the file-level model (``init_from``), switches the RoPE
base to 1M when the base has a smaller one (a pre-long-context model), trains on the repo-level
rows (``repo.seq_len``, 32K in the recipe) and saves the model as Qwen does: ``rope_scaling`` none,
``max_position_embeddings`` = the trained length. YaRN (factor 4 over that length) is switched on at
evaluation and serving time for long inputs (``eval.long_context``, ``vllm.long_context``).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from coderforge.config import RecipeConfig
from coderforge.steps import StepResult
from coderforge.train.launch import fit, log_history, log_schedule_plot, phase_metrics, run_name
from coderforge.train.loop_config import STAGES, base_rope_theta, loop_config
from coderforge.train.model import released_config
from coderforge.train.task import PackedLM

log = logging.getLogger("coderforge.train")


def finish_model(model_dir: Path, stage: str, theta: float, repo_seq_len: int, tokenizer_dir: str | None) -> None:
    if stage == "repo":  # saved as Qwen ships it: RoPE base 1M, no rope_scaling, the trained length
        conf = json.loads((model_dir / "config.json").read_text())
        conf = released_config({**conf, "rope_parameters": {"rope_type": "default", "rope_theta": theta}},
                               repo_seq_len)
        (model_dir / "config.json").write_text(json.dumps(conf, indent=2))
    if tokenizer_dir:
        for f in Path(tokenizer_dir).iterdir():
            if f.is_file() and not f.name.startswith(("ledger", "step.json")):
                shutil.copyfile(f, model_dir / f.name)


def run_pretrain(cfg: RecipeConfig, data_dir: str, out_dir: str, run, stage: str = "file",
                 init_from: str | None = None, tokenizer_dir: str | None = None,
                 anneal_dir: str | None = None) -> StepResult:
    """Train the ``stage`` ("file" or "repo") model on ``data_dir/train`` shards; save to ``out_dir/model``.
    ``anneal_dir``: the pack_anneal step's instruction rows, mixed in from the anneal phase on (file stage)."""
    from coderforge.tokens.shards import TokenShards
    from coderforge.workspace import workdir_of

    if stage not in STAGES:
        raise ValueError(f"unknown pretrain stage {stage!r} (file or repo)")
    train_dir = str(Path(data_dir) / "train")
    init_from = init_from or (cfg.model.init_from if stage == "file" else None)
    if stage == "repo" and not init_from:
        raise ValueError("the repo-level stage starts from the file-level model: init_from is required")
    loop = loop_config(cfg, train_dir, stage, init_from, anneal_dir if stage == "file" else None)
    seq_len = TokenShards(train_dir).seq_len
    theta = loop.model_config["rope_parameters"]["rope_theta"]
    name = run_name(cfg, stage, loop)
    storage = cfg.train.storage or str(workdir_of(cfg) / "ray_results")
    run.log_params({"pretrain.stage": stage, "pretrain.ray_run": name, "pretrain.storage": storage,
                    "pretrain.rope_theta": theta, "pretrain.seq_len": seq_len,
                    "pretrain.flops_formula": "6*N + 12*L*d*S", "pretrain.anneal_steps": loop.anneal_steps,
                    "pretrain.anneal_start_step": loop.steps - loop.anneal_steps,
                    "pretrain.anneal_mix": json.dumps(loop.anneal_mix)})
    t0 = time.time()
    result = fit(cfg, loop, PackedLM.from_config(loop), name, storage, cfg.train.num_workers, cfg.train.use_gpu,
                 cfg.train.max_failures, cfg.train.checkpoints_to_keep)
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
    log_schedule_plot(run, loop)
    final = state["metrics"]
    finish_model(model_dir, stage, theta, cfg.repo.seq_len, tokenizer_dir)
    steps = float(final["step"])
    tokens = float(final["tokens"])
    metrics = {"final_loss": float(final["loss"]), "tokens": tokens, "steps": steps,
               "tokens_per_s": tokens / max(seconds, 1e-9), "train_seconds": seconds,
               "train_tokens_per_s_last": float(final.get("tokens_per_s", 0.0)),
               "seq_len": float(seq_len), "mem_peak_gb": float(final.get("mem_peak_gb", 0.0))}
    if "mfu" in final:
        metrics["mfu"] = float(final["mfu"])
    metrics.update(phase_metrics(result.metrics))
    return StepResult(metrics=metrics, info={"model_path": str(model_dir), "stage": stage, "ray_run": name,
                                             "ray_storage": storage, "rope_theta": theta,
                                             "rope_theta_base": base_rope_theta(init_from),
                                             "checkpoint": result.checkpoint.path})
