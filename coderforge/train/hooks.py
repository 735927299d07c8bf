"""Callbacks into the training loop, and the failure injections the resume tests use.

``train_loop(..., hooks=...)`` calls ``hooks.on_step(step, rank)`` on every rank after optimizer
step ``step`` (1-based) is done and, when it was a logging or checkpoint step, reported. Hooks are
plain picklable objects: under Ray Train they travel to the workers in ``train_loop_config`` (and to
a restarted worker group again), so they live in this importable module, not in the tests.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from coderforge.train.parallel import barrier


class TrainHooks:
    """No-op base: override what you need."""

    def on_step(self, step: int, rank: int) -> None:
        return None


@dataclass(frozen=True)
class KillAtStep(TrainHooks):
    """SIGKILL rank 0's process right after optimizer step ``step``: a real kill, no clean-up runs,
    so whatever that step did not checkpoint is lost."""

    step: int

    def on_step(self, step: int, rank: int) -> None:
        if step == self.step and rank == 0:
            os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class FailOnceAtStep(TrainHooks):
    """Raise on every rank after step ``step`` the first time it is reached; the file ``marker``
    records that it happened, so a restarted worker group (Ray Train ``FailureConfig``) goes on."""

    step: int
    marker: str

    def on_step(self, step: int, rank: int) -> None:
        if step != self.step or Path(self.marker).exists():
            return
        barrier()
        if rank == 0:
            Path(self.marker).write_text("failed once")
        barrier()
        raise RuntimeError(f"simulated worker failure after step {step}")
