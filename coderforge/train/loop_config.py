"""The training loop's configuration: a typed record built from the recipe by one function.

``LoopConfig`` has no defaults of its own: every training value comes from the recipe's ``train``
section (the fields of the same names), ``model`` (the model shape), ``run.seed`` and, for the
repo-level stage, ``repo`` (steps, learning rate, micro-batch size, RoPE base). ``loop_config`` is
the one place that maps a recipe onto it; callers that train outside the recipe DAG (tests,
benchmarks) start from a ``RecipeConfig`` too and change fields with ``dataclasses.replace``.

This module imports neither pydantic nor Ray (the recipe only arrives as an object), so the loop
can run where neither is installed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from coderforge.config import RecipeConfig

STAGES = ("file", "repo", "sft", "dpo")


@dataclass(frozen=True)
class LoopConfig:
    """What one training run does. Fields after ``seed`` up to ``loss_chunk_tokens`` mean what the
    recipe's ``train`` fields of the same names mean."""

    data_dir: str  # packed token shards (``coderforge pack`` output)
    model_config: dict  # a Qwen2Config dict (ignored for the shape when ``init_from`` is set)
    init_from: str | None  # continue from this Hugging Face checkpoint
    config_overrides: dict  # set on the model's config after loading (the repo stage's RoPE base)
    seed: int
    steps: int
    micro_batch_size: int
    grad_accum: int
    lr: float
    min_lr_ratio: float
    warmup_steps: int
    weight_decay: float
    grad_clip: float
    schedule: str
    anneal_steps: int  # the last optimizer steps of a wsd/wcl schedule (``schedules.anneal_steps``); 0: none
    anneal_shape: str  # train.anneal.shape
    anneal_mix: dict  # rows of the anneal phase by source (pretrain, code, nl); {}: no data switch
    anneal_dir: str | None  # the pack_anneal step's instruction rows (needed when anneal_mix has code or nl)
    wcl_cosine_end: float
    log_every: int
    checkpoint_every: int  # 0: only the final checkpoint
    strategy: str
    dtype: str
    attention: str
    activation_checkpointing: bool
    compile: bool
    loss_chunk_tokens: int
    peak_flops: float | None  # per-device FLOP/s for MFU; None: known GPUs only
    checkpoint_dir: str | None  # standalone runs: where checkpoints go (under Ray Train: Ray's storage)
    save_final: bool  # export the final weights as a Hugging Face checkpoint (``hf/``)

    def identity(self) -> dict:
        """The fields that decide what is trained (not where checkpoints go): a run's name hashes these."""
        return {k: v for k, v in self.__dict__.items() if k not in PLACEMENT_FIELDS}


PLACEMENT_FIELDS = ("checkpoint_dir", "save_final")
DERIVED_FIELDS = ("data_dir", "model_config", "init_from", "config_overrides", "seed", "peak_flops",
                  "anneal_steps", "anneal_shape", "anneal_mix", "anneal_dir", *PLACEMENT_FIELDS)
TRAIN_FIELDS = tuple(f.name for f in fields(LoopConfig) if f.name not in DERIVED_FIELDS)


def base_rope_theta(init_from: str | None) -> float | None:
    """The RoPE base of the checkpoint a stage starts from (None without one)."""
    if not init_from:
        return None
    conf = json.loads((Path(init_from) / "config.json").read_text())
    return (conf.get("rope_parameters") or {}).get("rope_theta") or conf.get("rope_theta")


def loop_config(cfg: RecipeConfig, data_dir: str, stage: str, init_from: str | None,
                anneal_dir: str | None = None) -> LoopConfig:
    """The loop configuration of training stage ``stage`` (file, repo, sft, dpo) on the rows in ``data_dir``.

    ``train.*`` fields are copied by name; the repo stage takes ``repo.steps`` / ``repo.lr`` /
    ``repo.micro_batch_size`` where set, and a RoPE base of at least 1M (recipe.md §5); the sft and dpo
    stages take what ``sft.train`` / ``dpo.train`` set. The anneal phase (``train.anneal``) is the last
    ``anneal_steps`` of the stage's own steps; only the file stage switches data there (``anneal_mix``,
    rows from ``anneal_dir``). Checkpoints go
    to Ray Train (``checkpoint_dir`` None) and the final model is exported (``save_final``)."""
    from coderforge.tokens.shards import TokenShards
    from coderforge.train.model import LONG_CONTEXT_ROPE_THETA, qwen2_config_dict

    if stage not in STAGES:
        raise ValueError(f"unknown training stage {stage!r} ({', '.join(STAGES)})")
    shards = TokenShards(data_dir)
    if len(shards) == 0:
        raise ValueError(f"{data_dir}: no packed rows to train on")
    seq = shards.seq_len
    tc = cfg.train
    theta, overrides = cfg.model.rope_theta, {}
    if stage == "repo":
        tc = tc.model_copy(update={k: v for k, v in (("steps", cfg.repo.steps), ("lr", cfg.repo.lr),
                                                       ("micro_batch_size", cfg.repo.micro_batch_size)) if v})
        theta = max(base_rope_theta(init_from) or 0.0, LONG_CONTEXT_ROPE_THETA)
        overrides = {"rope_parameters": {"rope_type": "default", "rope_theta": theta},
                     "max_position_embeddings": max(seq, cfg.repo.seq_len)}
    elif stage in ("sft", "dpo"):  # post-training: the stage's own values where it sets them
        stage_train = getattr(cfg, stage).train
        tc = tc.model_copy(update={k: v for k, v in stage_train.model_dump().items() if v is not None})
        theta = base_rope_theta(init_from) or theta
    model_cfg = qwen2_config_dict(cfg.model.size, int(shards.meta["vocab_size"]),
                                  max(seq, cfg.model.max_position_embeddings), theta, explicit=cfg.model.model_dump())
    from coderforge.train.schedules import anneal_steps

    mix = cfg.train.anneal.source_weights() if stage == "file" else {}
    n_anneal = anneal_steps(tc.steps, tc.schedule, cfg.train.anneal.fraction, tc.warmup_steps)
    if set(mix) - {"pretrain"} and not (anneal_dir and n_anneal):
        raise ValueError("train.anneal.mix mixes instruction rows into the anneal phase: the file stage needs "
                         "the pack_anneal step's output (anneal_dir) and steps after its warmup")
    return LoopConfig(
        data_dir=data_dir, model_config=model_cfg, init_from=init_from, config_overrides=overrides,
        anneal_steps=n_anneal,
        anneal_shape=cfg.train.anneal.shape, anneal_mix=mix, anneal_dir=anneal_dir if mix else None,
        seed=cfg.run.seed, peak_flops=tc.peak_tflops * 1e12 if tc.peak_tflops else None,
        checkpoint_dir=None, save_final=True, **{name: getattr(tc, name) for name in TRAIN_FIELDS})
