"""Generation throughput: the vLLM backend (an OpenAI-compatible vLLM server driven by concurrent HTTP
requests) against transformers ``generate`` (``TransformersBackend``, static left-padded batches), on
the same model, prompts and sampling settings, in one run.

The model is a randomly initialised ``Qwen2ForCausalLM`` (default: hidden 512, 8 heads of 64, 2 KV
heads, 4 layers, intermediate 1408) with a Qwen-layout byte-level BPE trained here on the standard
library (``--vocab`` entries, the 22 Qwen2.5 control tokens included), or ``--model DIR``. Prompts are
the first lines of standard-library functions (signature and docstring start). Output tokens are what
each backend reports in ``last_usage``: every generated token up to and including the stop token
(vLLM: the server's ``usage``; transformers: counted on the output ids). After a warm-up the backends
run in alternating rounds (the order flips each round) so background load hits both alike; the idle
vLLM server (measured: < 2 % of a core) stays up while transformers runs.

    .venv/bin/python benchmarks/generate.py [--prompts 64] [--max-new-tokens 128] [--rounds 2]
    .venv/bin/python benchmarks/generate.py --device cuda   # needs CODERFORGE_VLLM_PYTHON with CUDA vLLM

Writes ``benchmarks/results/generate.json`` and ``benchmarks/results/generate.md``.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import platform
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
STDLIB = Path(sysconfig.get_paths()["stdlib"])
CORPUS = ("textwrap.py", "bisect.py", "heapq.py", "fnmatch.py", "colorsys.py", "keyword.py", "shlex.py",
          "difflib.py", "argparse.py", "dataclasses.py", "functools.py", "json/decoder.py", "csv.py")
PROMPT_SOURCES = ("difflib.py", "shlex.py", "textwrap.py", "argparse.py", "heapq.py", "functools.py",
                  "dataclasses.py", "calendar.py", "fractions.py", "statistics.py", "ipaddress.py", "string.py")


def build_model(out: Path, vocab: int, hidden: int, heads: int, kv_heads: int, layers: int,
                intermediate: int, seed: int) -> Path:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from coderforge.tokens.tokenizer import save_hf, train_bpe

    save_hf(train_bpe([(STDLIB / n).read_text() for n in CORPUS], vocab, 2), out, model_max_length=4096)
    tok = AutoTokenizer.from_pretrained(out)
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=kv_heads, intermediate_size=intermediate, max_position_embeddings=4096,
                      tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      bos_token_id=tok.eos_token_id)
    model = Qwen2ForCausalLM(cfg)
    model.save_pretrained(out)
    return out


def code_prompts(count: int, max_lines: int = 6) -> list[str]:
    """The first lines (up to ``max_lines``) of standard-library functions, in a fixed order."""
    out: list[str] = []
    for name in PROMPT_SOURCES:
        src = (STDLIB / name).read_text()
        lines = src.splitlines(keepends=True)
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.FunctionDef) and node.body:
                end = min(node.body[0].lineno, node.lineno + max_lines - 1)
                out.append("".join(lines[node.lineno - 1:end]))
                if len(out) == count:
                    return out
    if len(out) < count:
        raise SystemExit(f"only {len(out)} prompts available")
    return out


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of the live processes in process group ``pgid`` (Linux /proc)."""
    total = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def timed_rounds(backends: dict, cpu_clocks: dict, prompts, cfg, rounds: int, warmup: int) -> dict:
    """Alternating rounds (the order flips each round), so background load hits every backend alike.

    Besides wall time, each round records the CPU seconds the backend used (``cpu_clocks[name]()``
    before and after), which shared, busy cores disturb far less than wall time.
    """
    for backend in backends.values():
        backend.generate(prompts[:warmup], cfg)
    runs: dict[str, list[dict]] = {name: [] for name in backends}
    for r in range(rounds):
        order = list(backends.items())
        if r % 2:
            order.reverse()
        for name, backend in order:
            c0 = cpu_clocks[name]()
            backend.generate(prompts, cfg)
            cpu_s = cpu_clocks[name]() - c0
            u = backend.last_usage
            runs[name].append({"seconds": u.seconds, "cpu_seconds": cpu_s, "prompt_tokens": u.prompt_tokens,
                               "completion_tokens": u.completion_tokens, "completions": u.completions,
                               "tokens_per_s": u.completion_tokens_per_s,
                               "tokens_per_cpu_s": u.completion_tokens / cpu_s if cpu_s > 0 else 0.0,
                               "loadavg_1m": os.getloadavg()[0]})
            print(f"round {r + 1}: {name:>12} {u.completion_tokens} tokens in {u.seconds:.2f} s = "
                  f"{u.completion_tokens_per_s:,.0f} tokens/s; {cpu_s:.1f} CPU s = "
                  f"{runs[name][-1]['tokens_per_cpu_s']:,.0f} tokens/CPU-s", flush=True)
    return {name: {"rounds": rs, "median_tokens_per_s": statistics.median(x["tokens_per_s"] for x in rs),
                   "best_tokens_per_s": max(x["tokens_per_s"] for x in rs),
                   "median_tokens_per_cpu_s": statistics.median(x["tokens_per_cpu_s"] for x in rs)}
            for name, rs in runs.items()}


def vllm_server_config(model_dir: Path, python: str, args):
    from coderforge.generate import VLLMServerConfig

    cuda = args.device == "cuda"
    env = {"HF_HUB_OFFLINE": "1"}
    if not cuda:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(args.kv_cache_gb)
    return VLLMServerConfig(model=str(model_dir), served_model_name="bench", dtype=args.dtype,
                            max_model_len=args.max_model_len, seed=args.seed, enforce_eager=not cuda,
                            gpu_memory_utilization=args.gpu_memory_utilization if cuda else None, env=env,
                            python=python, log_file=str(args.workdir / "vllm-server.log"))


def run(model_dir: Path, prompts, cfg, args, names: list[str]) -> dict:
    from coderforge.generate import TransformersBackend, VLLMBackend, VLLMServer, ensure_vllm_python

    out: dict = {}
    backends: dict = {}
    clocks: dict = {}
    with contextlib.ExitStack() as stack:
        if "vllm" in names:
            t0 = time.perf_counter()
            python = str(ensure_vllm_python())
            scfg = vllm_server_config(model_dir, python, args)
            server = stack.enter_context(VLLMServer(scfg))
            print(f"vLLM server healthy after {server.start_seconds:.1f} s", flush=True)
            backends["vllm"] = VLLMBackend.from_server(server, concurrency=args.concurrency)
            pgid = server.pgid  # the server's processes plus this process's HTTP client threads
            clocks["vllm"] = lambda: group_cpu_seconds(pgid) + time.process_time()
            out["vllm"] = {"env_and_start_s": time.perf_counter() - t0, "concurrency": args.concurrency,
                           "server_args": " ".join(_server_args(scfg)), "vllm_version": _vllm_version(python)}
        if "transformers" in names:
            import torch

            backends["transformers"] = TransformersBackend(str(model_dir), device=args.device, dtype=args.dtype,
                                                           batch_size=args.hf_batch_size)
            clocks["transformers"] = time.process_time
            out["transformers"] = {"batch_size": args.hf_batch_size, "torch_threads": torch.get_num_threads(),
                                   "torch_version": torch.__version__}
        timed = timed_rounds(backends, clocks, prompts, cfg, args.rounds, warmup=args.hf_batch_size)
    if "vllm" in out:
        out["vllm"].update(server_start_s=server.start_seconds, server_stop_s=server.stop_seconds)
    for name, res in timed.items():
        out[name].update(res)
    return out


def _server_args(scfg) -> list[str]:
    from coderforge.generate.vllm_server import server_command

    return server_command("python", scfg, 0)[3:]


def _vllm_version(python) -> str:
    import subprocess

    out = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('vllm-cpu'))"],
                         capture_output=True, text=True, check=False)
    return out.stdout.strip() or "vllm (version not found as vllm-cpu)"


def write_results(result: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "generate.json").write_text(json.dumps(result, indent=2))
    s, m = result["settings"], result["model"]
    v, h = result.get("vllm"), result.get("transformers")
    md = [
        "# Generation throughput: vLLM server vs transformers `generate`",
        "",
        f"{result['date']}, device {s['device']} ({result['machine']['cpus_available']} CPUs; load at end "
        f"{', '.join(f'{x:.1f}' for x in result['machine']['loadavg_at_end'])}). Model: random-init "
        f"Qwen2ForCausalLM, {m['params'] / 1e6:.1f}M parameters (hidden {m['hidden']}, {m['layers']} layers, "
        f"{m['heads']} heads of {m['head_dim']}, {m['kv_heads']} KV heads, vocab {m['vocab']}), dtype {s['dtype']}.",
        f"{s['prompts']} prompts (standard-library function openings, {s['prompt_tokens']} prompt tokens), "
        f"n={s['n']}, max_new_tokens={s['max_new_tokens']}, temperature={s['temperature']}, top_p={s['top_p']}, "
        f"Qwen stop tokens on; a warm-up, then {s['rounds']} rounds alternating the backends' order; "
        f"median reported. The vLLM server stays up (idle: <2 % of a core) while transformers runs.",
        "",
        "| backend | setting | output tokens/s (median) | rounds (tokens/s) | output tokens per CPU-second "
        "(median) | output tokens per round |",
        "|---|---|---:|---|---:|---:|",
    ]
    if v:
        defaults = " (CPU: max_num_seqs 128, max_num_batched_tokens 2048)" if s["device"] == "cpu" else ""
        md.append(f"| vLLM {v['vllm_version']} server, `/v1/completions` | {v['concurrency']} concurrent "
                  f"requests; server defaults{defaults} | "
                  f"{v['median_tokens_per_s']:,.0f} | {_rates(v)} | {v['median_tokens_per_cpu_s']:,.0f} | "
                  f"{v['rounds'][-1]['completion_tokens']} |")
    if h:
        md.append(f"| transformers {result['transformers_version']} `generate` | static batches of "
                  f"{h['batch_size']}, left padding, {h['torch_threads']} torch threads | "
                  f"{h['median_tokens_per_s']:,.0f} | {_rates(h)} | {h['median_tokens_per_cpu_s']:,.0f} | "
                  f"{h['rounds'][-1]['completion_tokens']} |")
    md.append("")
    if v and h:
        md.append(f"vLLM / transformers = **{result['ratio_vllm_over_transformers']:.2f}×** output tokens/s "
                  f"(wall); **{result['ratio_per_cpu_s']:.2f}×** output tokens per CPU-second (vLLM: server "
                  f"process group + client threads; transformers: the process); best round against best round: "
                  f"{result['ratio_best_rounds']:.2f}×. Other jobs shared these cores during the run (1-minute "
                  f"load per round: vLLM {_loads(v)}; transformers {_loads(h)}), so single rounds vary.")
    if v:
        md.append(f"vLLM server start (process to `/health`): {v['server_start_s']:.0f} s; stop: "
                  f"{v['server_stop_s']:.1f} s (not in the throughput). Server: `{v['server_args']}`.")
    md.append("")
    (out_dir / "generate.md").write_text("\n".join(md))
    print("\n".join(md))


def _loads(res: dict) -> str:
    return ", ".join(f"{r['loadavg_1m']:.1f}" for r in res["rounds"])


def _rates(res: dict) -> str:
    return ", ".join(f"{r['tokens_per_s']:,.0f}" for r in res["rounds"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--dtype", default=None, help="float32 on cpu, bfloat16 on cuda by default")
    ap.add_argument("--backends", default="vllm,transformers")
    ap.add_argument("--model", type=Path, default=None, help="an existing HF model dir (default: build one)")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=1408)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--n", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--concurrency", type=int, default=64, help="vLLM: requests in flight")
    ap.add_argument("--hf-batch-size", type=int, default=32, help="transformers: prompts per generate batch")
    ap.add_argument("--max-model-len", type=int, default=1024)
    ap.add_argument("--kv-cache-gb", type=int, default=1, help="VLLM_CPU_KVCACHE_SPACE")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "results")
    args = ap.parse_args()
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-generate-"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import transformers
    from transformers import AutoConfig, AutoTokenizer

    from coderforge.generate import GenerationConfig

    model_dir = args.model or build_model(args.workdir / "model", args.vocab, args.hidden, args.heads,
                                          args.kv_heads, args.layers, args.intermediate, args.seed)
    mc = AutoConfig.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    prompts = code_prompts(args.prompts)
    cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                           n=args.n, seed=args.seed)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    result = {
        "benchmark": "generation output tokens/s, vLLM server vs transformers generate",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpus_available": len(os.sched_getaffinity(0)), "platform": platform.platform(),
                    "python": platform.python_version()},
        "model": {"dir": str(model_dir), "hidden": mc.hidden_size, "layers": mc.num_hidden_layers,
                  "heads": mc.num_attention_heads, "kv_heads": mc.num_key_value_heads,
                  "head_dim": mc.hidden_size // mc.num_attention_heads, "vocab": mc.vocab_size,
                  "intermediate": mc.intermediate_size, "params": _params(mc)},
        "settings": {"device": args.device, "dtype": args.dtype, "prompts": len(prompts), "n": args.n,
                     "max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p,
                     "seed": args.seed, "rounds": args.rounds,
                     "prompt_tokens": sum(len(tok.encode(p, add_special_tokens=False)) for p in prompts)},
        "transformers_version": transformers.__version__,
    }
    result.update(run(model_dir, prompts, cfg, args, backends))
    if "vllm" in result and "transformers" in result:
        result["ratio_vllm_over_transformers"] = (result["vllm"]["median_tokens_per_s"]
                                                  / result["transformers"]["median_tokens_per_s"])
        result["ratio_best_rounds"] = (result["vllm"]["best_tokens_per_s"]
                                       / result["transformers"]["best_tokens_per_s"])
        result["ratio_per_cpu_s"] = (result["vllm"]["median_tokens_per_cpu_s"]
                                     / result["transformers"]["median_tokens_per_cpu_s"])
    result["machine"]["loadavg_at_end"] = os.getloadavg()
    write_results(result, args.out)


def _params(mc) -> int:
    h, i, L, v = mc.hidden_size, mc.intermediate_size, mc.num_hidden_layers, mc.vocab_size
    kv = mc.num_key_value_heads * (h // mc.num_attention_heads)
    per_layer = h * h * 2 + h * kv * 2 + (h + 2 * kv) + 3 * h * i + 2 * h
    return L * per_layer + v * h + h


if __name__ == "__main__":
    main()
