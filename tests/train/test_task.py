"""The task is the loop's plug point: another loss (and batch source) trains through the same loop."""

from __future__ import annotations

import pickle

import pytest

from coderforge.train.loop import train_loop
from coderforge.train.task import PackedLM

from .conftest import tiny_loop, write_shards


class HalfLoss(PackedLM):
    """A stand-in for another stage: the packed rows, half the loss, a metric of its own."""

    def loss(self, model, batch):
        loss, metrics = super().loss(model, batch)
        return loss * 0.5, metrics | {"rows": batch["input_ids"].new_tensor(batch["input_ids"].shape[0])}


def _cfg(data, steps):
    return tiny_loop(data, seed=5, save_final=False, steps=steps, micro_batch_size=2, grad_accum=2, lr=3e-3,
                     warmup_steps=0, log_every=3)


def test_the_loop_trains_the_tasks_loss_and_reports_its_metrics(tmp_path):
    data = write_shards(tmp_path / "train", rows=8)
    cfg = _cfg(data, steps=3)
    plain = train_loop(cfg, PackedLM.from_config(cfg))["history"]
    half = train_loop(cfg, HalfLoss.from_config(cfg))["history"]
    assert [h["step"] for h in half] == [3]
    assert half[0]["rows_window"] == 3 * 2 * 2  # summed over the window's 3 steps x 2 micro-batches
    assert half[0]["target_tokens_window"] == plain[0]["target_tokens_window"] > 0
    one = _cfg(data, steps=1)  # the first step's loss is the initial model's: exactly halved
    first = [train_loop(one, task.from_config(one))["history"][0]["loss"] for task in (PackedLM, HalfLoss)]
    assert first[1] == pytest.approx(first[0] / 2, rel=1e-6)


def test_packed_lm_batches_resume_at_a_data_position(tmp_path):
    import torch

    data = write_shards(tmp_path / "train", rows=8)
    task = PackedLM(data, seed=1, chunk_tokens=64, compiled_loss=False)
    cpu = torch.device("cpu")
    whole = task.batches(0, rank=0, world=1, micro_batch=2, device=cpu, attention="sdpa")
    seen = [next(whole)["input_ids"] for _ in range(3)]
    later = pickle.loads(pickle.dumps(task)).batches(4, rank=0, world=1, micro_batch=2, device=cpu, attention="sdpa")
    assert torch.equal(next(later)["input_ids"], seen[2])  # samples 4, 5: the third micro-batch
    assert task.seq_len == 64
