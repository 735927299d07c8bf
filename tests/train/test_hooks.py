"""Hooks: called after every optimizer step on every rank; the failure injections the resume tests use."""

from __future__ import annotations

import pickle

import pytest

from coderforge.train.hooks import FailOnceAtStep, KillAtStep, TrainHooks
from coderforge.train.loop import train_loop
from coderforge.train.task import PackedLM

from .conftest import tiny_loop, write_shards


class Record(TrainHooks):
    def __init__(self):
        self.calls: list[tuple[int, int]] = []

    def on_step(self, step, rank):
        self.calls.append((step, rank))


def test_on_step_after_every_step(tmp_path):
    data = write_shards(tmp_path / "train", rows=8)
    cfg = tiny_loop(data, seed=0, save_final=False, steps=4, micro_batch_size=1, warmup_steps=0, log_every=2)
    hooks = Record()
    train_loop(cfg, PackedLM.from_config(cfg), hooks=hooks)
    assert hooks.calls == [(1, 0), (2, 0), (3, 0), (4, 0)]


def test_fail_once_raises_the_first_time_only(tmp_path):
    hook = pickle.loads(pickle.dumps(FailOnceAtStep(2, str(tmp_path / "failed"))))  # travels to Ray workers
    hook.on_step(1, 0)
    with pytest.raises(RuntimeError, match="after step 2"):
        hook.on_step(2, 0)
    assert (tmp_path / "failed").exists()
    hook.on_step(2, 0)  # the restarted run goes on


def test_kill_only_on_rank_zero_at_its_step():
    hook = pickle.loads(pickle.dumps(KillAtStep(5)))
    hook.on_step(4, 0)
    hook.on_step(5, 1)  # other ranks live on (the real kill is tested in test_resume)
