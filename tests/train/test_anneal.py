"""The anneal phase's data (recipe.md §9.6): pretraining rows until the anneal's first step, then the
anneal mix (pretraining : instructions, code : NL inside them) exactly, and a resume anywhere reads the
rows of the uninterrupted run."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from coderforge.config import load_recipe
from coderforge.tokens.shards import ResumableSampler, TokenShardWriter
from coderforge.train.anneal import MixPlan, block_counts
from coderforge.train.hooks import FailOnceAtStep
from coderforge.train.loop import train_loop
from coderforge.train.loop_config import loop_config
from coderforge.train.task import PackedLM

from .conftest import VOCAB, tiny_recipe

ROOT = Path(__file__).resolve().parents[2]
SEQ = 64
MARK = {"pretrain": 2, "code": 3, "nl": 4}  # every row starts with its source's mark, then its row number
ABACUS = {"fraction": 0.5, "mix": {"pretrain": 0.8, "instructions": 0.2}, "code_nl": [1, 1],
          "instruction_files": [{"path": "code.jsonl", "kind": "code"}, {"path": "nl.jsonl", "kind": "nl"}]}


def write_source(path: Path, source: str, rows: int) -> str:
    """``rows`` rows of two documents each; row ``r`` reads ``[mark, 10 + r, ...]``, so a row names itself."""
    w = TokenShardWriter(path, seq_len=SEQ, pad_id=0, eos_id=1, vocab_size=VOCAB, rows_per_shard=7)
    for r in range(rows):
        toks = [MARK[source], 10 + r] + [(5 + 3 * i + r) % (VOCAB - 5) + 5 for i in range(SEQ - 3)] + [1]
        w.add_row(toks, [SEQ // 2, SEQ // 2])
    w.close()
    return str(path)


@pytest.fixture
def sources(tmp_path):
    data = write_source(tmp_path / "pack" / "train", "pretrain", 40)
    anneal = tmp_path / "anneal"
    write_source(anneal / "code", "code", 5)
    write_source(anneal / "nl", "nl", 3)
    return data, str(anneal)


def _loop(data, anneal_dir, seed=3, anneal=None, **train):
    train = {"steps": 10, "micro_batch_size": 2, "grad_accum": 2, "lr": 3e-3, "warmup_steps": 1,
             "schedule": "wcl", "anneal": ABACUS if anneal is None else anneal, **train}
    return loop_config(tiny_recipe(seed, **train), data, "file", None, anneal_dir)


def _rows(task, start, n, rank=0, world=1, micro=2):
    """(source, row number) of the next ``n`` rows the task's batches give rank ``rank`` from ``start`` on."""
    out, it = [], task.batches(start, rank, world, micro, torch.device("cpu"), "sdpa")
    while len(out) < n:
        ids = next(it)["input_ids"]
        out += [({v: k for k, v in MARK.items()}[int(a)], int(b) - 10) for a, b in ids[:, :2].tolist()]
    return out[:n]


def test_block_counts_are_exact_shares():
    assert block_counts({"pretrain": 0.8, "code": 0.1, "nl": 0.1}) == {"pretrain": 8, "code": 1, "nl": 1}
    assert block_counts({"pretrain": 0.7, "code": 0.15, "nl": 0.15}) == {"pretrain": 14, "code": 3, "nl": 3}
    assert block_counts({"a": 1, "b": 2}) == {"a": 1, "b": 2}
    odd = block_counts({"a": 1 / np.pi, "b": 1 - 1 / np.pi})  # no small block: 1000 rows by largest remainder
    assert odd == {"a": 318, "b": 682}
    with pytest.raises(ValueError, match="non-negative"):
        block_counts({"a": -1, "b": 2})
    plan = MixPlan({"pretrain": 0.8, "code": 0.1, "nl": 0.1}, seed=0)
    seq = [plan.source_of(j) for j in range(50)]
    for src, n in (("pretrain", 40), ("code", 5), ("nl", 5)):  # each source's ordinals run 0, 1, 2, ...
        assert [k for s, k in seq if s == src] == list(range(n))
    assert [s for s, _ in seq[:10]] != [s for s, _ in seq[10:20]]  # shuffled per block


def test_recipe_keys_and_the_05b_recipe_anneals_like_abacus():
    cfg = load_recipe(ROOT / "configs" / "qwen2.5-coder-0.5b.yaml")
    a = cfg.train.anneal
    assert cfg.train.schedule == "wcl" and a.shape == "linear" and a.fraction is None  # Table 2-1's 7/102
    assert a.source_weights() == pytest.approx({"pretrain": 0.8, "code": 0.1, "nl": 0.1})  # 8:2, 1:1 inside
    assert {f.kind for f in a.instruction_files} == {"code", "nl"}
    tiny = load_recipe(ROOT / "configs" / "tiny.yaml")
    assert tiny.train.anneal.source_weights() == {}  # the tiny run: no anneal data
    with pytest.raises(ValueError, match="does not have"):
        tiny_recipe(0, schedule="cosine", anneal=ABACUS)
    with pytest.raises(ValueError, match="instruction_files"):
        tiny_recipe(0, schedule="wsd", anneal={"mix": {"pretrain": 8, "instructions": 2}})
    with pytest.raises(ValueError, match="Input should be"):
        tiny_recipe(0, schedule="wsd", anneal={"mix": {"pretrain": 1, "sft": 1}})
    with pytest.raises(ValueError, match="min_lr_ratio"):
        tiny_recipe(0, schedule="wsd", min_lr_ratio=0.0, anneal={"shape": "exponential"})


def test_loop_config_resolves_the_phase_and_needs_the_anneal_rows(sources):
    data, anneal_dir = sources
    loop = _loop(data, anneal_dir)
    assert loop.anneal_steps == 5 and loop.anneal_shape == "linear" and loop.anneal_dir == anneal_dir
    assert loop.anneal_mix == pytest.approx({"pretrain": 0.8, "code": 0.1, "nl": 0.1})
    with pytest.raises(ValueError, match="pack_anneal"):
        _loop(data, None)
    plain = _loop(data, None, anneal={"fraction": 0.5})  # anneal on pretraining rows only: no switch
    assert plain.anneal_mix == {} and plain.anneal_dir is None and plain.anneal_steps == 5
    recipe = tiny_recipe(3, steps=10, warmup_steps=1, schedule="wcl", anneal=ABACUS)
    repo = loop_config(recipe, data, "repo", None, anneal_dir)
    assert repo.anneal_mix == {} and repo.anneal_steps == round(10 * 0.5)  # only the file stage switches data


def test_loader_switches_to_the_anneal_mix_at_its_first_step(sources):
    """10 steps x 4 rows; the anneal is the last 5 steps: rows 0-19 pretraining (as without an anneal),
    rows 20-39 are 16 pretraining (continuing the stream), 2 code, 2 NL."""
    data, anneal_dir = sources
    loop = _loop(data, anneal_dir)
    got = _rows(PackedLM.from_config(loop), 0, 40)
    plain = PackedLM.from_config(_loop(data, None, anneal={"fraction": 0.5}))
    pre = ResumableSampler(40, loop.seed)
    assert _rows(plain, 0, 20) == got[:20] == [("pretrain", pre.row_of(i)) for i in range(20)]
    assert Counter(s for s, _ in got[:20]) == {"pretrain": 20}
    assert Counter(s for s, _ in got[20:]) == {"pretrain": 16, "code": 2, "nl": 2}
    assert [r for s, r in got[20:] if s == "pretrain"] == [pre.row_of(i) for i in range(20, 36)]
    # a longer anneal repeats the small instruction sets: every row once per epoch, in a new order
    long = _rows(PackedLM.from_config(_loop(data, anneal_dir, steps=100, anneal={**ABACUS, "fraction": 0.9})),
                 40, 360)
    counts = Counter(s for s, _ in long)
    assert counts == {"pretrain": 288, "code": 36, "nl": 36}
    code = [r for s, r in long if s == "code"]
    assert sorted(code[:5]) == list(range(5)) and sorted(code[5:10]) == list(range(5))


def test_ranks_share_out_the_same_rows(sources):
    """Two workers with half the micro-batch read, together, the one-worker stream (same rows per step)."""
    data, anneal_dir = sources
    one = PackedLM.from_config(_loop(data, anneal_dir, micro_batch_size=4))
    two = PackedLM.from_config(_loop(data, anneal_dir, micro_batch_size=2))
    whole = _rows(one, 0, 40, micro=4)
    r0, r1 = (_rows(two, 0, 20, rank=r, world=2) for r in (0, 1))
    assert [x for pair in zip(r0, r1, strict=True) for x in pair] == whole


@pytest.mark.parametrize("step", [3, 5, 7])  # before the switch, exactly at it, inside the anneal
def test_resumed_task_reads_the_rows_of_the_uninterrupted_run(sources, step):
    data, anneal_dir = sources
    loop = _loop(data, anneal_dir)
    whole = _rows(PackedLM.from_config(loop), 0, 40)
    assert _rows(PackedLM.from_config(loop), step * 4, 40 - step * 4) == whole[step * 4:]


class Recorder(PackedLM):
    """Pretraining's task, noting the (source mark, row number) of every row it trains on."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.seen: list[tuple[int, int]] = []

    def loss(self, model, batch):
        self.seen += [tuple(r) for r in batch["input_ids"][:, :2].tolist()]
        return super().loss(model, batch)


@pytest.mark.parametrize("fail_after", [3, 7])  # resume from step 2 (before the switch at 5) / from step 6
def test_training_resumed_across_the_switch_equals_the_uninterrupted_run(sources, tmp_path, fail_after):
    from dataclasses import replace

    data, anneal_dir = sources
    loop = replace(_loop(data, anneal_dir, log_every=1, checkpoint_every=2), save_final=False)
    ref_cfg = replace(loop, checkpoint_dir=str(tmp_path / "a"))
    full = Recorder.from_config(ref_cfg)
    ref = train_loop(ref_cfg, full)

    cfg = replace(loop, checkpoint_dir=str(tmp_path / "b"))
    first = Recorder.from_config(cfg)
    with pytest.raises(RuntimeError, match="simulated"):
        train_loop(cfg, first, hooks=FailOnceAtStep(fail_after, str(tmp_path / "failed")))
    resumed_task = Recorder.from_config(cfg)
    resumed = train_loop(cfg, resumed_task)
    ckpt = fail_after - 1  # the newest checkpoint before the failure
    assert first.seen == full.seen[:fail_after * 4]
    assert resumed_task.seen == full.seen[ckpt * 4:]  # the same rows, the anneal mix from step 5 on
    assert Counter(m for m, _ in full.seen[20:]) == {2: 16, 3: 2, 4: 2}
    for a, b in zip(ref["history"], resumed["history"], strict=True):
        assert a["step"] == b["step"] and a["lr"] == pytest.approx(b["lr"])
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6), (a, b)
