"""The SFT step: packed rows train exactly like one sample per row; ``run_sft`` end to end on a tiny
model and real standard-library data through Ray Train (2 workers), with the held-out loss falling; and
an exact resume after a worker is SIGKILLed mid-run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from coderforge.ledger import read_summary
from coderforge.posttrain import sft_data as D
from coderforge.posttrain.sft_pack import ChatEncoder, write_split
from coderforge.tokens.shards import TokenShards
from coderforge.train.model import build_model, qwen2_config_dict
from coderforge.train.task import PackedLM, make_batch
from tests.posttrain.test_sft_data import make_inputs, make_tokenizer, stdlib_functions
from tests.tokens._corpus import recipe


@pytest.fixture(scope="module")
def base_model(tmp_path_factory, stdlib_dir) -> str:
    """A randomly initialised debug-tiny Qwen2 with a ChatML BPE tokenizer trained on the stdlib."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    base = tmp_path_factory.mktemp("base") / "model"
    make_tokenizer(base, stdlib_dir)
    torch.manual_seed(0)
    Qwen2ForCausalLM(Qwen2Config(**qwen2_config_dict("debug-tiny", 1024, 1024))).save_pretrained(base)
    return str(base)


# --- packing does not change the loss ---------------------------------------------------------------
def _summed(data_dir: str, model, attention: str) -> tuple[float, int, dict]:
    """Summed next-token loss over every target of every row, and its gradients."""
    task, shards = PackedLM(data_dir, 0, 256, False), TokenShards(data_dir)
    model.zero_grad()
    total, n = 0.0, 0
    for start in range(0, len(shards), 3):
        batch = make_batch(shards, range(start, min(len(shards), start + 3)), torch.device("cpu"), attention)
        loss, m = task.loss(model, batch)
        k = int(m["target_tokens"])
        (loss * k).backward()
        total += float(loss.detach()) * k
        n += k
    return total, n, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("attention", ["sdpa", "varlen"])
def test_packed_equals_unpacked_loss_and_gradients(tmp_path, base_model, stdlib_dir, attention):
    enc = ChatEncoder(base_model)
    fns = stdlib_functions(stdlib_dir, max_chars=400)[:18]
    convs = [D.seed_messages("python", k, n, d, c) for _, k, n, d, c in fns[:12]]
    convs += [[{"role": "user", "content": f"Explain {n}."}, {"role": "assistant", "content": d},
               {"role": "user", "content": "Code?"}, {"role": "assistant", "content": c}] for _, _, n, d, c in fns[12:]]
    samples = [s for s in enc.encode(convs, only_last_turn=False) if len(s[0]) <= 512]
    assert len(samples) >= 15
    packed = write_split(tmp_path / "packed", samples, 512, enc.info, {})
    single = write_split(tmp_path / "single", samples, 512, enc.info, {}, one_per_row=True)
    assert packed["num_rows"] < single["num_rows"] == len(samples)
    assert packed["tokens_target"] == single["tokens_target"]
    assert packed["padding_fraction"] < 0.5 * single["padding_fraction"]
    model = build_model(None, base_model, attention=attention)
    model.train()
    loss_p, n_p, grads_p = _summed(str(tmp_path / "packed"), model, attention)
    loss_s, n_s, grads_s = _summed(str(tmp_path / "single"), model, attention)
    masked = sum(int(m[1:].sum()) for _, m in samples)  # every mask bit but each sample's first token
    assert n_p == n_s == masked == packed["tokens_target"]
    assert loss_p == pytest.approx(loss_s, rel=1e-5)
    assert grads_p.keys() == grads_s.keys() and len(grads_p) > 5
    for name, g in grads_p.items():
        assert torch.allclose(g, grads_s[name], rtol=1e-4, atol=1e-5), name
    # a mask that trained the prompts too gives other sums: the comparison can fail
    write_split(tmp_path / "all", [(ids, np.ones_like(m)) for ids, m in samples], 512, enc.info, {})
    loss_all, n_all, _ = _summed(str(tmp_path / "all"), model, attention)
    assert n_all > 1.2 * n_p and loss_all > 1.2 * loss_p


# --- run_sft through Ray Train -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_local():
    import ray

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=2, runtime_env={"env_vars": {"RAY_USAGE_STATS_ENABLED": "0", "DS_ACCELERATOR": "cpu"}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def sft_inputs(tmp_path_factory, stdlib_dir) -> dict:
    return make_inputs(tmp_path_factory.mktemp("inputs"), stdlib_dir)


def sft_cfg(workdir: Path, inputs: dict, max_failures: int = 1):
    return recipe(run={"name": "sft-test", "workdir": str(workdir), "seed": 0}, model={"size": "debug-tiny"},
                  train={"num_workers": 2, "strategy": "ddp", "micro_batch_size": 2, "log_every": 4,
                         "checkpoint_every": 16, "max_failures": max_failures, "steps": 1000, "lr": 1e-4},
                  sft={"seq_len": 1024, "files": inputs["files"], "fim_share": 0.2, "heldout_fraction": 0.15,
                       "mix": {"synthetic": 1.0, "seeds": 1.0, "files": 1.0},
                       "train": {"steps": 32, "lr": 3e-3, "warmup_steps": 2, "schedule": "cosine"}})


def _run(cfg, inputs, base_model, out: Path, uri: str, hooks=None):
    from coderforge.posttrain.sft import run_sft
    from coderforge.tracking import StepRun

    with StepRun(uri, None, "sft") as run:
        res = run_sft(cfg, inputs["docs_dir"], base_model, str(out), run, instructions_dir=inputs["instructions_dir"],
                      seeds_dir=inputs["seeds_dir"], hooks=hooks)
        return res, run.run_id


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, ray_local, sft_inputs, base_model):
    tmp = tmp_path_factory.mktemp("full")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    res, run_id = _run(sft_cfg(tmp / "wd", sft_inputs), sft_inputs, base_model, tmp / "out", uri)
    return res, run_id, uri, tmp


@pytest.mark.slow
def test_run_sft_end_to_end_two_ray_workers(full_run):
    from mlflow.tracking import MlflowClient
    from transformers import AutoModelForCausalLM, AutoTokenizer

    res, run_id, uri, tmp = full_run
    m = res.metrics
    print("sft metrics:", json.dumps({k: round(v, 4) for k, v in sorted(m.items())}))
    assert m["steps"] == 32 and m["heldout_targets"] > 500
    assert m["heldout_loss_after"] < m["heldout_loss_before"] - 1.0, m  # ln(1024) = 6.93 at init
    assert m["final_loss"] < m["heldout_loss_before"]
    assert m["samples.train.fim"] > 0 and m["samples.train.seeds"] > 0 and m["samples.train.files"] > 0
    assert 0 <= m["padding_fraction"] < 0.1 and m["train_target_tokens"] < m["train_tokens"]
    model_dir = Path(res.info["model_path"])
    assert model_dir == tmp / "out" / "model"
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert model.config.num_hidden_layers == 2 and len(tok) == 1024
    assert "<|im_start|>" in tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    summary = read_summary(str(tmp / "out"))
    assert summary["in"] == summary["kept"] + summary["dropped"] + summary["quarantined"]
    assert summary["quarantined"] == 7 and summary["reasons"]["too_long"] >= 1
    client = MlflowClient(uri)
    assert sorted(x.step for x in client.get_metric_history(run_id, "loss")) == [4, 8, 12, 16, 20, 24, 28, 32]
    held = {x.step: x.value for x in client.get_metric_history(run_id, "heldout_loss")}
    assert held == {0: pytest.approx(m["heldout_loss_before"]), 32: pytest.approx(m["heldout_loss_after"])}


def _latest_state(storage: Path) -> dict:
    """The newest checkpoint's trainer state under a Ray Train storage folder (one run in it)."""
    states = [json.loads(p.read_text()) for p in storage.rglob("trainer_state.json")]
    return max(states, key=lambda s: s["step"])


@pytest.mark.slow
def test_sft_resumes_exactly_after_a_killed_worker(tmp_path, full_run, sft_inputs, base_model):
    """Rank 0 is SIGKILLed after step 20 (checkpoint at 16, no retries left): the step fails. Re-running
    it resumes from the step-16 checkpoint (its history rows come back verbatim, timings included) and
    ends with the uninterrupted run's losses and weights."""
    from safetensors.torch import load_file

    from coderforge.train.hooks import KillAtStep

    ref, _, _, ref_tmp = full_run
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = sft_cfg(tmp_path / "wd", sft_inputs, max_failures=0)
    with pytest.raises(Exception, match="(?i)worker|actor|died|killed|fail"):
        _run(cfg, sft_inputs, base_model, tmp_path / "out", uri, hooks=KillAtStep(20))
    killed = _latest_state(tmp_path / "wd" / "ray_results")
    assert killed["step"] == 16
    res, _ = _run(cfg, sft_inputs, base_model, tmp_path / "out", uri)
    state = _latest_state(tmp_path / "wd" / "ray_results")
    assert state["step"] == 32 and [h["step"] for h in state["history"]] == [4, 8, 12, 16, 20, 24, 28, 32]
    assert state["history"][:4] == killed["history"]  # resumed from the checkpoint, not started over
    ref_state = _latest_state(ref_tmp / "wd" / "ray_results")
    for a, b in zip(ref_state["history"], state["history"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6), (a, b)
    w_ref = load_file(ref_tmp / "out" / "model" / "model.safetensors")
    w = load_file(tmp_path / "out" / "model" / "model.safetensors")
    assert w_ref.keys() == w.keys()
    for k, v in w_ref.items():
        assert torch.allclose(v, w[k], rtol=1e-5, atol=1e-6), k
    assert res.metrics["heldout_loss_after"] == pytest.approx(ref.metrics["heldout_loss_after"], rel=1e-5)

