"""Pretraining throughput: our engine against plain Hugging Face training, same packed rows, one run.

Phases (each in its own subprocess, so a phase's peak memory and any failure stay its own):

* ``hf``        – the baseline: plain ``transformers`` ``Qwen2ForCausalLM`` training, ``sdpa``
  attention, bf16 autocast over fp32 weights, fused AdamW, HF's own loss on full logits, causal
  attention over the whole packed row (no document mask: plain HF has none for sdpa);
* ``ours``      – ``coderforge.train.loop.train_loop`` standalone: FlexAttention with a document
  ``BlockMask`` (each token sees only its own document, positions restart per document), chunked
  cross-entropy (no full-vocabulary logits), bf16 autocast, fused AdamW, ``torch.compile`` of the
  decoder layers and of the loss chunk;
* ``ours`` again at the repo-level length (32K by default).

All phases train the same shape (Qwen2.5-Coder 0.5B by default) on the same synthetic packed rows:
documents of log-normal length (median ~700 tokens, a long tail up to the row length, like source
files) packed back to back, split across rows where they do not fit, as ``coderforge pack`` does.

MFU = tokens/s × FLOPs/token ÷ peak, FLOPs/token = 6·N + 12·L·d·S (``coderforge.train.model.
flops_per_token``: N all parameters with the tied embedding counted once, L layers, d hidden size,
S row length; the attention term counts full S×S score and value products for every phase, the
convention under which the ~31 % baseline was measured). Peak: 989 TFLOP/s dense bf16 (H100 SXM).

Needs only torch, transformers, numpy and ``coderforge.train`` / ``coderforge.tokens`` (no Ray,
MLflow or pydantic), so it runs on the GPU machine. ``--smoke`` runs a debug model on CPU.

    python benchmarks/pretrain_throughput.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VOCAB_REAL = 151_643  # tokens the Qwen tokenizer produces (the embedding is padded to 151,936)


def write_rows(out_dir: str, rows: int, seq_len: int, seed: int, vocab: int, doc_median: float = 700.0) -> dict:
    """Synthetic packed rows (real ``TokenShardWriter`` format); returns document-length stats.

    Document lengths are log-normal (median ``doc_median`` tokens, sigma 1.1): 700 resembles source
    files; repo-level samples (whole repositories) are far longer, e.g. ``--long-doc-median 16384``."""
    from coderforge.tokens.shards import TokenShardWriter

    rng = np.random.default_rng(seed)
    w = TokenShardWriter(out_dir, seq_len=seq_len, pad_id=0, eos_id=1, vocab_size=vocab, rows_per_shard=256)
    lens_all, row_toks, row_lens = [], [], []
    pending = 0
    while len(row_toks) < rows:
        if pending == 0:
            pending = int(np.clip(rng.lognormal(mean=np.log(doc_median), sigma=1.1), 16, 4 * seq_len))
            lens_all.append(pending)
        used = sum(row_lens)
        take = min(pending, seq_len - used)
        row_lens.append(take)
        pending -= take
        if sum(row_lens) == seq_len:
            toks = rng.integers(2, vocab, size=seq_len, dtype=np.int64).astype(np.uint32)
            w.add_row(toks, row_lens)
            row_toks.append(1)
            row_lens = []
    w.close()
    arr = np.asarray(lens_all)
    return {"documents": int(arr.size), "doc_len_median": float(np.median(arr)), "doc_len_mean": float(arr.mean()),
            "doc_len_p90": float(np.percentile(arr, 90))}


def attention_fraction(data_dir: str) -> float:
    """Σ len² / S² over rows: the share of full-row causal attention a document mask leaves."""
    from coderforge.tokens.shards import TokenShards

    sh = TokenShards(data_dir)
    vals = [float(np.sum(np.asarray(sh.row(i).doc_lens, dtype=np.float64) ** 2)) / sh.seq_len ** 2
            for i in range(len(sh))]
    return float(np.mean(vals))


# ---------------------------------------------------------------- phases (run in a subprocess)

def phase_hf(args) -> dict:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from coderforge.tokens.shards import TokenShards, labels_for
    from coderforge.train.model import flops_per_token, peak_flops, qwen2_config_dict

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    sh = TokenShards(args.data)
    conf = qwen2_config_dict(args.size, int(sh.meta["vocab_size"]), sh.seq_len)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**conf)).to(dev)
    model.config._attn_implementation = "sdpa"
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=dev.type == "cuda")
    mb = args.micro_batch

    def batch(step):
        rows = [(step * mb + j) % len(sh) for j in range(mb)]
        ids = np.stack([sh.row(r).tokens.astype(np.int64) for r in rows])
        lab = np.stack([labels_for(sh.row(r), sh.seq_len) for r in rows])
        return torch.from_numpy(ids).to(dev, non_blocking=True), torch.from_numpy(lab).to(dev, non_blocking=True)

    def one(step):
        ids, lab = batch(step)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            out = model(input_ids=ids, labels=lab)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss.detach()

    for s in range(args.warmup):
        one(s)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    losses = [one(args.warmup + s) for s in range(args.steps)]
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    tokens = args.steps * mb * sh.seq_len
    tps = tokens / dt
    ft = flops_per_token(model.config.to_dict(), sh.seq_len)
    peak = peak_flops(torch.cuda.get_device_name() if dev.type == "cuda" else None)
    return {"phase": "hf", "seq_len": sh.seq_len, "micro_batch": mb, "steps_timed": args.steps,
            "tokens_per_s": tps, "flops_per_token": ft, "mfu": tps * ft / peak if peak else None,
            "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None,
            "final_loss": float(losses[-1]), "document_mask": False}


def phase_ours(args) -> dict:
    import torch

    from coderforge.tokens.shards import TokenShards
    from coderforge.train.checkpoint import LocalReporter
    from coderforge.train.loop import train_loop
    from coderforge.train.loop_config import LoopConfig
    from coderforge.train.model import qwen2_config_dict
    from coderforge.train.task import PackedLM

    sh = TokenShards(args.data)
    on_gpu = torch.cuda.is_available()
    window = max(1, args.steps // 3)
    total = 4 * window  # four equal windows: the first is warm-up (compilation), the last three are timed
    cfg = LoopConfig(  # every value spelled out: the loop has no defaults (the recipe's are the same)
        data_dir=args.data, model_config=qwen2_config_dict(args.size, int(sh.meta["vocab_size"]), sh.seq_len),
        init_from=None, config_overrides={}, seed=0, steps=total, micro_batch_size=args.micro_batch, grad_accum=1,
        lr=3e-4, min_lr_ratio=0.1, warmup_steps=0, weight_decay=0.1, grad_clip=1.0, schedule="constant",
        anneal_steps=0, anneal_shape="linear", anneal_mix={}, anneal_dir=None, wcl_cosine_end=0.62, log_every=window,
        checkpoint_every=0,
        strategy=args.strategy, dtype="bfloat16" if on_gpu else "float32", attention="flex" if on_gpu else "sdpa",
        activation_checkpointing=args.ac, compile=bool(args.compile and on_gpu), loss_chunk_tokens=args.loss_chunk,
        peak_flops=None, checkpoint_dir=None, save_final=False)
    rep = LocalReporter(None)
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    if args.profile and on_gpu:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            out = train_loop(cfg, PackedLM.from_config(cfg), reporter=rep)
        kernels: dict[str, float] = {}
        for ev in prof.key_averages():
            if ev.device_time_total > 0:
                kernels[ev.key[:90]] = kernels.get(ev.key[:90], 0.0) + ev.device_time_total / 1e3
        total_ms = sum(kernels.values())
        profile_top = [(k, round(v, 1), round(100 * v / total_ms, 1))
                       for k, v in sorted(kernels.items(), key=lambda kv: -kv[1])[:25]]
    else:
        out = train_loop(cfg, PackedLM.from_config(cfg), reporter=rep)
        profile_top = None
    hist = out["history"]
    timed = [h for h in hist if h["step"] > window]
    tps = float(np.median([h["tokens_per_s"] for h in timed])) if timed else float("nan")
    ft = hist[-1]["flops_per_token"]
    from coderforge.train.model import peak_flops

    peak = peak_flops(torch.cuda.get_device_name() if on_gpu else None)
    return {"phase": "ours", "seq_len": sh.seq_len, "micro_batch": args.micro_batch, "steps_timed": 3 * window,
            "tokens_per_s": tps, "tokens_per_s_windows": [h["tokens_per_s"] for h in hist],
            "flops_per_token": ft, "mfu": tps * ft / peak if peak else None,
            "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None,
            "final_loss": hist[-1]["loss"], "document_mask": True, "compile": cfg.compile,
            "activation_checkpointing": args.ac, "attention": cfg.attention, "strategy": args.strategy,
            "loss_chunk_tokens": args.loss_chunk, "profile_top_kernels_ms_pct": profile_top}


def phase_check(args) -> dict:
    """Correctness on the device: FlexAttention + document BlockMask vs sdpa + dense mask, same weights/row."""
    import torch

    from coderforge.tokens.shards import TokenShards
    from coderforge.train.loss import token_losses
    from coderforge.train.model import build_model, qwen2_config_dict
    from coderforge.train.task import make_batch

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sh = TokenShards(args.data)
    conf = qwen2_config_dict("debug-small", int(sh.meta["vocab_size"]), sh.seq_len)
    out = {"phase": "check", "seq_len": sh.seq_len}
    losses = {}
    for att in ("sdpa", "flex") if dev.type == "cuda" else ("sdpa",):
        torch.manual_seed(0)
        m = build_model(conf, attention=att).to(dev)
        b = make_batch(sh, [0, 1], dev, att)
        with torch.no_grad():
            h = m.model(input_ids=b["input_ids"], position_ids=b["position_ids"],
                        attention_mask=b["attention_mask"]).last_hidden_state
            losses[att] = token_losses(h, m.lm_head.weight, b["targets"]).double()
    if "flex" in losses:
        ref, got = losses["sdpa"], losses["flex"]
        out["rel_err_flex_vs_dense"] = float((got - ref).norm() / ref.norm())
        out["max_abs_err"] = float((got - ref).abs().max())
    return out


# ---------------------------------------------------------------- driver

def run_phase(name: str, data: str, extra: list[str], log) -> dict:
    cmd = [sys.executable, __file__, "--phase", name, "--data", data, *extra]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    log.write(f"$ {' '.join(cmd)}\n{p.stdout}\n{p.stderr}\n")
    log.flush()
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("RESULT "):
            res = json.loads(line[len("RESULT "):])
            res["wall_s"] = time.time() - t0
            return res
    return {"phase": name, "error": (p.stderr or p.stdout)[-2000:], "wall_s": time.time() - t0}


def environment() -> dict:
    """torch/transformers versions and the device name (an ``error`` entry when they cannot be read)."""
    env = {}
    try:
        import torch

        env = {"torch": torch.__version__, "device": torch.cuda.get_device_name() if torch.cuda.is_available()
               else "cpu"}
        import transformers

        env["transformers"] = transformers.__version__
    except Exception as e:  # pragma: no cover - reported, not fatal
        env["error"] = repr(e)
    return env


def table_row(r: dict) -> str:
    """One phase's row of the markdown results table."""
    if r.get("phase") == "check":
        return (f"| check (flex vs dense mask, per-token loss) | {r.get('seq_len')} | 2 | True | "
                f"rel err {r.get('rel_err_flex_vs_dense', r.get('error', 'n/a'))} | | | | | |")
    if "tokens_per_s" not in r:
        return f"| {r['phase']} | — | — | — | failed: {r.get('error', '')[-200:]!r} | | | | | |"
    mfu = " | ".join(f"{100 * r[k]:.1f}%" if r.get(k) else "—" for k in ("mfu", "mfu_doc", "mfu_6n"))
    mem = f"{r['peak_mem_gb']:.1f}" if r.get("peak_mem_gb") else "—"
    sp = f"{r['speedup_vs_hf']:.2f}×" if r.get("speedup_vs_hf") else "—"
    return (f"| {r['phase']} | {r['seq_len']} | {r['micro_batch']} | {r['document_mask']} | "
            f"{r['tokens_per_s']:,.0f} | {mfu} | {mem} | {sp} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phase", choices=["hf", "ours", "check"])
    ap.add_argument("--data")
    ap.add_argument("--size", default="0.5B")
    ap.add_argument("--seq", type=int, default=8192)
    ap.add_argument("--long-seq", type=int, default=32768)
    ap.add_argument("--micro-batch", type=int, default=2)
    ap.add_argument("--long-micro-batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--loss-chunk", type=int, default=8192)
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--ac", action="store_true", help="activation checkpointing")
    ap.add_argument("--profile", action="store_true", help="CUDA kernel-time table of the ours phases")
    ap.add_argument("--strategy", default="ddp", choices=["ddp", "fsdp2"],
                    help="engine parallelism (one GPU: ddp = no wrapper; fsdp2 = fully_shard, bf16 params)")
    ap.add_argument("--long-ac", action="store_true", help="activation checkpointing at the long length")
    ap.add_argument("--only", default="check,hf,ours,ours_long")
    ap.add_argument("--long-doc-median", type=float, default=700.0,
                    help="median document length of the long rows (700: file-like; ~16384: repo-level samples)")
    ap.add_argument("--smoke", action="store_true", help="debug model on CPU (checks the script, no numbers)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()

    if args.phase:
        res = {"hf": phase_hf, "ours": phase_ours, "check": phase_check}[args.phase](args)
        print("RESULT " + json.dumps(res), flush=True)
        return

    if args.smoke:
        args.size, args.seq, args.long_seq, args.steps, args.warmup = "debug-tiny", 256, 512, 3, 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    tmp = tempfile.mkdtemp(prefix="cf-bench-")
    short, long_ = os.path.join(tmp, "s8k"), os.path.join(tmp, "s32k")
    n_short = (args.warmup + args.steps + 2) * args.micro_batch + 4
    n_long = (args.warmup + args.steps + 2) * args.long_micro_batch + 4
    stats = {"short": write_rows(short, n_short, args.seq, 1, VOCAB_REAL),
             "long": write_rows(long_, n_long, args.long_seq, 2, VOCAB_REAL, args.long_doc_median)}
    stats["short"]["attention_fraction"] = attention_fraction(short)
    stats["long"]["attention_fraction"] = attention_fraction(long_)
    common = (["--profile"] if args.profile else []) + [
        "--strategy", args.strategy, "--size", args.size, "--steps", str(args.steps), "--warmup", str(args.warmup),
        "--loss-chunk", str(args.loss_chunk)] + ([] if args.compile else ["--no-compile"])
    results = []
    with open(out / "pretrain_throughput.log", "w") as log:
        for name in args.only.split(","):
            if name == "check":
                r = run_phase("check", short, [], log)
            elif name == "hf":
                r = run_phase("hf", short, common + ["--micro-batch", str(args.micro_batch)], log)
            elif name == "ours":
                r = run_phase("ours", short, common + ["--micro-batch", str(args.micro_batch)]
                              + (["--ac"] if args.ac else []), log)
            else:
                r = run_phase("ours", long_, common + ["--micro-batch", str(args.long_micro_batch)]
                              + (["--ac"] if args.long_ac else []), log)
                r["phase"] = "ours_long"
            results.append(r)
            print(json.dumps(r), flush=True)
    from coderforge.train.model import param_count, qwen2_config_dict

    def add_mfu_variants(r):
        """Beside the convention MFU: 6N only (no attention at all: a lower bound), and 'doc' = 6N plus the
        convention's attention term restricted to the query/key pairs the model must compute:
        12·L·d·S·f with f = mean Σlen²/S² for document-masked rows, f = 1 for HF (whole rows)."""
        conf = qwen2_config_dict(args.size, VOCAB_REAL, r["seq_len"])
        n = param_count(conf)
        frac = stats["long" if r["seq_len"] == args.long_seq else "short"]["attention_fraction"]
        attn_full = 12.0 * conf["num_hidden_layers"] * conf["hidden_size"] * r["seq_len"]
        peak = 989e12
        r["params"] = n
        r["mfu_6n"] = r["tokens_per_s"] * 6.0 * n / peak
        r["mfu_doc"] = r["tokens_per_s"] * (6.0 * n + attn_full * (frac if r.get("document_mask") else 1.0)) / peak

    for r in results:
        if "tokens_per_s" in r and env.get("device", "cpu") != "cpu":
            add_mfu_variants(r)
    base = next((r for r in results if r.get("phase") == "hf" and "tokens_per_s" in r), None)
    for r in results:
        if base and "tokens_per_s" in r:
            r["speedup_vs_hf"] = r["tokens_per_s"] / base["tokens_per_s"]
    doc = {"benchmark": "pretrain_throughput", "size": args.size, "env": env, "data": stats,
           "flops_formula": "6*N + 12*L*d*S (N all params, tied embedding once; full SxS attention)",
           "peak_flops": "989e12 dense bf16 (H100/H200)", "results": results, "smoke": args.smoke,
           "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    name = "pretrain_throughput_smoke" if args.smoke else "pretrain_throughput"
    (out / f"{name}.json").write_text(json.dumps(doc, indent=2))
    lines = [f"# Pretraining throughput ({args.size}, {env.get('device')})", "",
             "| phase | seq | micro-batch | doc mask | tokens/s | MFU (6N+12LdS) | MFU (6N+doc attn) | MFU (6N) "
             "| peak mem GiB | vs HF |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [table_row(r) for r in results]
    lines += ["", f"FLOPs/token: {doc['flops_formula']}; peak {doc['peak_flops']}.",
              f"Rows: {json.dumps(stats)}"]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
