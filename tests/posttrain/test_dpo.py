"""The dpo step. Fast: tokenisation (prompt masked, responses + <|im_end|>, long pairs dropped), the packed
log-probabilities against separate HF forwards, the sigmoid DPO loss. Slow (``slow``): the loss, rewards,
reference log-probabilities and gradient against TRL 1.16's own ``DPOTrainer`` on the same batch (TRL in a
scratch venv beside ours, ~1 min); ``run_dpo`` on Ray Train (2 workers) with pairs whose chosen responses
share a learnable pattern — held-out reward accuracy rises above 0.5 with a growing margin; a worker
SIGKILLed mid-run resumes to exactly the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from coderforge.ledger import Ledger, read_ledger
from coderforge.posttrain.dpo_data import END_OF_TURN, encode_pairs, select, write_rows
from coderforge.posttrain.dpo_loss import dpo_loss, response_logps, summarize
from coderforge.posttrain.dpo_records import HELDOUT, TRAIN, PreferencePair, write_pairs
from coderforge.posttrain.dpo_task import REFERENCE_FILE, DPORows, DPOTask, row_logps
from coderforge.train.hooks import TrainHooks

ROOT = Path(__file__).resolve().parents[2]
TRL_VENV = ROOT / "benchmarks" / ".venv-trl"
TRL_PINS = ("trl==1.16.0", "accelerate==1.15.0")  # the versions `pip install trl --dry-run` picks with our pins
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory) -> Path:
    """A tiny Qwen2 with a ChatML BPE tokenizer (the SFT model / the policy's start)."""
    from tests.generate.conftest import build_vllm_test_model

    return build_vllm_test_model(tmp_path_factory.mktemp("sft"), seed=1, layers=2, hidden=64, heads=2, kv_heads=1,
                                 intermediate=128)


@pytest.fixture(scope="module")
def tok(sft_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(sft_dir)


def pattern_pairs(tok, n: int, heldout_every: int = 0, start: int = 0) -> list[PreferencePair]:
    """Pairs whose chosen responses return the value and whose rejected ones print it (a learnable
    pattern); every ``heldout_every``-th one held out."""
    out = []
    for i in range(start, start + n):
        msgs = [{"role": "user", "content": f"Write a function scale{i}(x) that gives x times {i}."}]
        prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        split = HELDOUT if heldout_every and i % heldout_every == 0 else TRAIN
        out.append(PreferencePair(
            id=f"pair-{i}", prompt_id=f"p{i}", language="python", messages=msgs, prompt=prompt,
            chosen=f"```python\ndef scale{i}(x):\n    return x * {i}\n```",
            rejected=f"```python\ndef scale{i}(x):\n    print(x * {i})\n```", chosen_source="completion",
            chosen_index=0, rejected_index=1, rejected_reason="test_failed", completions=2, passed=1, split=split,
            repo="org/r", path=f"f{i}.py"))
    return out


def rows_for(tmp: Path, tok, pairs, model_dir, seq_len: int = 512) -> str:
    ledger = Ledger("dpo")
    encoded = select(encode_pairs(pairs, tok), seq_len, ledger)[TRAIN]
    vocab = json.loads((Path(model_dir) / "config.json").read_text())["vocab_size"]
    write_rows(tmp, encoded, vocab, tok.pad_token_id or 0, tok.eos_token_id)
    return str(tmp)


# --- data ---------------------------------------------------------------------------------------------------
def test_tokenisation_masks_the_prompt_and_drops_long_pairs(tmp_path, tok, sft_dir):
    pairs = pattern_pairs(tok, 5, heldout_every=3)
    pairs[1].rejected = "x = 1\n" * 200  # too long for 256 tokens with the prompt
    ledger = Ledger("dpo")
    encoded = encode_pairs(pairs, tok)
    splits = select(encoded, 256, ledger)
    entries = {e["id"]: e for e in ledger.entries()}
    assert entries["pair-1"]["reason"] == "too_long" and "dpo.seq_len 256" in entries["pair-1"]["detail"]
    assert [e.pair.id for e in splits[TRAIN]] == ["pair-2", "pair-4"]
    assert [e.pair.id for e in splits[HELDOUT]] == ["pair-0", "pair-3"]
    e = splits[TRAIN][0]
    end = tok.convert_tokens_to_ids(END_OF_TURN)
    assert e.prompt == tok(pairs[2].prompt, add_special_tokens=False)["input_ids"]
    assert e.chosen[-1] == end and e.rejected[-1] == end
    assert tok.decode(e.chosen[:-1]) == pairs[2].chosen

    out = tmp_path / "rows"
    assert write_rows(out, splits[TRAIN], 600, 0, end) is True
    assert write_rows(out, splits[TRAIN], 600, 0, end) is False  # same content: left as it is
    rows = DPORows(out)
    assert len(rows) == 2 and rows.seq_len % 128 == 0 and rows.pair_ids == ["pair-2", "pair-4"]
    b = rows.batch([0, 1], CPU, "sdpa", with_reference=False)
    t0, slot0 = b["targets"][0], b["slot"][0]
    p, lc = len(e.prompt), len(e.prompt) + len(e.chosen)
    valid = (t0 != -100).nonzero()[:, 0].tolist()
    assert valid == list(range(p - 1, lc - 1)) + list(range(lc + p - 1, lc + p + len(e.rejected) - 1))
    assert t0[p - 1:lc - 1].tolist() == e.chosen  # the first response token is predicted from the prompt's end
    assert t0[lc + p - 1:lc + p - 1 + len(e.rejected)].tolist() == e.rejected
    assert set(slot0[valid[:len(e.chosen)]].tolist()) == {0} and set(slot0[valid[len(e.chosen):]].tolist()) == {1}
    assert b["position_ids"][0, lc].item() == 0 and b["position_ids"][0, lc - 1].item() == lc - 1


@pytest.mark.parametrize("attention", ["sdpa", "varlen"])
def test_packed_logps_equal_separate_forwards(tmp_path, tok, sft_dir, attention):
    from coderforge.train.model import build_model

    pairs = pattern_pairs(tok, 3)
    rows_dir = rows_for(tmp_path / "rows", tok, pairs, sft_dir)
    rows = DPORows(rows_dir)
    core = build_model(init_from=str(sft_dir), attention=attention).eval()
    with torch.no_grad():
        packed = response_logps(core, rows.batch([0, 1, 2], CPU, attention, with_reference=False), chunk=7)
    ref = build_model(init_from=str(sft_dir)).eval()
    for i, e in enumerate(encode_pairs(pairs, tok)):
        for col, resp in enumerate((e.chosen, e.rejected)):
            ids = torch.tensor([e.prompt + resp])
            with torch.no_grad():
                lp = torch.log_softmax(ref(input_ids=ids).logits[0, :-1].float(), -1)
            want = lp[len(e.prompt) - 1:].gather(1, ids[0, len(e.prompt):, None])[:, 0].sum()
            assert packed[i, col].item() == pytest.approx(want.item(), rel=1e-5, abs=1e-4)
    assert np.allclose(row_logps(str(sft_dir), rows_dir, 1, 3, 2, attention, 4096), packed[1:].double().numpy(),
                       rtol=1e-5, atol=1e-4)


def test_sigmoid_dpo_loss_and_metrics():
    policy = torch.tensor([[-10.0, -20.0], [-30.0, -25.0], [-5.0, -5.0]])
    reference = torch.tensor([[-12.0, -18.0], [-29.0, -26.0], [-5.0, -5.0]])
    loss, sums = dpo_loss(policy, reference, 0.5)
    delta = torch.tensor([2.0 - (-2.0), -1.0 - 1.0, 0.0])
    assert loss.item() == pytest.approx(float(-torch.nn.functional.logsigmoid(0.5 * delta).mean()))
    m = summarize({k: float(v) for k, v in sums.items()})
    assert m["reward_accuracy"] == pytest.approx(1 / 3)  # a tie is not a win
    assert m["margin"] == pytest.approx(0.5 * (4 - 2 + 0) / 3)
    assert m["chosen_reward"] == pytest.approx(0.5 * (2 - 1 + 0) / 3)
    assert m["rejected_reward"] == pytest.approx(0.5 * (-2 + 1 + 0) / 3)
    assert m["kl"] == pytest.approx((-2 + 2 + 1 - 1) / 6)
    same, s2 = dpo_loss(reference, reference, 0.1)
    assert same.item() == pytest.approx(np.log(2)) and float(s2["margin"]) == 0.0


# --- against TRL ----------------------------------------------------------------------------------------------
TRL_SCRIPT = r'''
import json, sys, torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

spec = json.load(open(sys.argv[1]))
tok = AutoTokenizer.from_pretrained(spec["policy"])
tok.eos_token = "<|im_end|>"  # as Qwen2.5's chat tokenizers: a response ends its turn with <|im_end|>
policy = AutoModelForCausalLM.from_pretrained(spec["policy"], dtype=torch.float32)
ref = AutoModelForCausalLM.from_pretrained(spec["reference"], dtype=torch.float32)
data = Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in spec["pairs"]])
args = DPOConfig(output_dir=spec["out"], beta=spec["beta"], loss_type=["sigmoid"], precompute_ref_log_probs=True,
                 per_device_train_batch_size=len(spec["pairs"]), precompute_ref_batch_size=2, max_length=None,
                 use_cpu=True, report_to="none", bf16=False, disable_dropout=True, save_strategy="no")
trainer = DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=data, processing_class=tok)
rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
batch = DataCollatorForPreference(pad_token_id=tok.pad_token_id)(rows)
trainer.model.train()
loss = trainer.compute_loss(trainer.model, batch)
loss.backward()
m = {k: v[-1] for k, v in trainer._metrics["train"].items()}
grad = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in trainer.model.parameters() if p.grad is not None))
json.dump({"ids": [[r["prompt_ids"], r["chosen_ids"], r["rejected_ids"]] for r in rows],
           "ref": [[r["ref_chosen_logps"], r["ref_rejected_logps"]] for r in rows], "loss": float(loss),
           "grad_norm": float(grad), "metrics": m}, open(sys.argv[2], "w"))
'''


def trl_python() -> Path:
    """An interpreter with TRL: a scratch venv (``benchmarks/.venv-trl``, git-ignored) holding only
    ``TRL_PINS``; everything else (torch, transformers, datasets, ...) is our venv's, through a .pth."""
    py, marker = TRL_VENV / "bin" / "python", TRL_VENV / ".coderforge-trl"
    if py.exists() and marker.exists() and marker.read_text() == " ".join(TRL_PINS):
        return py
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(TRL_VENV)], check=True)
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "coderforge-main.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", *TRL_PINS], capture_output=True,
                         text=True)
    if pip.returncode != 0:
        pytest.skip(f"TRL could not be installed into the scratch venv: {pip.stderr[-500:]}")
    marker.write_text(" ".join(TRL_PINS))
    return py


@pytest.mark.slow
def test_loss_rewards_and_gradient_equal_trl(tmp_path, tok, sft_dir):
    """The same pairs, policy and reference through TRL 1.16's DPOTrainer (its tokenisation, precomputed
    reference log-probabilities, padded batch, fused LM head, loss and reward metrics) and through ours
    (packed rows, document mask, ``DPOTask.loss``)."""
    from coderforge.train.model import build_model
    from tests.generate.conftest import build_vllm_test_model

    py = trl_python()
    ref_dir = build_vllm_test_model(tmp_path / "ref", seed=7, layers=2, hidden=64, heads=2, kv_heads=1,
                                    intermediate=128)
    pairs = pattern_pairs(tok, 3) + pattern_pairs(tok, 3, start=40)
    pairs[1].chosen, pairs[4].rejected = "I cannot do that.", ""  # prose, and an empty answer
    beta = 0.5
    spec = {"policy": str(sft_dir), "reference": str(ref_dir), "beta": beta, "out": str(tmp_path / "trl"),
            "pairs": [{"prompt": p.prompt, "chosen": p.chosen + END_OF_TURN, "rejected": p.rejected + END_OF_TURN}
                      for p in pairs]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "trl_dpo.py").write_text(TRL_SCRIPT)
    t0 = time.perf_counter()
    proc = subprocess.run([str(py), str(tmp_path / "trl_dpo.py"), str(tmp_path / "spec.json"),
                           str(tmp_path / "trl.json")], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    trl_seconds = time.perf_counter() - t0
    trl = json.loads((tmp_path / "trl.json").read_text())

    rows_dir = rows_for(tmp_path / "rows", tok, pairs, sft_dir)
    rows = DPORows(rows_dir)
    ours_ids = [[e.prompt, e.chosen, e.rejected] for e in encode_pairs(pairs, tok)]
    assert ours_ids == trl["ids"]  # the same tokens: prompt, response + <|im_end|>
    np.save(Path(rows_dir) / REFERENCE_FILE, row_logps(str(ref_dir), rows_dir, 0, len(rows), 4, "sdpa", 4096))
    assert np.allclose(np.load(Path(rows_dir) / REFERENCE_FILE), trl["ref"], rtol=1e-5, atol=1e-4)

    core = build_model(init_from=str(sft_dir), attention="sdpa").train()
    task = DPOTask(rows_dir, 0, beta, 4096)
    loss, sums = task.loss(core, task.rows.batch(list(range(len(rows))), CPU, "sdpa"))
    loss.backward()
    grad = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in core.parameters() if p.grad is not None))
    ours = summarize({k: float(v) for k, v in sums.items()})
    tm = trl["metrics"]
    assert loss.item() == pytest.approx(trl["loss"], rel=1e-5)
    assert grad.item() == pytest.approx(trl["grad_norm"], rel=1e-4)
    assert ours["reward_accuracy"] == pytest.approx(tm["rewards/accuracies"])
    for mine, theirs in (("margin", "rewards/margins"), ("chosen_reward", "rewards/chosen"),
                         ("rejected_reward", "rewards/rejected"), ("chosen_logp", "logps/chosen"),
                         ("rejected_logp", "logps/rejected")):
        assert ours[mine] == pytest.approx(tm[theirs], rel=1e-5, abs=1e-5), mine
    assert 0 < ours["reward_accuracy"] < 1 and abs(ours["margin"]) > 0.01  # a non-trivial batch
    print(f"\nTRL 1.16 vs ours: loss {trl['loss']:.6f} / {loss.item():.6f}, grad norm {trl['grad_norm']:.6f} / "
          f"{grad.item():.6f}, reward accuracy {tm['rewards/accuracies']:.3f}, margin {tm['rewards/margins']:.4f} "
          f"(TRL script {trl_seconds:.0f} s)")


# --- run_dpo on Ray Train ---------------------------------------------------------------------------------
RECIPE = """
run: {{name: dpo-t, workdir: {wd}, seed: 3}}
data: {{sources: [{{uri: /nonexistent}}]}}
train: {{num_workers: 2, log_every: 2, checkpoint_every: 4, checkpoints_to_keep: {keep}, max_failures: 1,
         storage: {storage}}}
dpo: {{beta: 0.1, seq_len: 512, train: {{steps: {steps}, micro_batch_size: 4, lr: 0.002, warmup_steps: 0,
       schedule: constant, checkpoint_every: {every}}}}}
"""


def dpo_recipe(tmp: Path, steps: int = 12, every: int = 4, keep: int = 4):
    from coderforge.config import load_recipe_text

    return load_recipe_text(RECIPE.format(wd=tmp / "wd", storage=tmp / "ray", steps=steps, every=every, keep=keep))


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory, tok) -> str:
    out = tmp_path_factory.mktemp("pairs")
    pairs = pattern_pairs(tok, 48, heldout_every=4)
    pairs.append(PreferencePair(id="too-long", prompt_id="pl", language="python", prompt=pairs[1].prompt,
                                chosen="y = 2\n" * 400, rejected="z", repo="org/r", path="long.py"))
    write_pairs(str(out), pairs, shard_size=20)
    return str(out)


@pytest.mark.slow
def test_run_dpo_learns_the_pattern_on_held_out_pairs(tmp_path, pairs_dir, sft_dir):
    from mlflow.tracking import MlflowClient
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from coderforge.posttrain.dpo import run_dpo
    from coderforge.tracking import StepRun

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    t0 = time.perf_counter()
    with StepRun(uri, None, "dpo") as run:
        res = run_dpo(dpo_recipe(tmp_path), pairs_dir, str(sft_dir), str(tmp_path / "out"), run)
        run_id = run.run_id
    seconds = time.perf_counter() - t0
    led = res.ledger
    assert (led.inputs, led.kept, led.dropped, led.reasons) == (49, 48, 1, {"too_long": 1})
    assert {r["id"]: r["reason"] for r in read_ledger(str(tmp_path / "out"))}["too-long"] == "too_long"
    m = res.metrics
    assert (m["pairs_train"], m["pairs_heldout"], m["steps"]) == (36, 12, 12)
    held = res.info["heldout"]
    assert [h["step"] for h in held] == [0, 4, 8, 12]
    assert held[0]["reward_accuracy"] == 0.0 and held[0]["margin"] == 0.0 and held[0]["kl"] == 0.0
    margins = [h["margin"] for h in held]
    assert margins == sorted(margins) and margins[-1] > margins[1] > 0  # the margin grows
    assert held[-1]["reward_accuracy"] > 0.5 and m["heldout.reward_accuracy"] == held[-1]["reward_accuracy"]
    assert held[-1]["loss"] < np.log(2) and held[-1]["chosen_reward"] > held[-1]["rejected_reward"]
    train = res.info["train"]
    assert [t["step"] for t in train] == [2, 4, 6, 8, 10, 12] and train[-1]["reward_accuracy"] > 0.5
    assert train[-1]["loss"] < train[0]["loss"]
    # the exported model: HF weights + the SFT tokenizer, and it prefers the chosen pattern
    model_dir = tmp_path / "out" / "model"
    assert AutoTokenizer.from_pretrained(model_dir).chat_template
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert model.config.num_hidden_layers == 2
    client = MlflowClient(uri)
    assert len(client.get_metric_history(run_id, "heldout.reward_accuracy")) == 4
    assert len(client.get_metric_history(run_id, "train.margin")) == 6
    assert len(client.get_metric_history(run_id, "loss")) == 6
    print(f"\nrun_dpo: {seconds:.0f} s (reference pass {m['reference_seconds']:.1f} s, training "
          f"{m['train_seconds']:.0f} s); held-out " + ", ".join(
              f"step {h['step']}: acc {h['reward_accuracy']:.2f} margin {h['margin']:.3f} kl {h['kl']:.3f}"
              for h in held))


@dataclass(frozen=True)
class KillOnceAtStep(TrainHooks):
    """SIGKILL rank 0 right after step ``step``, once (the marker file says it happened): the restarted
    worker group resumes from the last checkpoint Ray Train registered and passes the step again."""

    step: int
    marker: str

    def on_step(self, step: int, rank: int) -> None:
        if step == self.step and rank == 0 and not Path(self.marker).exists():
            Path(self.marker).write_text("killed")
            os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.slow
def test_killed_worker_resumes_to_the_uninterrupted_result(tmp_path, pairs_dir, sft_dir):
    import ray.cloudpickle
    from safetensors.torch import load_file

    from coderforge.posttrain.dpo import run_dpo
    from coderforge.tracking import NullRun

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the hook travels to the Ray workers by value
    t0 = time.perf_counter()
    full = run_dpo(dpo_recipe(tmp_path / "a", steps=8, every=2, keep=2), pairs_dir, str(sft_dir), str(tmp_path / "a"),
                   NullRun())
    t_full = time.perf_counter() - t0
    marker = tmp_path / "killed"
    t0 = time.perf_counter()
    resumed = run_dpo(dpo_recipe(tmp_path / "b", steps=8, every=2, keep=2), pairs_dir, str(sft_dir),
                      str(tmp_path / "b"), NullRun(), hooks=KillOnceAtStep(5, str(marker)))
    t_resumed = time.perf_counter() - t0
    # the worker really was killed after step 5: the restart resumed from the step-4 checkpoint or, when the kill
    # came before Ray Train's controller had taken in the step-4 report (seen here), from step 2
    assert marker.exists()
    a, b = full.info["train"], resumed.info["train"]
    assert [r["step"] for r in a] == [r["step"] for r in b] == [2, 4, 6, 8]
    for x, y in zip(a, b, strict=True):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5, abs=1e-6)
        assert x["reward_accuracy"] == y["reward_accuracy"] and x["margin"] == pytest.approx(y["margin"], rel=1e-4)
    wa = load_file(tmp_path / "a" / "model" / "model.safetensors")
    wb = load_file(tmp_path / "b" / "model" / "model.safetensors")
    for k, v in wa.items():
        assert torch.allclose(v, wb[k], rtol=1e-5, atol=1e-6), k
    assert full.info["heldout"][-1]["margin"] == pytest.approx(resumed.info["heldout"][-1]["margin"], rel=1e-4)
    print(f"\nDPO resume: uninterrupted {t_full:.0f} s, killed + resumed {t_resumed:.0f} s; final held-out "
          f"margin {full.info['heldout'][-1]['margin']:.4f} / {resumed.info['heldout'][-1]['margin']:.4f}")
