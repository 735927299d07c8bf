"""Where a training step's time goes: the loop's wall-clock marks and the driver's phase breakdown."""

from __future__ import annotations

import pytest

from coderforge.train.checkpoint import LocalReporter
from coderforge.train.launch import PHASES, phase_metrics
from coderforge.train.loop import train_loop
from coderforge.train.task import PackedLM

from .conftest import tiny_loop, write_shards


def test_phases_from_marks():
    marks = {"time.called": 100.0, "time.ray_ready": 105.0, "time.loop_entered": 120.0, "time.placed": 121.0,
             "time.model_ready": 123.0, "time.first_step": 124.0, "time.last_step": 134.0,
             "time.checkpoint_s": 3.0, "time.final_checkpoint_s": 1.0, "time.returned": 140.0, "loss": 2.0}
    p = phase_metrics(marks)
    assert p == {"phase.ray_start_s": 5.0, "phase.workers_start_s": 15.0, "phase.setup_s": 3.0,
                 "phase.first_step_s": 1.0, "phase.steps_s": 8.0,  # 10 s less the 2 s of intermediate checkpoints
                 "phase.teardown_s": 5.0, "phase.checkpoint_s": 3.0,  # 6 s less the final checkpoint's 1 s
                 "phase.total_s": 40.0, "phase.overhead_s": 32.0}
    parts = sum(v for k, v in p.items() if k not in ("phase.total_s", "phase.overhead_s"))
    assert parts == pytest.approx(p["phase.total_s"])  # the phases cover the whole fit, nothing counted twice
    assert phase_metrics({k: v for k, v in marks.items() if k != "time.first_step"}) == {}
    assert phase_metrics(None) == {}
    assert [name for name, _, _ in PHASES][0] == "ray_start"


def test_the_loop_reports_its_marks_with_the_last_step_only(tmp_path):
    data = write_shards(tmp_path / "train", rows=16)
    loop = tiny_loop(data, 0, checkpoint_dir=str(tmp_path / "ckpt"), steps=4, micro_batch_size=2, log_every=1,
                     checkpoint_every=2, lr=1e-3, warmup_steps=0)
    reporter = LocalReporter(str(tmp_path / "ckpt"))
    out = train_loop(loop, PackedLM.from_config(loop), reporter=reporter)
    reports = reporter.history
    assert [r["step"] for r in reports] == [1, 2, 3, 4]
    assert not any(k.startswith("time.") for r in reports[:-1] for k in r)
    last = reports[-1]
    order = [last[f"time.{m}"] for m in ("loop_entered", "placed", "model_ready", "first_step", "last_step")]
    assert order == sorted(order)
    assert last["time.checkpoint_s"] > last["time.final_checkpoint_s"] > 0  # two saves, the last one final
    assert not any(k.startswith("time.") for row in out["history"] for k in row)  # history rows stay clean
