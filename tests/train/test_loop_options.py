"""Loop options on CPU: activation checkpointing is exact, bf16 trains, named shapes match recipe.md §1."""

from __future__ import annotations

import pytest

from coderforge.train.loop import train_loop
from coderforge.train.model import QWEN25_CODER_SHAPES, flops_per_token, param_count, qwen2_config_dict
from coderforge.train.task import PackedLM

from .conftest import tiny_loop, write_shards


def _cfg(data, **train):
    return tiny_loop(data, seed=5, save_final=False,
                     **({"steps": 3, "micro_batch_size": 2, "lr": 3e-3, "warmup_steps": 0, "log_every": 1} | train))


def _train(cfg):
    return train_loop(cfg, PackedLM.from_config(cfg))


def test_activation_checkpointing_gives_the_same_losses(tmp_path):
    data = write_shards(tmp_path / "train", rows=8)
    plain = [h["loss"] for h in _train(_cfg(data))["history"]]
    ac = [h["loss"] for h in _train(_cfg(data, activation_checkpointing=True))["history"]]
    assert ac == pytest.approx(plain, rel=1e-6)
    assert plain[-1] < plain[0]


def test_bf16_autocast_trains(tmp_path):
    data = write_shards(tmp_path / "train", rows=8)
    hist = _train(_cfg(data, dtype="bfloat16", steps=4))["history"]
    assert all(h["loss"] == h["loss"] for h in hist) and hist[-1]["loss"] < hist[0]["loss"]
    assert {"lr", "grad_norm", "tokens_per_s", "mem_peak_gb", "flops_per_token"} <= set(hist[0])


def test_rank_zero_reports_progress_to_the_live_view(tmp_path, monkeypatch):
    import json

    from coderforge import progress

    monkeypatch.setenv(progress.STATUS_DIR_ENV, str(tmp_path / "status"))
    monkeypatch.setenv(progress.STEP_ENV, "pretrain")
    data = write_shards(tmp_path / "train", rows=8)
    hist = _train(_cfg(data, steps=4, log_every=2))["history"]
    status = json.loads((tmp_path / "status" / "pretrain.json").read_text())
    assert (status["step"], status["total_steps"], status["tokens"]) == (4, 4, 4 * 2 * 64)
    assert status["loss"] == hist[-1]["loss"]


@pytest.mark.parametrize("size,params", [("0.5B", 0.494e9), ("1.5B", 1.544e9), ("3B", 3.086e9), ("7B", 7.616e9),
                                         ("14B", 14.77e9), ("32B", 32.76e9)])
def test_qwen25_coder_shapes_have_the_published_parameter_counts(size, params):
    conf = qwen2_config_dict(size, 151_665, 32_768, 1e6)
    assert conf["vocab_size"] == QWEN25_CODER_SHAPES[size][6]  # embedding padded like Qwen's
    assert param_count(conf) == pytest.approx(params, rel=2e-3)


def test_param_count_equals_the_built_model_and_flops_formula():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    conf = qwen2_config_dict("debug-small", 500, 256)
    model = Qwen2ForCausalLM(Qwen2Config(**conf))
    assert param_count(conf) == sum(p.numel() for p in model.parameters())
    assert flops_per_token(conf, 256) == 6 * param_count(conf) + 12 * 4 * 128 * 256
