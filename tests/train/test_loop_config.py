"""The loop configuration comes from the recipe alone: ``train.*`` by name, the model shape, the seed,
the repo stage's overrides; placement (checkpoint directory, HF export) does not change a run's name."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import pytest

from coderforge.config import load_recipe
from coderforge.train.launch import run_name
from coderforge.train.loop_config import TRAIN_FIELDS, LoopConfig, loop_config

from .conftest import tiny_model_config, tiny_recipe, write_shards

ROOT = Path(__file__).resolve().parents[2]


def test_train_fields_are_the_recipe_values(tmp_path):
    data = write_shards(tmp_path / "train", rows=4)
    cfg = load_recipe(ROOT / "configs" / "tiny.yaml", ["train.peak_tflops=100", "run.seed=11"])
    loop = loop_config(cfg, data, "file", None)
    assert set(TRAIN_FIELDS) <= set(type(cfg.train).model_fields)
    for name in TRAIN_FIELDS:
        assert getattr(loop, name) == getattr(cfg.train, name), name
    assert (loop.steps, loop.lr, loop.checkpoint_every) == (60, 0.003, 30)  # tiny.yaml, not another default
    assert loop.seed == 11 and loop.peak_flops == 100e12 and loop.init_from is None
    assert loop.model_config["hidden_size"] == cfg.model.hidden_size == 128 and loop.model_config["vocab_size"] == 96
    assert loop.checkpoint_dir is None and loop.save_final is True


def test_loop_config_has_no_defaults():
    assert all(f.default is f.default_factory for f in fields(LoopConfig))  # both MISSING
    with pytest.raises(TypeError):
        LoopConfig(data_dir="x")  # type: ignore[call-arg]


def test_repo_stage_takes_repo_values_and_a_long_context_rope_base(tmp_path):
    data = write_shards(tmp_path / "train", rows=4)
    cfg = tiny_recipe(0, steps=50, lr=1e-3, micro_batch_size=4).model_copy(
        update={"repo": tiny_recipe(0).repo.model_copy(update={"steps": 7, "lr": 5e-4, "seq_len": 128})})
    file_loop = loop_config(cfg, data, "file", None)
    repo_loop = loop_config(cfg, data, "repo", None)
    assert (file_loop.steps, file_loop.lr, file_loop.micro_batch_size) == (50, 1e-3, 4)
    assert (repo_loop.steps, repo_loop.lr, repo_loop.micro_batch_size) == (7, 5e-4, 4)
    assert repo_loop.config_overrides == {"rope_parameters": {"rope_type": "default", "rope_theta": 1e6},
                                          "max_position_embeddings": 128}
    assert file_loop.model_config == tiny_model_config()
    with pytest.raises(ValueError, match="unknown training stage"):
        loop_config(cfg, data, "rlhf", None)
    sft_cfg = cfg.model_copy(update={"sft": cfg.sft.model_copy(update={"train": cfg.sft.train.model_copy(
        update={"steps": 7, "lr": 2e-5})})})
    sft_loop = loop_config(sft_cfg, data, "sft", None)
    assert (sft_loop.steps, sft_loop.lr) == (7, 2e-5) and sft_loop.config_overrides == {}
    assert sft_loop.micro_batch_size == cfg.train.micro_batch_size  # unset: the recipe's train value


def test_run_name_ignores_where_checkpoints_go(tmp_path):
    data = write_shards(tmp_path / "train", rows=4)
    cfg = tiny_recipe(0)
    loop = loop_config(cfg, data, "file", None)
    moved = replace(loop, checkpoint_dir=str(tmp_path / "ck"), save_final=False)
    assert run_name(cfg, "file", moved) == run_name(cfg, "file", loop)
    assert run_name(cfg, "file", replace(loop, lr=loop.lr * 2)) != run_name(cfg, "file", loop)
