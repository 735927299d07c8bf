"""Checkpoints of a training run: where they go (reporters), what they hold, resume, and the HF export.

A checkpoint directory holds ``state.pt`` (full model + optimizer state; DeepSpeed: its own ``ds/``
files instead), ``rng-rank{r}.pt`` (every rank's torch / numpy / Python RNG state),
``trainer_state.json`` (step, data position = global sample index, world size, strategy, the
metrics of that step and every logged step since the start) and, for the final one, ``hf/`` (the
weights as a Hugging Face ``Qwen2ForCausalLM``).

Reporters: ``RayReporter`` under Ray Train (``ray.train.report`` with the checkpoint; a restarted run
or a ``FailureConfig`` retry resumes from ``ray.train.get_checkpoint()``), ``LocalReporter``
standalone (``root/step-NNNNNNNN``, complete ones only, the newest ``keep``).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from coderforge.train.parallel import Parallel, barrier

# ---------------------------------------------------------------- reporters


class LocalReporter:
    """Standalone: checkpoints under ``root/step-NNNNNNNN`` (complete ones only), metrics in memory."""

    def __init__(self, root: str | None, rank: int = 0, world: int = 1, keep: int = 2):
        self.root = Path(root) if root else None
        self.rank, self.world, self.keep = rank, world, keep
        self.history: list[dict] = []
        self.last_checkpoint: str | None = None
        self.can_checkpoint = self.root is not None

    @contextlib.contextmanager
    def latest_checkpoint(self):
        done = sorted(self.root.glob("step-*")) if self.root and self.root.exists() else []
        yield str(done[-1]) if done else None

    @contextlib.contextmanager
    def checkpoint_dir(self, step: int):
        """Every rank writes into one shared temporary directory; rank 0 publishes it atomically."""
        tmp = self.root / f".tmp-step-{step:08d}"
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        barrier()
        yield str(tmp)
        barrier()
        if self.rank == 0:
            final = self.root / f"step-{step:08d}"
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            self.last_checkpoint = str(final)
            for old in sorted(self.root.glob("step-*"))[:-self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        barrier()

    def report(self, metrics: dict, checkpoint: str | None = None) -> None:
        if self.rank == 0:
            self.history.append(dict(metrics))


class RayReporter:
    def __init__(self):
        import ray.train

        self._train = ray.train
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.history: list[dict] = []
        self._pending: str | None = None
        self.can_checkpoint = True

    @contextlib.contextmanager
    def latest_checkpoint(self):
        ckpt = self._train.get_checkpoint()
        if ckpt is None:
            yield None
            return
        with ckpt.as_directory() as d:
            yield d

    @contextlib.contextmanager
    def checkpoint_dir(self, step: int):
        tmp = tempfile.mkdtemp(prefix=f"cf-ckpt-{step}-r{self.rank}-")
        self._pending = tmp
        yield tmp

    def report(self, metrics: dict, checkpoint: str | None = None) -> None:
        ck = self._train.Checkpoint.from_directory(checkpoint) if checkpoint else None
        self._train.report(metrics, checkpoint=ck)
        if checkpoint:
            shutil.rmtree(checkpoint, ignore_errors=True)
        self.history.append(dict(metrics))


def default_reporter(under_ray: bool, checkpoint_dir: str | None, rank: int, world: int):
    return RayReporter() if under_ray else LocalReporter(checkpoint_dir, rank, world)


# ---------------------------------------------------------------- RNG

def rng_state() -> dict:
    import torch

    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    import torch

    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def seed_everything(seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


# ---------------------------------------------------------------- save / resume

@dataclass
class RunState:
    """Where a run stands: the last finished step, its metrics and every logged step so far."""

    step: int = 0
    metrics: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)


class Checkpointer:
    """Saves and restores one run's checkpoints through ``reporter`` (rank ``rank`` of ``par.world``).

    ``per_step`` samples are consumed per optimizer step (all ranks), so the data position of step
    ``s`` is ``s * per_step``. ``model_config`` is the trained model's config dict (HF export)."""

    def __init__(self, reporter, par: Parallel, rank: int, model_config: dict, per_step: int, save_final: bool):
        self.reporter, self.par, self.rank = reporter, par, rank
        self.model_config, self.per_step, self.save_final = model_config, per_step, save_final

    @property
    def enabled(self) -> bool:
        return bool(self.reporter.can_checkpoint)

    def resume(self) -> RunState:
        """Load the newest checkpoint the reporter has (model, optimizer, this rank's RNG); its run state."""
        with self.reporter.latest_checkpoint() as ckpt:
            if not ckpt:
                return RunState()
            meta = json.loads((Path(ckpt) / "trainer_state.json").read_text())
            self._load_weights(ckpt)
            rng_file = Path(ckpt) / f"rng-rank{self.rank}.pt"
            if rng_file.exists():
                import torch

                set_rng_state(torch.load(rng_file, weights_only=False))
            state = RunState(int(meta["step"]), meta.get("metrics", {}), list(meta.get("history", [])))
            if self.rank == 0:
                print(f"[coderforge.train] resumed from {ckpt} at step {state.step}", flush=True)
            return state

    def _load_weights(self, ckpt: str) -> None:
        import torch

        par = self.par
        if par.engine is not None:
            par.engine.load_checkpoint(ckpt, tag="ds", load_module_strict=True)
            return
        state = torch.load(Path(ckpt) / "state.pt", map_location="cpu", weights_only=False)
        if par.strategy == "fsdp2":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

            set_state_dict(par.module, par.opt, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                           options=StateDictOptions(full_state_dict=True))
        else:
            par.module.load_state_dict(state["model"])
            par.opt.load_state_dict(state["optimizer"])

    def _full_state(self) -> dict | None:
        """The full model + optimizer state on rank 0 (FSDP2: gathered on every rank); None for DeepSpeed."""
        par = self.par
        if par.engine is not None:
            return None
        if par.strategy == "fsdp2":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

            msd, osd = get_state_dict(par.module, par.opt,
                                      options=StateDictOptions(full_state_dict=True, cpu_offload=True))
            return {"model": msd, "optimizer": osd}
        return {"model": par.module.state_dict(), "optimizer": par.opt.state_dict()} if self.rank == 0 else None

    def save(self, step: int, metrics: dict, history: list[dict], final: bool) -> str:
        """Write the checkpoint of ``step`` (every rank takes part); the directory to report."""
        import torch

        par = self.par
        with self.reporter.checkpoint_dir(step) as d:
            torch.save(rng_state(), Path(d) / f"rng-rank{self.rank}.pt")
            if par.engine is not None:
                par.engine.save_checkpoint(d, tag="ds")
            full = self._full_state()
            if self.rank == 0:
                if full is not None:
                    torch.save(full, Path(d) / "state.pt")
                (Path(d) / "trainer_state.json").write_text(json.dumps(
                    {"step": step, "data_position": step * self.per_step, "world": par.world, "metrics": metrics,
                     "strategy": par.strategy, "history": history}, default=float))
            if final and self.save_final:
                self.export_hf(Path(d) / "hf", full)
            return d

    def export_hf(self, out: Path, full: dict | None) -> None:
        """The model's weights as a Hugging Face ``Qwen2ForCausalLM`` checkpoint (rank 0 writes)."""
        import torch

        if self.par.engine is not None:
            sd = {k[len("core."):]: v.detach().float().cpu() for k, v in self.par.module.state_dict().items()}
        elif full is not None:
            sd = {k[len("core."):]: v for k, v in full["model"].items()}
        else:
            return
        if self.model_config.get("tie_word_embeddings"):
            sd.pop("lm_head.weight", None)  # tied to the embedding (copies after a full-state gather)
        if self.rank == 0:
            from transformers import Qwen2Config, Qwen2ForCausalLM

            conf = Qwen2Config.from_dict(self.model_config)
            conf._attn_implementation = "sdpa"
            with torch.device("meta"):
                shell = Qwen2ForCausalLM(conf)
            shell.save_pretrained(out, state_dict={k: v.float().contiguous() for k, v in sd.items()},
                                  safe_serialization=True)
