"""The pretraining step: a ``Qwen2ForCausalLM`` trained on packed token shards by Ray Train.

``run_pretrain`` builds (or loads) the model, starts a local Ray (or attaches to ``RAY_ADDRESS`` /
``executor.address``), and runs ``train_loop_per_worker`` under ``TorchTrainer`` with
``train.num_workers`` workers (gloo on CPU, NCCL on GPU). Rows attend only within their documents
(a block-diagonal causal mask built from the shard's document lengths) and positions restart per
document. Every ``train.checkpoint_every`` steps the model, optimizer, step and data position are
reported to Ray as a checkpoint; a restarted run (same ``RunConfig`` name and storage) resumes from
the last one. The final model is reported as a Hugging Face checkpoint and copied to
``out_dir/model`` together with the tokenizer, so ``AutoModelForCausalLM`` and ``AutoTokenizer``
load it.

Stage ``repo`` (recipe.md §5): starts from the file-level model, switches the RoPE base to 1M when
the base model has a smaller one (a pre-long-context model), trains on ``repo.seq_len`` rows, and
writes the YaRN settings (factor 4, original length = the repo stage's length) into the saved config.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

from coderforge.config import ModelSection, RecipeConfig
from coderforge.steps import StepResult

log = logging.getLogger("coderforge.train")

QWEN25_CODER_SHAPES = {
    # size: (layers, hidden, heads, kv_heads, intermediate, tied) — recipe.md §1 (config values)
    "0.5B": (24, 896, 14, 2, 4864, True),
    "1.5B": (28, 1536, 12, 2, 8960, True),
    "3B": (36, 2048, 16, 2, 11008, True),
    "7B": (28, 3584, 28, 4, 18944, False),
    "14B": (48, 5120, 40, 8, 13824, False),
    "32B": (64, 5120, 40, 8, 27648, False),
}
LONG_CONTEXT_ROPE_THETA = 1_000_000.0
YARN_FACTOR = 4.0


def model_config(section: ModelSection, vocab_size: int, max_positions: int):
    """A ``Qwen2Config`` for a named Qwen2.5-Coder size or the section's explicit (debug) shape."""
    from transformers import Qwen2Config

    if section.size in QWEN25_CODER_SHAPES:
        layers, hidden, heads, kv, inter, tied = QWEN25_CODER_SHAPES[section.size]
    else:
        layers, hidden, heads, kv, inter, tied = (section.num_hidden_layers, section.hidden_size,
                                                  section.num_attention_heads, section.num_key_value_heads,
                                                  section.intermediate_size, section.tie_word_embeddings)
    if hidden % heads or heads % kv:
        raise ValueError(f"model shape: hidden {hidden} / heads {heads} / kv heads {kv} do not divide")
    return Qwen2Config(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv, intermediate_size=inter, tie_word_embeddings=tied,
        max_position_embeddings=max(max_positions, section.max_position_embeddings),
        rope_theta=section.rope_theta, rms_norm_eps=1e-6, hidden_act="silu", attention_dropout=0.0,
        initializer_range=0.02, use_sliding_window=False, bos_token_id=None,
    )


def lr_at(step: int, total: int, peak: float, warmup: int, schedule: str, min_ratio: float) -> float:
    """Learning rate at ``step``: linear warmup, then cosine / WSD / WCL / constant (recipe.md §9.5, §10)."""
    if warmup and step < warmup:
        return peak * (step + 1) / warmup
    floor = peak * min_ratio
    span = max(1, total - warmup)
    t = min(1.0, (step - warmup) / span)
    if schedule == "constant":
        return peak
    if schedule == "cosine":
        return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * t))
    if schedule == "wsd":  # stable at peak, then decay over the last 10% of steps
        decay_start = 0.9
        if t < decay_start:
            return peak
        return peak * (min_ratio ** ((t - decay_start) / (1 - decay_start)))
    if schedule == "wcl":  # truncated cosine to 0.62*peak over 90%, then linear to the floor
        cos_part, rho, mid = 0.9, math.acos(2 * 0.62 - 1) / math.pi, 0.62 * peak
        if t < cos_part:
            return peak * 0.5 * (1 + math.cos(math.pi * rho * t / cos_part))
        return mid + (floor - mid) * (t - cos_part) / (1 - cos_part)
    raise ValueError(f"unknown schedule {schedule!r}")


def batch_from_rows(shards, indices):
    """input_ids, position_ids, labels and the block-diagonal causal mask for rows ``indices``."""
    import numpy as np
    import torch

    from coderforge.tokens.shards import labels_for, position_ids

    seq = shards.seq_len
    ids, pos, labels, masks = [], [], [], []
    causal = np.tril(np.ones((seq, seq), dtype=bool))
    for i in indices:
        row = shards.row(int(i))
        ids.append(row.tokens.astype(np.int64))
        pos.append(position_ids(row.doc_lens, seq))
        labels.append(labels_for(row, seq))
        seg = np.full(seq, -1, dtype=np.int64)
        start = 0
        for k, n in enumerate(row.doc_lens):
            seg[start:start + int(n)] = k
            start += int(n)
        same = (seg[:, None] == seg[None, :]) & (seg[:, None] >= 0)
        masks.append((same & causal) | np.eye(seq, dtype=bool))  # padding attends to itself only
    return {
        "input_ids": torch.from_numpy(np.stack(ids)),
        "position_ids": torch.from_numpy(np.stack(pos)),
        "labels": torch.from_numpy(np.stack(labels)),
        "attention_mask": torch.from_numpy(np.stack(masks))[:, None],
    }


def train_loop_per_worker(config: dict) -> None:
    """One Ray Train worker: data-parallel training over the token shards (also usable standalone)."""
    import numpy as np
    import ray.train
    import ray.train.torch as rtt
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from coderforge.tokens.shards import TokenShards

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, config.get("threads_per_worker", 1)))
    torch.manual_seed(config["seed"])
    shards = TokenShards(config["data_dir"])
    if config.get("init_from"):
        model = Qwen2ForCausalLM.from_pretrained(config["init_from"], attn_implementation="sdpa")
        for key, value in config.get("config_overrides", {}).items():
            setattr(model.config, key, value)
        if "rope_parameters" in config.get("config_overrides", {}):
            model.model.rotary_emb = type(model.model.rotary_emb)(config=model.config)
    else:
        model = Qwen2ForCausalLM(Qwen2Config.from_dict(config["model_config"]))
        model.config._attn_implementation = "sdpa"
    model = rtt.prepare_model(model)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}], lr=config["lr"], betas=(0.9, 0.95))
    start_step = 0
    ckpt = ray.train.get_checkpoint()
    if ckpt:
        with ckpt.as_directory() as d:
            state = torch.load(os.path.join(d, "state.pt"), weights_only=False)
            unwrapped = model.module if hasattr(model, "module") else model
            unwrapped.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng"])
            start_step = state["step"]
            if start_step >= config["steps"] and rank == 0:  # finished before: report the result again
                ray.train.report(state["metrics"], checkpoint=ray.train.Checkpoint.from_directory(d))
            elif start_step >= config["steps"]:
                ray.train.report(state["metrics"])
    n = len(shards)
    mb, accum, steps = config["micro_batch_size"], config["grad_accum"], config["steps"]
    per_step = mb * accum * world
    device = rtt.get_device()
    window, t0, tokens_seen = [], time.time(), 0
    for step in range(start_step, steps):
        lr = lr_at(step, steps, config["lr"], config["warmup_steps"], config["schedule"], config["min_lr_ratio"])
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for a in range(accum):
            base = step * per_step + (a * world + rank) * mb
            epoch = base // n
            order = np.random.default_rng([config["seed"], epoch]).permutation(n)
            idx = [order[(base + j) % n] for j in range(mb)]
            batch = {k: v.to(device) for k, v in batch_from_rows(shards, idx).items()}
            out = model(**batch)
            (out.loss / accum).backward()
            loss_sum += float(out.loss.detach()) / accum
            tokens_seen += int((batch["labels"] != -100).sum())
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), config["grad_clip"]))
        opt.step()
        window.append(loss_sum)
        last = step == steps - 1
        if (step + 1) % config["log_every"] == 0 or last:
            loss_t = torch.tensor([sum(window) / len(window), float(tokens_seen)])
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(loss_t)
                loss_t[0] /= world
            elapsed = max(1e-9, time.time() - t0)
            metrics = {"step": step + 1, "loss": float(loss_t[0]), "lr": lr, "grad_norm": grad_norm,
                       "tokens": float(loss_t[1]), "tokens_per_s": float(loss_t[1]) / elapsed}
            window = []
            checkpoint = None
            tmp = None
            save = (step + 1) % config["checkpoint_every"] == 0 or last
            if save and rank == 0:
                tmp = tempfile.mkdtemp(prefix="cf-ckpt-")
                unwrapped = model.module if hasattr(model, "module") else model
                torch.save({"model": unwrapped.state_dict(), "optimizer": opt.state_dict(),
                            "rng": torch.get_rng_state(), "step": step + 1, "metrics": metrics},
                           os.path.join(tmp, "state.pt"))
                if last:
                    unwrapped.save_pretrained(os.path.join(tmp, "hf"), safe_serialization=True)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)


def _start_ray(cfg: RecipeConfig) -> bool:
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = os.environ.get("RAY_ADDRESS") or cfg.executor.address
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(num_cpus=max(cfg.train.num_workers, cfg.executor.num_cpus or 0, 2),
                 log_to_driver=True)
    return True


def run_pretrain(cfg: RecipeConfig, data_dir: str, out_dir: str, run, stage: str = "file",
                 init_from: str | None = None, tokenizer_dir: str | None = None) -> StepResult:
    """Train the ``stage`` ("file" or "repo") model on ``data_dir/train`` shards; save to ``out_dir/model``."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from coderforge.runtime import workdir_of
    from coderforge.tokens.shards import TokenShards

    if stage not in ("file", "repo"):
        raise ValueError(f"unknown pretrain stage {stage!r} (file or repo)")
    train_dir = str(Path(data_dir) / "train")
    shards = TokenShards(train_dir)
    if len(shards) == 0:
        raise ValueError(f"{train_dir}: no packed rows to train on")
    init_from = init_from or (cfg.model.init_from if stage == "file" else None)
    if stage == "repo" and not init_from:
        raise ValueError("the repo-level stage starts from the file-level model: init_from is required")
    seq_len = shards.seq_len
    overrides: dict = {}
    base_theta = None
    if init_from:
        base = json.loads((Path(init_from) / "config.json").read_text())
        base_theta = (base.get("rope_parameters") or {}).get("rope_theta") or base.get("rope_theta")
    if stage == "repo":
        theta = max(base_theta or 0.0, LONG_CONTEXT_ROPE_THETA)
        overrides = {"rope_parameters": {"rope_type": "default", "rope_theta": theta},
                     "max_position_embeddings": max(seq_len, cfg.repo.seq_len)}
    mcfg = model_config(cfg.model, int(shards.meta["vocab_size"]), seq_len).to_dict()
    tc = cfg.train
    if stage == "repo":
        tc = tc.model_copy(update={k: v for k, v in (("steps", cfg.repo.steps), ("lr", cfg.repo.lr),
                                                       ("micro_batch_size", cfg.repo.micro_batch_size)) if v})
    loop_config = {
        "data_dir": train_dir, "model_config": mcfg, "init_from": init_from, "config_overrides": overrides,
        "seed": cfg.run.seed, "steps": tc.steps, "micro_batch_size": tc.micro_batch_size,
        "grad_accum": tc.grad_accum, "lr": tc.lr, "min_lr_ratio": tc.min_lr_ratio, "warmup_steps": tc.warmup_steps,
        "weight_decay": tc.weight_decay, "grad_clip": tc.grad_clip, "schedule": tc.schedule,
        "log_every": tc.log_every, "checkpoint_every": tc.checkpoint_every,
    }
    storage = workdir_of(cfg) / "ray_results"
    name = f"{cfg.run.name}-{stage}-{cfg.fingerprint()}"
    started = _start_ray(cfg)
    t0 = time.time()
    try:
        trainer = TorchTrainer(
            train_loop_per_worker, train_loop_config=loop_config,
            scaling_config=ScalingConfig(num_workers=tc.num_workers, use_gpu=tc.use_gpu),
            run_config=RunConfig(name=name, storage_path=str(storage), failure_config=FailureConfig(max_failures=2),
                                 checkpoint_config=CheckpointConfig(num_to_keep=2)),
        )
        result = trainer.fit()
    finally:
        if started:
            ray.shutdown()
    seconds = time.time() - t0
    history = result.metrics_dataframe
    rows = history.to_dict("records") if history is not None else []
    for row in rows:
        run.log_metrics({k: row[k] for k in ("loss", "lr", "grad_norm", "tokens_per_s") if k in row},
                        step=int(row["step"]))
    final = result.metrics
    model_dir = Path(out_dir) / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    with result.checkpoint.as_directory() as d:
        shutil.copytree(Path(d) / "hf", model_dir)
    if stage == "repo":
        conf = json.loads((model_dir / "config.json").read_text())
        theta = overrides["rope_parameters"]["rope_theta"]
        conf["rope_parameters"] = {"rope_type": "yarn", "rope_theta": theta, "factor": YARN_FACTOR,
                                   "original_max_position_embeddings": cfg.repo.seq_len}
        conf["max_position_embeddings"] = int(cfg.repo.seq_len * YARN_FACTOR)
        (model_dir / "config.json").write_text(json.dumps(conf, indent=2))
    if tokenizer_dir:
        for f in Path(tokenizer_dir).iterdir():
            if f.is_file() and not f.name.startswith(("ledger", "step.json")):
                shutil.copyfile(f, model_dir / f.name)
    metrics = {"final_loss": float(final["loss"]), "tokens": float(final["tokens"]), "steps": float(final["step"]),
               "tokens_per_s": float(final["tokens"]) / max(seconds, 1e-9), "train_seconds": seconds,
               "seq_len": float(seq_len)}
    return StepResult(metrics=metrics, info={"model_path": str(model_dir), "stage": stage, "ray_run": name,
                                             "rope_theta_base": base_theta})
