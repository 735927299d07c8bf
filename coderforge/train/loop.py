"""The training loop: one plain function, run by Ray Train's ``TorchTrainer`` or standalone.

``train_loop(config)`` (``config`` a plain dict, see ``LOOP_DEFAULTS``) trains a ``Qwen2ForCausalLM``
on packed token shards:

* data: ``ResumableSampler`` order over the shard rows (per-epoch shuffle), rank ``r`` of ``world``
  takes global samples ``i ≡ r (mod world)``; the data position is the global sample index, so a
  resumed run reads exactly the rows the uninterrupted one would;
* document-masked attention (``model.attention_mask_for``): sdpa + dense block-diagonal mask, or
  FlexAttention + a document ``BlockMask`` (``attention: flex``); positions restart per document;
* loss: ``loss.chunked_lm_loss`` on the final hidden states (no full-vocabulary logits);
* parallelism (``strategy``): ``ddp`` (or a single process), ``fsdp2`` (``fully_shard`` per decoder
  layer and the root, bf16 params / fp32 reduce when ``dtype: bfloat16``), ``deepspeed`` (ZeRO-2);
* bf16, activation checkpointing, ``torch.compile`` of each decoder layer and of the loss chunk;
* AdamW (decay on matrices only), gradient clipping, cosine / WSD / WCL learning rate;
* checkpoints every ``checkpoint_every`` steps: model, optimizer, step, data position and every
  rank's RNG state — to Ray Train (``ray.train.report``; a restarted run or a ``FailureConfig``
  retry resumes from ``ray.train.get_checkpoint()``) or, standalone, to ``checkpoint_dir``;
* metrics every ``log_every`` steps: loss, lr, grad norm, tokens/s, MFU (``model.flops_per_token``),
  peak memory.

Nothing here imports Ray unless it runs under Ray, nor pydantic: the GPU machine has neither.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import tempfile
import time
from pathlib import Path

import numpy as np

LOOP_DEFAULTS = {
    "seed": 0, "steps": 10, "micro_batch_size": 1, "grad_accum": 1, "lr": 3e-4, "min_lr_ratio": 0.1,
    "warmup_steps": 0, "weight_decay": 0.1, "grad_clip": 1.0, "schedule": "cosine",
    "wsd_decay_fraction": 0.1, "wcl_linear_fraction": 0.1, "wcl_cosine_end": 0.62,
    "log_every": 1, "checkpoint_every": 0, "strategy": "ddp", "dtype": "float32", "attention": "auto",
    "activation_checkpointing": False, "compile": False, "loss_chunk_tokens": 4096, "fused_adamw": None,
    "model_config": None, "init_from": None, "config_overrides": {}, "checkpoint_dir": None,
    "threads_per_worker": 1, "peak_flops": None, "save_final": True, "kill_at_step": None,
    "fail_once_at_step": None, "fail_marker": None, "data_dir": None,
}


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
        _barrier()
        yield str(tmp)
        _barrier()
        if self.rank == 0:
            final = self.root / f"step-{step:08d}"
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            self.last_checkpoint = str(final)
            for old in sorted(self.root.glob("step-*"))[:-self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        _barrier()

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


def _in_ray() -> bool:
    try:
        import ray.train

        ray.train.get_context().get_world_size()
        return True
    except Exception:
        return False


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def _barrier():
    d = _dist()
    if d is not None:
        d.barrier()


# ---------------------------------------------------------------- batches

def make_batch(shards, rows, device, attention: str):
    """input_ids, position_ids, next-token targets and the document mask for shard rows ``rows``."""
    import torch

    from coderforge.tokens.shards import labels_for, position_ids
    from coderforge.train.loss import shift_targets
    from coderforge.train.model import attention_mask_for, doc_ids

    seq = shards.seq_len
    ids, pos, labels, docs = [], [], [], []
    for i in rows:
        row = shards.row(int(i))
        ids.append(row.tokens.astype(np.int64))
        pos.append(position_ids(row.doc_lens, seq))
        labels.append(labels_for(row, seq))
        docs.append(doc_ids(row.doc_lens, seq))
    t = {k: torch.from_numpy(np.stack(v)) for k, v in
         (("input_ids", ids), ("position_ids", pos), ("labels", labels), ("docs", docs))}
    if device.type == "cuda":
        t = {k: v.pin_memory().to(device, non_blocking=True) for k, v in t.items()}
    else:
        t = {k: v.to(device) for k, v in t.items()}
    targets = shift_targets(t["labels"])
    return {"input_ids": t["input_ids"], "position_ids": t["position_ids"], "targets": targets,
            "attention_mask": attention_mask_for(t["docs"], attention)}


# ---------------------------------------------------------------- model + loss wrapper

def _wrapper_class():
    import torch

    class LMWithLoss(torch.nn.Module):
        """The causal LM and its chunked loss in one module, so DDP/FSDP2/DeepSpeed wrap one forward."""

        def __init__(self, core, chunk: int, compiled_loss: bool):
            super().__init__()
            self.core, self.chunk, self.compiled_loss = core, chunk, compiled_loss

        def forward(self, input_ids, position_ids, attention_mask, targets):
            from coderforge.train.loss import chunked_lm_loss

            out = self.core.model(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask,
                                  use_cache=False)
            return chunked_lm_loss(out.last_hidden_state, self.core.lm_head.weight, targets, self.chunk,
                                   self.compiled_loss)

    return LMWithLoss


def _param_groups(module, weight_decay: float):
    params = [p for p in module.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


def _rng_state():
    import torch

    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st):
    import torch

    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _mem_gb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB


def _ensure_process_group(strategy: str, device) -> tuple[int, int, bool]:
    """(rank, world, started): torchrun / Ray set one up; FSDP2/DeepSpeed alone get a 1-process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return dist.get_rank(), dist.get_world_size(), True
    if strategy in ("fsdp2", "deepspeed"):
        fd, path = tempfile.mkstemp(prefix="cf-pg-")
        os.close(fd)
        os.unlink(path)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=f"file://{path}",
                                rank=0, world_size=1)
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("LOCAL_RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29511")
        return 0, 1, True
    return 0, 1, False


def train_loop(config: dict, reporter=None) -> dict:
    """Train; returns ``{"history": [...], "final": {...}, "checkpoint": path-or-None}`` (rank 0)."""
    import torch

    from coderforge.tokens.shards import ResumableSampler, TokenShards
    from coderforge.train.model import build_model, flops_per_token, peak_flops
    from coderforge.train.schedules import lr_at, schedule_kwargs

    cfg = {**LOOP_DEFAULTS, **config}
    in_ray = reporter is None and _in_ray()
    if torch.cuda.is_available():
        if in_ray:
            import ray.train.torch

            device = ray.train.torch.get_device()
        else:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, int(cfg["threads_per_worker"])))
    strategy = cfg["strategy"]
    if strategy == "deepspeed" and device.type == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    rank, world, started_pg = _ensure_process_group(strategy, device)
    if reporter is None:
        reporter = RayReporter() if in_ray else LocalReporter(cfg["checkpoint_dir"], rank, world)
    attention = cfg["attention"]
    bf16 = cfg["dtype"] == "bfloat16"

    torch.manual_seed(cfg["seed"])
    np.random.seed(cfg["seed"])
    random.seed(cfg["seed"])
    shards = TokenShards(cfg["data_dir"])
    seq = shards.seq_len
    if attention == "auto":
        from coderforge.train.model import VARLEN_FROM

        attention = "flex" if device.type == "cuda" else ("varlen" if seq >= VARLEN_FROM else "sdpa")
    if attention == "flex" and seq % 128:
        attention = "sdpa"
    mb, accum, steps = int(cfg["micro_batch_size"]), int(cfg["grad_accum"]), int(cfg["steps"])
    per_step = mb * accum * world

    core = build_model(cfg["model_config"], cfg["init_from"], cfg["config_overrides"], attention=attention)
    model_cfg = core.config.to_dict()
    if cfg["activation_checkpointing"]:
        core.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg["compile"]:
        for layer in core.model.layers:
            layer.compile(dynamic=False)
    model = _wrapper_class()(core, int(cfg["loss_chunk_tokens"]), bool(cfg["compile"]))
    engine = None
    autocast = contextlib.nullcontext
    if strategy == "deepspeed":
        import deepspeed

        ds_cfg = {
            "train_micro_batch_size_per_gpu": mb, "gradient_accumulation_steps": accum,
            "gradient_clipping": cfg["grad_clip"], "zero_optimization": {"stage": 2},
            "bf16": {"enabled": bf16}, "steps_per_print": 10**9, "wall_clock_breakdown": False,
            "optimizer": {"type": "AdamW", "params": {"lr": cfg["lr"], "betas": [0.9, 0.95], "eps": 1e-8,
                                                      "weight_decay": cfg["weight_decay"], "torch_adam": True}},
        }
        engine, opt, _, _ = deepspeed.initialize(model=model, model_parameters=_param_groups(model, cfg["weight_decay"]),
                                                 config=ds_cfg, dist_init_required=False)
        runner = engine
    else:
        model.to(device)
        if strategy == "fsdp2":
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

            mesh = init_device_mesh(device.type, (world,))
            mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else \
                MixedPrecisionPolicy()
            for layer in core.model.layers:
                fully_shard(layer, mesh=mesh, mp_policy=mp, reshard_after_forward=world > 1)
            fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=False)
            runner = model
        elif world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            runner = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        else:
            runner = model
        if bf16 and strategy != "fsdp2":
            def autocast():
                return torch.autocast(device.type, dtype=torch.bfloat16)
        fused = cfg["fused_adamw"] if cfg["fused_adamw"] is not None else device.type == "cuda"
        opt = torch.optim.AdamW(_param_groups(model, cfg["weight_decay"]), lr=cfg["lr"], betas=(0.9, 0.95),
                                eps=1e-8, fused=bool(fused))

    # ------------------------------------------------------------ resume
    start_step, resumed_metrics, history = 0, {}, []
    with reporter.latest_checkpoint() as ckpt:
        if ckpt:
            meta = json.loads((Path(ckpt) / "trainer_state.json").read_text())
            start_step, resumed_metrics = int(meta["step"]), meta.get("metrics", {})
            history = list(meta.get("history", []))
            if engine is not None:
                engine.load_checkpoint(ckpt, tag="ds", load_module_strict=True)
            else:
                state = torch.load(Path(ckpt) / "state.pt", map_location="cpu", weights_only=False)
                if strategy == "fsdp2":
                    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

                    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                                   options=StateDictOptions(full_state_dict=True))
                else:
                    model.load_state_dict(state["model"])
                    opt.load_state_dict(state["optimizer"])
            rng_file = Path(ckpt) / f"rng-rank{rank}.pt"
            if rng_file.exists():
                _set_rng_state(torch.load(rng_file, weights_only=False))
            if rank == 0:
                print(f"[coderforge.train] resumed from {ckpt} at step {start_step}", flush=True)
    sampler = ResumableSampler(len(shards), cfg["seed"], start=start_step * per_step, rank=rank, world=world)

    def save_checkpoint(step: int, metrics: dict, final: bool) -> str | None:
        with reporter.checkpoint_dir(step) as d:
            torch.save(_rng_state(), Path(d) / f"rng-rank{rank}.pt")
            if engine is not None:
                engine.save_checkpoint(d, tag="ds")
                full = None
            elif strategy == "fsdp2":
                from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

                msd, osd = get_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
                full = {"model": msd, "optimizer": osd}
            else:
                full = {"model": model.state_dict(), "optimizer": opt.state_dict()} if rank == 0 else None
            if rank == 0:
                if full is not None:
                    torch.save(full, Path(d) / "state.pt")
                (Path(d) / "trainer_state.json").write_text(json.dumps(
                    {"step": step, "data_position": step * per_step, "world": world, "metrics": metrics,
                     "strategy": strategy, "history": history}, default=float))
            if final and cfg["save_final"]:
                _save_hf(d, full)
            return d

    def _save_hf(d, full):
        if engine is not None:
            sd = {k[len("core."):]: v.detach().float().cpu() for k, v in model.state_dict().items()}
        elif full is not None:
            sd = {k[len("core."):]: v for k, v in full["model"].items()}
        else:
            return
        if model_cfg.get("tie_word_embeddings"):
            sd.pop("lm_head.weight", None)  # tied to the embedding (copies after a full-state gather)
        if rank == 0:
            from transformers import Qwen2Config, Qwen2ForCausalLM

            conf = Qwen2Config.from_dict(model_cfg)
            conf._attn_implementation = "sdpa"
            with torch.device("meta"):
                shell = Qwen2ForCausalLM(conf)
            shell.save_pretrained(Path(d) / "hf", state_dict={k: v.float().contiguous() for k, v in sd.items()},
                                  safe_serialization=True)

    flops_tok = flops_per_token(model_cfg, seq)
    peak = cfg["peak_flops"] or peak_flops(torch.cuda.get_device_name(device) if device.type == "cuda" else None)
    window_loss, window_tokens, target_tokens_win = [], 0, 0
    total_tokens = start_step * per_step * seq
    t_window = time.perf_counter()
    final_metrics: dict = {}
    sched_kw = schedule_kwargs(cfg)
    if start_step >= steps and reporter.can_checkpoint:  # finished before: publish the final state again (a re-run of a done run)
        final_metrics = dict(resumed_metrics)
        reporter.report(final_metrics, checkpoint=save_checkpoint(steps, final_metrics, True))
    for step in range(start_step, steps):
        lr = lr_at(step, steps, cfg["lr"], cfg["warmup_steps"], cfg["schedule"], cfg["min_lr_ratio"], **sched_kw)
        for group in opt.param_groups:
            group["lr"] = lr
        if engine is None:
            opt.zero_grad(set_to_none=True)
        step_loss = torch.zeros((), device=device)
        for a in range(accum):
            rows = [r for _, r in sampler.take(mb)]
            batch = make_batch(shards, rows, device, attention)
            target_tokens_win += int((batch["targets"] != -100).sum()) if device.type == "cpu" else 0
            sync = contextlib.nullcontext()
            if engine is None and world > 1 and strategy == "ddp" and a < accum - 1:
                sync = runner.no_sync()
            elif strategy == "fsdp2" and world > 1:
                model.set_requires_gradient_sync(a == accum - 1)
            with sync:
                with autocast():
                    loss = runner(**batch)
                if engine is not None:
                    engine.backward(loss)
                    engine.step()
                else:
                    (loss / accum).backward()
            step_loss += loss.detach().float() / accum
        if engine is not None:
            grad_norm = float(engine.get_global_grad_norm() or 0.0)
        else:
            gn = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
            gn = gn.full_tensor() if hasattr(gn, "full_tensor") else gn
            opt.step()
            grad_norm = gn
        window_loss.append(step_loss)
        window_tokens += per_step * seq
        last = step == steps - 1
        if kill_now(cfg, step + 1, rank):
            os.kill(os.getpid(), signal.SIGKILL)
        log_now = (step + 1) % int(cfg["log_every"]) == 0 or last
        ckpt_now = reporter.can_checkpoint and (
            last or (cfg["checkpoint_every"] and (step + 1) % int(cfg["checkpoint_every"]) == 0))
        if not (log_now or ckpt_now):
            continue
        vals = torch.stack([torch.stack(window_loss).mean(), torch.as_tensor(float(grad_norm), device=device),
                            torch.tensor(float(target_tokens_win), device=device)])
        d = _dist()
        if d is not None and world > 1:
            d.all_reduce(vals)
            vals[:2] /= world
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = max(1e-9, time.perf_counter() - t_window)
        total_tokens += window_tokens
        tps = window_tokens / elapsed
        metrics = {"step": step + 1, "loss": float(vals[0]), "lr": lr, "grad_norm": float(vals[1]),
                   "tokens": float(total_tokens), "tokens_per_s": tps, "tokens_per_s_per_worker": tps / world,
                   "mem_peak_gb": _mem_gb(device), "flops_per_token": flops_tok}
        if device.type == "cpu":
            metrics["target_tokens_window"] = float(vals[2])
        if peak:
            metrics["mfu"] = tps * flops_tok / (peak * world)
        window_loss, window_tokens, target_tokens_win = [], 0, 0
        history.append(metrics)
        ckpt_path = save_checkpoint(step + 1, metrics, last) if ckpt_now else None
        reporter.report(metrics, checkpoint=ckpt_path)
        final_metrics = metrics
        if fail_now(cfg, step + 1, rank):
            raise RuntimeError(f"simulated worker failure after step {step + 1}")
        t_window = time.perf_counter()
    if started_pg:
        import torch.distributed as dist

        dist.destroy_process_group()
    return {"history": history, "final": final_metrics,
            "checkpoint": getattr(reporter, "last_checkpoint", None)}


def kill_now(cfg: dict, step: int, rank: int) -> bool:
    """Test hook: SIGKILL this process after ``kill_at_step`` (a real kill, no clean-up)."""
    return cfg.get("kill_at_step") is not None and step == int(cfg["kill_at_step"]) + 1 and rank == 0


def fail_now(cfg: dict, step: int, rank: int) -> bool:
    """Test hook: raise once after ``fail_once_at_step`` (a marker file records that it happened)."""
    k, marker = cfg.get("fail_once_at_step"), cfg.get("fail_marker")
    if k is None or step != int(k) or not marker:
        return False
    if Path(marker).exists():
        return False
    _barrier()
    if rank == 0:
        Path(marker).write_text("failed once")
    _barrier()
    return True
