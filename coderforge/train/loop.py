"""The training loop, shared by every training stage: run by Ray Train's ``TorchTrainer`` or standalone.

``train_loop(cfg, task, hooks=None)`` trains a ``Qwen2ForCausalLM`` (``cfg.model_config`` or
``cfg.init_from``) on the batches and loss of ``task`` (``task.TrainTask``; pretraining's is
``task.PackedLM``), with the parts in their own modules:

* ``parallel``: device, process group, activation checkpointing, ``torch.compile``, DDP / FSDP2 /
  DeepSpeed ZeRO-2 wrapping, AdamW, gradient clipping;
* ``checkpoint``: checkpoints every ``checkpoint_every`` steps and at the end (model, optimizer,
  step, data position, every rank's RNG state) to Ray Train or ``cfg.checkpoint_dir``, resume from
  the newest one, the final Hugging Face export;
* ``schedules``: cosine / WSD / WCL / constant learning rate;
* here: the step itself and the metrics every ``log_every`` steps — loss, lr, grad norm, tokens/s,
  MFU (``model.flops_per_token``), peak memory and the task's own sums — reported to the reporter
  and, on rank 0, to the live progress view (``coderforge.progress``);
* ``hooks.on_step(step, rank)`` after every optimizer step (``hooks.TrainHooks``).

Nothing here imports Ray unless it runs under Ray, nor pydantic: the GPU machine has neither.
"""

from __future__ import annotations

import contextlib
import time

from coderforge import progress
from coderforge.train import parallel
from coderforge.train.checkpoint import Checkpointer, RunState, default_reporter, seed_everything
from coderforge.train.hooks import TrainHooks
from coderforge.train.loop_config import LoopConfig
from coderforge.train.task import TrainTask


def _mem_gb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB


class Meter:
    """The metrics of one logging window (the steps since the last report), averaged over ranks."""

    def __init__(self, where: parallel.Placement, model_config: dict, seq_len: int, per_step: int,
                 steps_done: int, peak: float | None):
        import torch

        from coderforge.train.model import flops_per_token, peak_flops

        self.where = where
        self.flops_tok = flops_per_token(model_config, seq_len)
        dev = where.device
        self.peak = peak or peak_flops(torch.cuda.get_device_name(dev) if dev.type == "cuda" else None)
        self.tokens_per_step = per_step * seq_len
        self.total_tokens = steps_done * self.tokens_per_step
        self.losses, self.sums, self.window_tokens, self.grad_norm = [], {}, 0, 0.0
        self.restart_clock()

    def restart_clock(self) -> None:
        self.t0 = time.perf_counter()

    def add_batch(self, metrics: dict) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums[k] + v.detach() if k in self.sums else v.detach()

    def add_step(self, step_loss, grad_norm) -> None:
        self.losses.append(step_loss)
        self.window_tokens += self.tokens_per_step
        self.grad_norm = grad_norm

    def summary(self, step: int, lr: float) -> dict:
        """The window's metrics (a collective: every rank calls it); starts the next window."""
        import torch

        dev, world = self.where.device, self.where.world
        vals = torch.stack([torch.stack(self.losses).mean(), torch.as_tensor(float(self.grad_norm), device=dev),
                            *(s.float() for s in self.sums.values())])
        d = parallel.dist_or_none()
        if d is not None and world > 1:
            d.all_reduce(vals)
            vals[:2] /= world
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        elapsed = max(1e-9, time.perf_counter() - self.t0)
        self.total_tokens += self.window_tokens
        tps = self.window_tokens / elapsed
        metrics = {"step": step, "loss": float(vals[0]), "lr": lr, "grad_norm": float(vals[1]),
                   "tokens": float(self.total_tokens), "tokens_per_s": tps, "tokens_per_s_per_worker": tps / world,
                   "mem_peak_gb": _mem_gb(dev), "flops_per_token": self.flops_tok}
        metrics.update({f"{k}_window": float(v) for k, v in zip(self.sums, vals[2:], strict=True)})
        if self.peak:
            metrics["mfu"] = tps * self.flops_tok / (self.peak * world)
        self.losses, self.sums, self.window_tokens = [], {}, 0
        return metrics


class Clock:
    """Wall-clock marks of this process's run (``time.time()``, comparable with the driver's): entered the
    loop, placed (device and process group), model ready (built, wrapped, resumed), first and last optimizer
    step done; and the seconds spent saving checkpoints. Reported with the last step's metrics as
    ``time.*`` (``launch.phase_metrics`` turns them into the step's start-up breakdown)."""

    def __init__(self):
        self.marks = {"loop_entered": time.time()}
        self.checkpoint_s = self.final_checkpoint_s = 0.0

    def mark(self, name: str) -> None:
        self.marks.setdefault(name, time.time())

    def metrics(self) -> dict[str, float]:
        return {**{f"time.{k}": v for k, v in self.marks.items()}, "time.checkpoint_s": self.checkpoint_s,
                "time.final_checkpoint_s": self.final_checkpoint_s}


def _report(cfg: LoopConfig, step: int, lr: float, meter: Meter, ckpt: Checkpointer, run: RunState,
            rank: int, clock: Clock) -> None:
    """After optimizer step ``step`` (1-based): log every ``log_every`` steps, checkpoint every
    ``checkpoint_every`` steps, both at the last step."""
    last = step == cfg.steps
    log_now = step % cfg.log_every == 0 or last
    ckpt_now = ckpt.enabled and (last or bool(cfg.checkpoint_every and step % cfg.checkpoint_every == 0))
    if last:
        clock.mark("last_step")
    if not (log_now or ckpt_now):
        return
    metrics = meter.summary(step, lr)
    run.history.append(metrics)
    path = None
    if ckpt_now:
        t = time.perf_counter()
        path = ckpt.save(step, metrics, run.history, last)
        clock.checkpoint_s += time.perf_counter() - t
        clock.final_checkpoint_s = time.perf_counter() - t if last else 0.0
    ckpt.reporter.report({**metrics, **clock.metrics()} if last else metrics, checkpoint=path)
    run.metrics = metrics
    if rank == 0:
        with contextlib.suppress(OSError):  # the live view is never worth failing a run for
            progress.report(loss=metrics["loss"], step=step, total_steps=cfg.steps, tokens=int(metrics["tokens"]))
    meter.restart_clock()


def train_loop(cfg: LoopConfig, task: TrainTask, hooks: TrainHooks | None = None, reporter=None) -> dict:
    """Train; returns ``{"history": [...], "final": {...}, "checkpoint": path-or-None}`` (rank 0).
    ``reporter``: where metrics and checkpoints go (default: Ray Train under Ray, else ``LocalReporter``)."""
    import torch

    from coderforge.train.model import build_model
    from coderforge.train.schedules import lr_at, schedule_kwargs

    clock = Clock()
    under_ray = reporter is None and parallel.in_ray()
    where = parallel.place(cfg.strategy, under_ray)
    clock.mark("placed")
    reporter = reporter or default_reporter(under_ray, cfg.checkpoint_dir, where.rank, where.world)
    hooks = hooks or TrainHooks()
    seed_everything(cfg.seed)
    attention = parallel.resolve_attention(cfg.attention, where.device, task.seq_len)
    core = build_model(cfg.model_config, cfg.init_from, cfg.config_overrides, attention=attention)
    model_cfg = core.config.to_dict()
    par = parallel.parallelize(core, task.loss, cfg, where)
    per_step = cfg.micro_batch_size * cfg.grad_accum * where.world
    ckpt = Checkpointer(reporter, par, where.rank, model_cfg, per_step, cfg.save_final)
    run = ckpt.resume()
    batches = task.batches(run.step * per_step, where.rank, where.world, cfg.micro_batch_size, where.device,
                           attention)
    meter = Meter(where, model_cfg, task.seq_len, per_step, run.step, cfg.peak_flops)
    clock.mark("model_ready")
    if run.step >= cfg.steps and ckpt.enabled:  # finished before: publish the final state again (a re-run)
        reporter.report(run.metrics, checkpoint=ckpt.save(cfg.steps, run.metrics, run.history, True))
    sched = schedule_kwargs(vars(cfg))
    for step in range(run.step, cfg.steps):
        lr = lr_at(step, cfg.steps, cfg.lr, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio, **sched)
        par.begin_step(lr)
        step_loss = torch.zeros((), device=where.device)
        for a in range(cfg.grad_accum):
            loss, metrics = par.micro_step(next(batches), cfg.grad_accum, last_micro=a == cfg.grad_accum - 1)
            step_loss += loss.detach().float() / cfg.grad_accum
            meter.add_batch(metrics)
        meter.add_step(step_loss, par.finish_step(cfg.grad_clip))
        clock.mark("first_step")
        _report(cfg, step + 1, lr, meter, ckpt, run, where.rank, clock)
        hooks.on_step(step + 1, where.rank)
    parallel.release(where)
    return {"history": run.history, "final": run.metrics, "checkpoint": getattr(reporter, "last_checkpoint", None)}
