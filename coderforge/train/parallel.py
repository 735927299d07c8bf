"""Where a training process runs and how its model is spread over the workers.

* ``place(strategy, in_ray)``: the device (Ray's, ``LOCAL_RANK``'s GPU or the CPU with one thread),
  and the process group (torchrun / Ray set one up; FSDP2 and DeepSpeed alone get a 1-process one);
* ``parallelize(core, loss_fn, cfg, place)``: activation checkpointing, ``torch.compile`` of each
  decoder layer, then the strategy: ``ddp`` (or a single process), ``fsdp2`` (``fully_shard`` per
  decoder layer and the root, bf16 params / fp32 reduce when ``dtype: bfloat16``) or ``deepspeed``
  (ZeRO-2), with AdamW (decay on matrices only). The returned ``Parallel`` runs micro-steps
  (forward + backward with the strategy's gradient-sync rules) and optimizer steps (clipping).

The model and the task's loss are one module (``TaskModule``) so that the strategy wraps a single
forward that returns ``(loss, metrics)``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from coderforge.train.loop_config import LoopConfig


def dist_or_none():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def barrier() -> None:
    d = dist_or_none()
    if d is not None:
        d.barrier()


def in_ray() -> bool:
    try:
        import ray.train

        ray.train.get_context().get_world_size()
        return True
    except Exception:
        return False


# ---------------------------------------------------------------- placement

@dataclass(frozen=True)
class Placement:
    device: Any  # torch.device
    rank: int
    world: int
    started_group: bool  # this process started the process group (and ends it)


def _device(strategy: str, under_ray: bool):
    import torch

    if torch.cuda.is_available():
        if under_ray:
            import ray.train.torch

            device = ray.train.torch.get_device()
        else:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        return device
    torch.set_num_threads(1)  # CPU workers share the node's cores: one intra-op thread each
    if strategy == "deepspeed":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    return torch.device("cpu")


def _process_group(strategy: str, device) -> tuple[int, int, bool]:
    """(rank, world, started): torchrun / Ray set one up; FSDP2/DeepSpeed alone get a 1-process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group(backend)
        return dist.get_rank(), dist.get_world_size(), True
    if strategy in ("fsdp2", "deepspeed"):
        fd, path = tempfile.mkstemp(prefix="cf-pg-")
        os.close(fd)
        os.unlink(path)
        dist.init_process_group(backend, init_method=f"file://{path}", rank=0, world_size=1)
        for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1"),
                           ("MASTER_PORT", "29511")):
            os.environ.setdefault(key, value)
        return 0, 1, True
    return 0, 1, False


def place(strategy: str, under_ray: bool) -> Placement:
    device = _device(strategy, under_ray)
    rank, world, started = _process_group(strategy, device)
    return Placement(device, rank, world, started)


def release(placement: Placement) -> None:
    if placement.started_group:
        import torch.distributed as dist

        dist.destroy_process_group()


def resolve_attention(attention: str, device, seq_len: int) -> str:
    """``auto``: FlexAttention on GPU; on CPU sdpa below ``VARLEN_FROM`` tokens, varlen from there.
    FlexAttention needs rows of whole 128-token blocks, else sdpa."""
    if attention == "auto":
        from coderforge.train.model import VARLEN_FROM

        attention = "flex" if device.type == "cuda" else ("varlen" if seq_len >= VARLEN_FROM else "sdpa")
    if attention == "flex" and seq_len % 128:
        attention = "sdpa"
    return attention


# ---------------------------------------------------------------- the wrapped model

def _task_module_class():
    import torch

    class TaskModule(torch.nn.Module):
        """The causal LM (``core``) and a task's loss in one forward: ``loss_fn(core, batch)``.

        ``loss_fn`` is not a submodule: the state dict holds the model alone (``core.*`` keys)."""

        def __init__(self, core, loss_fn):
            super().__init__()
            self.core, self.loss_fn = core, loss_fn

        def forward(self, **batch):
            return self.loss_fn(self.core, batch)

    return TaskModule


def param_groups(module, weight_decay: float) -> list[dict]:
    params = [p for p in module.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


@dataclass
class Parallel:
    """The wrapped model and its optimizer. ``module`` is the unwrapped ``TaskModule`` (its state dict
    is the checkpoint's), ``runner`` what a forward calls (DDP wrapper, DeepSpeed engine or the module)."""

    module: Any
    runner: Any
    opt: Any
    engine: Any  # the DeepSpeed engine, else None
    strategy: str
    world: int
    bf16_autocast: bool
    device: Any

    def begin_step(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr
        if self.engine is None:
            self.opt.zero_grad(set_to_none=True)

    def _sync(self, last_micro: bool):
        if self.engine is None and self.world > 1 and self.strategy == "ddp" and not last_micro:
            return self.runner.no_sync()
        if self.strategy == "fsdp2" and self.world > 1:
            self.module.set_requires_gradient_sync(last_micro)
        return contextlib.nullcontext()

    def micro_step(self, batch: dict, accum: int, last_micro: bool):
        """Forward and backward of one micro-batch (gradients scaled by ``1/accum``): ``(loss, metrics)``."""
        import torch

        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16_autocast else \
            contextlib.nullcontext()
        with self._sync(last_micro):
            with autocast:
                loss, metrics = self.runner(**batch)
            if self.engine is not None:
                self.engine.backward(loss)
                self.engine.step()
            else:
                (loss / accum).backward()
        return loss, metrics

    def finish_step(self, grad_clip: float):
        """Clip and step the optimizer (DeepSpeed did both in its last micro-step); the gradient norm."""
        import torch

        if self.engine is not None:
            return float(self.engine.get_global_grad_norm() or 0.0)
        gn = torch.nn.utils.clip_grad_norm_(self.module.parameters(), grad_clip)
        gn = gn.full_tensor() if hasattr(gn, "full_tensor") else gn
        self.opt.step()
        return gn


def _deepspeed(model, cfg: LoopConfig, bf16: bool):
    import deepspeed

    ds_cfg = {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size, "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": cfg.grad_clip, "zero_optimization": {"stage": 2},
        "bf16": {"enabled": bf16}, "steps_per_print": 10**9, "wall_clock_breakdown": False,
        "optimizer": {"type": "AdamW", "params": {"lr": cfg.lr, "betas": [0.9, 0.95], "eps": 1e-8,
                                                  "weight_decay": cfg.weight_decay, "torch_adam": True}},
    }
    engine, opt, _, _ = deepspeed.initialize(model=model, model_parameters=param_groups(model, cfg.weight_decay),
                                             config=ds_cfg, dist_init_required=False)
    return engine, opt


def _fsdp2(model, core, world: int, device, bf16: bool) -> None:
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (world,))
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else \
        MixedPrecisionPolicy()
    for layer in core.model.layers:
        fully_shard(layer, mesh=mesh, mp_policy=mp, reshard_after_forward=world > 1)
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=False)


def parallelize(core, loss_fn, cfg: LoopConfig, placement: Placement) -> Parallel:
    """Wrap ``core`` (a ``Qwen2ForCausalLM``) and ``loss_fn`` for ``cfg.strategy``, with its optimizer."""
    import torch

    if cfg.activation_checkpointing:
        core.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.compile:
        for layer in core.model.layers:
            layer.compile(dynamic=False)
    model = _task_module_class()(core, loss_fn)
    device, world, bf16 = placement.device, placement.world, cfg.dtype == "bfloat16"
    if cfg.strategy == "deepspeed":
        engine, opt = _deepspeed(model, cfg, bf16)
        return Parallel(model, engine, opt, engine, cfg.strategy, world, False, device)
    model.to(device)
    runner = model
    if cfg.strategy == "fsdp2":
        _fsdp2(model, core, world, device, bf16)
    elif world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        runner = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8,
                            fused=device.type == "cuda")
    return Parallel(model, runner, opt, None, cfg.strategy, world, bf16 and cfg.strategy != "fsdp2", device)
