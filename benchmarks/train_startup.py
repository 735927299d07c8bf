"""Where a training step's time goes on a small run, and what sharing one local Ray saves.

A local recipe run has several Ray Train steps (pretrain, pretrain_repo, sft, dpo), each a process of
its own (kfp.local). Each trains little on the tiny recipe, so start-up dominates. This benchmark runs
two consecutive training "steps" (each a fresh Python process calling ``train.launch.fit`` on the same
tiny Qwen2 shape, 2 gloo workers, DDP, the tiny recipe's row length and batch) three ways:

* ``torchrun``   – the peer: the same ``train_loop`` under ``torch.distributed.run`` (2 processes), no Ray;
  the floor of what a 2-process PyTorch job costs to start here;
* ``ray_fresh``  – what each step did before: ``ray.init`` of a new local Ray, ``TorchTrainer.fit``,
  ``ray.shutdown``;
* ``ray_shared`` – what ``coderforge run`` does now (``coderforge.shared_ray``): one local Ray started
  once by the driver; each step attaches through ``RAY_ADDRESS``.

For the Ray variants each step reports its phases (``train.launch.phase_metrics``: ray start, worker
group start, set-up, first step, steps, checkpoints, teardown) and its wall time as a process (imports
included). Results: ``benchmarks/results/train_startup.{json,md}``.

    python benchmarks/train_startup.py [--steps 30] [--out benchmarks/results]
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

SEQ, ROWS, VOCAB = 256, 512, 4096


def write_rows(path: Path) -> str:
    from coderforge.tokens.shards import TokenShardWriter

    rng = np.random.default_rng(0)
    w = TokenShardWriter(str(path), seq_len=SEQ, pad_id=0, eos_id=1, vocab_size=VOCAB, rows_per_shard=128)
    for _ in range(ROWS):
        lens = [100, 80, SEQ - 180]
        toks = []
        for n in lens:
            toks.extend([int(t) for t in rng.integers(2, VOCAB, n - 1)] + [1])
        w.add_row(toks, lens)
    w.close()
    return str(path)


def recipe(workdir: str, steps: int):
    from coderforge.config import RecipeConfig

    return RecipeConfig.model_validate({
        "data": {"sources": [{"uri": "/nonexistent"}]}, "run": {"seed": 0, "workdir": workdir, "name": "startup"},
        "model": {"size": "debug", "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                  "num_key_value_heads": 2, "intermediate_size": 256, "max_position_embeddings": 1024},
        "train": {"steps": steps, "micro_batch_size": 8, "lr": 3e-3, "warmup_steps": 2, "num_workers": 2,
                  "log_every": 10, "checkpoint_every": steps, "strategy": "ddp"}})


def one_step(data: str, workdir: str, name: str, steps: int) -> dict:
    """One training step as the recipe runs it (``launch.fit``); its phases."""
    from coderforge.train.launch import fit, phase_metrics
    from coderforge.train.loop_config import loop_config
    from coderforge.train.task import PackedLM

    cfg = recipe(workdir, steps)
    loop = loop_config(cfg, data, "file", None)
    result = fit(cfg, loop, PackedLM.from_config(loop), name, str(Path(workdir) / "ray"), 2, False, 0, 1)
    if result.error:
        raise result.error
    return phase_metrics(result.metrics)


def torchrun_step(data: str, workdir: str, steps: int) -> None:
    """The peer's worker body: the same loop standalone (torchrun sets up the process group)."""
    from dataclasses import replace

    from coderforge.train.loop import train_loop
    from coderforge.train.loop_config import loop_config
    from coderforge.train.task import PackedLM

    loop = replace(loop_config(recipe(workdir, steps), data, "file", None), checkpoint_dir=str(Path(workdir) / "ckpt"))
    train_loop(loop, PackedLM.from_config(loop))


def _run(cmd: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if p.returncode:
        raise RuntimeError(f"{cmd} failed:\n{p.stderr[-3000:]}")
    return time.perf_counter() - t0, p.stdout


def variant(kind: str, data: str, steps: int, n_steps: int = 2) -> dict:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)}
    rows = []
    with tempfile.TemporaryDirectory() as wd:
        for i in range(n_steps):
            sub = str(Path(wd) / f"step{i}")
            if kind == "torchrun":
                secs, _ = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                "--master_port", str(29500 + i), __file__, "--torchrun-worker", data, sub,
                                str(steps)], env)
                rows.append({"wall_s": round(secs, 3)})
            else:
                secs, out = _run([sys.executable, __file__, "--step", data, sub, str(steps)], env)
                phases = json.loads(out.strip().splitlines()[-1])
                rows.append({"wall_s": round(secs, 3), **phases})
    return {"variant": kind, "steps": rows}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--step", nargs=3, metavar=("DATA", "WORKDIR", "STEPS"))
    ap.add_argument("--torchrun-worker", nargs=3, metavar=("DATA", "WORKDIR", "STEPS"))
    a = ap.parse_args()
    if a.step:
        print(json.dumps(one_step(a.step[0], a.step[1], "bench", int(a.step[2]))))
        return
    if a.torchrun_worker:
        torchrun_step(a.torchrun_worker[0], a.torchrun_worker[1], int(a.torchrun_worker[2]))
        return
    from coderforge.shared_ray import shared_ray
    from coderforge.steps.table import STEPS

    results = {"steps_per_fit": a.steps, "rows": ROWS, "seq_len": SEQ, "workers": 2, "cpus": os.cpu_count(),
               "load_before": os.getloadavg()[0], "variants": []}
    with tempfile.TemporaryDirectory() as d:
        data = write_rows(Path(d) / "train")
        results["variants"].append(variant("torchrun", data, a.steps))
        results["variants"].append(variant("ray_fresh", data, a.steps))
        t0 = time.perf_counter()
        with shared_ray(recipe(d, a.steps), [s for s in STEPS if s.resources == "ray"]):
            shared_start = time.perf_counter() - t0
            v = variant("ray_shared", data, a.steps)
        v["shared_ray_start_s"] = round(shared_start, 3)
        results["variants"].append(v)
    results["load_after"] = os.getloadavg()[0]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_startup.json").write_text(json.dumps(results, indent=2))
    cols = ("wall_s", "phase.ray_start_s", "phase.workers_start_s", "phase.setup_s", "phase.first_step_s",
            "phase.steps_s", "phase.checkpoint_s", "phase.teardown_s")
    lines = [f"# Training step start-up ({a.steps} steps per fit, 2 gloo workers, DDP, {ROWS}x{SEQ} rows)", "",
             f"load average {results['load_before']:.2f} before, {results['load_after']:.2f} after", "",
             "| variant | step | " + " | ".join(c.replace("phase.", "").replace("_s", " s") for c in cols) + " |",
             "|---|---:|" + "---:|" * len(cols)]
    for v in results["variants"]:
        for i, row in enumerate(v["steps"]):
            lines.append(f"| {v['variant']} | {i + 1} | " + " | ".join(
                f"{row[c]:.1f}" if c in row else "" for c in cols) + " |")
    shared = results["variants"][2]
    lines += ["", f"ray_shared: the run's one Ray started in {shared['shared_ray_start_s']:.1f} s (once per run)."]
    (out / "train_startup.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
