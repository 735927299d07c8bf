"""The ``verify`` step: synthetic instruction samples run in the sandbox, then dedup and decontamination.

``run_verify(cfg, samples_dir, out_dir, run)`` reads the ``InstructionSample`` shards of
``samples_dir`` and accounts for every one in the ledger (``Ledger("verify")``):

1. Execution (recipe.md §6, §7.1 item 5): a sample without solution code is dropped ``no_code``,
   without tests ``no_tests``, in a language the sandbox does not run ``unsupported_language``;
   every other sample's program (:func:`coderforge.posttrain.parse.program_for`: the solution
   followed by its tests) runs in :mod:`coderforge.sandbox` with ``verify.timeout_s`` and
   ``verify.memory_mb``, in parallel: a thread pool here (``verify.executor: local``,
   ``verify.workers`` programs at a time) or Ray tasks (``ray``), both through :func:`run_jobs`.
   Python and JavaScript programs print a random completion marker last, so a solution that exits
   early with status 0 does not pass. A failing sample is dropped with the reason of
   :func:`failure_reason` (``compile_error``, ``test_failed``, ``runtime_error``, ``timeout``,
   ``oom``, ``early_exit``); a sample whose run raised in our code (not in the program) is
   quarantined with the error. Where the sandbox refuses to run (no isolation on the node and no
   ``sandbox.allow_unisolated``, or a missing toolchain) the step fails with the sandbox's reason:
   untrusted code is never run unisolated to get a verdict.
2. Clean-up of the passing samples (:mod:`coderforge.posttrain.clean`): exact and MinHash near
   dedup (``exact_duplicate_of:<id>`` / ``near_duplicate_of:<id>``), then decontamination against
   the benchmarks of ``cfg.decontam`` (``contaminated:<bench>/<item>``).
3. Output: the kept samples as ``InstructionSample`` shards in chat-messages form (system when the
   sample had one, user: the problem, assistant: the solution in a fenced code block), with their
   tests, verdict ``passed`` and provenance; every other sample, with its verdict, reason and a short
   stderr tail, under ``out_dir/rejected/`` (failure analysis, negatives for preference data); the
   ledger; ``verify_table.json`` / ``verify_table.md`` (language × reason, the funnel) as artifacts,
   and every sample's verdict and reason as the MLflow table ``tables/verify_results.json``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import secrets
import tempfile
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from coderforge import storage
from coderforge.config import RecipeConfig
from coderforge.evals.step import log_problem_table
from coderforge.fanout import map_tasks
from coderforge.ledger import Ledger, reason_kind
from coderforge.posttrain.clean import clean_samples
from coderforge.posttrain.parse import fence_tag, fenced, program_for
from coderforge.posttrain.samples import InstructionSample, read_samples, write_samples
from coderforge.records import count_documents
from coderforge.sandbox import default_workers, probe, run_program
from coderforge.sandbox.languages import LANGUAGES, canonical, get_language
from coderforge.sandbox.verdict import CRASHED, OOM, PASSED, REFUSED, TIMEOUT, Verdict
from coderforge.steps import StepResult

log = logging.getLogger("coderforge.posttrain.verify")

NO_CODE, NO_TESTS, UNSUPPORTED = "no_code", "no_tests", "unsupported_language"
COMPILE_ERROR, TEST_FAILED, RUNTIME_ERROR, EARLY_EXIT = "compile_error", "test_failed", "runtime_error", "early_exit"
NOT_RUN, ERROR = "not_run", "error"  # sample verdicts besides the sandbox's
MAX_DETAIL = 600
_MARKED = {"python": "print({!r})", "javascript": "console.log({!r});"}  # languages with a completion marker
_ASSERTION = re.compile(r"AssertionError|AssertionFailedError|ERR_ASSERTION|Assertion `.*' failed|Assertion failed")
_EXCEPTION = re.compile(r"^(?:Exception in thread \"[^\"]*\" )?(?:[\w.$]+(?:Error|Exception)|Exception)(?::|\s\[|$)"
                        r"|^Traceback \(most recent call last\)|terminate called after throwing", re.MULTILINE)
_UNITTEST = re.compile(r"^FAILED \((?P<what>[^)]*)\)", re.MULTILINE)
_PY_SYNTAX = re.compile(r"^(?:SyntaxError|IndentationError|TabError)\b", re.MULTILINE)
_NOISE = re.compile(r"^\s*(?:at\s|\.\.\. \d+ more|Node\.js v\d|\d+: 0x[0-9a-f]+\s)")


# --- sandbox runs ------------------------------------------------------------------------------------
def _run_one(job: dict) -> dict:
    try:
        return {"verdict": run_program(**job).as_dict()}
    except Exception as exc:  # the sandbox machinery failed, not the program
        return {"error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"}


def run_jobs(jobs: list[dict], workers: int | None = 1) -> list[dict]:
    """Run ``run_program`` keyword dicts, ``workers`` at a time (1: one after the other, in this
    thread); per job ``{"verdict": Verdict.as_dict()}`` or ``{"error": ...}``, in job order. The
    same function runs here and in Ray tasks."""
    workers = min(workers or default_workers(), len(jobs))
    if workers <= 1:
        return [_run_one(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_run_one, jobs))


def execute(cfg: RecipeConfig, jobs: list[dict]) -> list[dict]:
    """:func:`run_jobs` over ``jobs`` on ``verify.executor``: here, or as Ray tasks of a few jobs each."""
    v = cfg.verify
    workers = v.workers or cfg.sandbox.workers
    if v.executor == "ray" and jobs:
        section = cfg.executor.model_copy(update={"kind": "ray"})
        slots = workers or cfg.executor.num_cpus or default_workers()
        size = max(1, math.ceil(len(jobs) / (4 * slots)))
        tasks = [(jobs[i:i + size], 1) for i in range(0, len(jobs), size)]
        return [r for part in map_tasks(section, run_jobs, tasks) for r in part]
    return run_jobs(jobs, workers or default_workers())


def sandbox_job(cfg: RecipeConfig, language: str, solution: str, tests: str) -> dict:
    """The ``run_program`` keywords of one sample: its program, the verify limits, the sandbox options."""
    code, files = program_for(language, solution, tests)
    job = dict(code=code, lang=language, files=files or None, timeout_s=cfg.verify.timeout_s,
               memory_mb=cfg.verify.memory_mb, allow_unisolated=cfg.sandbox.allow_unisolated,
               scratch_mb=cfg.sandbox.scratch_mb, max_output=cfg.sandbox.max_output_bytes)
    if language in _MARKED:
        marker = f"__coderforge_verified_{secrets.token_hex(8)}__"
        job["code"] = code.rstrip("\n") + "\n\n" + _MARKED[language].format(marker) + "\n"
        job["success_marker"] = marker
    return job


def require_sandbox(cfg: RecipeConfig, languages: set[str]) -> None:
    """Fail before running anything where the sandbox would refuse (checked on this node; Ray workers
    report refusals in their verdicts)."""
    if cfg.verify.executor == "local" and not cfg.sandbox.allow_unisolated:
        isolated, why = probe()
        if not isolated:
            raise RuntimeError(f"verify: sandbox isolation unavailable, refusing to run untrusted code: {why} "
                               "(run where `coderforge sandbox check` reports isolated: true, or set "
                               "sandbox.allow_unisolated: true on a node dedicated to it)")
    if cfg.verify.executor == "local":
        missing = sorted(lang for lang in languages if not get_language(lang, cfg.verify.memory_mb).available())
        if missing:
            raise RuntimeError(f"verify: no toolchain on this machine for {', '.join(missing)}")


# --- verdict → ledger reason -------------------------------------------------------------------------
def _syntax_error(lang: str, stderr: str) -> bool:
    if lang == "python":  # a parse error has no traceback header; a SyntaxError raised at run time has one
        return "Traceback (most recent call last)" not in stderr and bool(_PY_SYNTAX.search(stderr))
    if lang == "javascript":
        return "SyntaxError" in stderr and ("wrapSafe" in stderr or "compileFunction" in stderr)
    return False


def failure_reason(v: Verdict) -> str:
    """The ledger reason of a run that did not pass (read from the verdict, its phase and stderr)."""
    if v.verdict == TIMEOUT:
        return TIMEOUT
    if v.verdict == OOM:
        return OOM
    if v.meta.get("phase") == "compile" or v.detail.startswith("compile error") or _syntax_error(v.lang, v.stderr):
        return COMPILE_ERROR
    if "completion marker missing" in v.detail:
        return EARLY_EXIT
    unittest = _UNITTEST.search(v.stderr)
    if unittest:
        return RUNTIME_ERROR if "failures=" not in unittest["what"] else TEST_FAILED
    tail = _last_exception(v.stderr)
    if _ASSERTION.search(tail or v.stderr):
        return TEST_FAILED
    if v.verdict == CRASHED or tail:
        return RUNTIME_ERROR
    return TEST_FAILED  # a non-zero exit status without an exception: the tests said no


def _last_exception(stderr: str) -> str:
    """The last exception line of ``stderr`` (Python, Java, Node, C++ terminate), or ''."""
    found = list(_EXCEPTION.finditer(stderr))
    if not found:
        return ""
    start = found[-1].start()
    return stderr[start:stderr.find("\n", start) if "\n" in stderr[start:] else len(stderr)]


def stderr_tail(stderr: str, lines: int = 6, max_chars: int = 400) -> str:
    """The last lines of ``stderr`` that say something (stack frames and runtime banners left out)."""
    kept = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not _NOISE.match(ln)]
    return " | ".join(kept[-lines:])[-max_chars:]


def short_detail(v: Verdict) -> str:
    tail = stderr_tail(v.stderr)
    head = v.detail if (v.verdict in (TIMEOUT, CRASHED, OOM) or not tail) else ""
    return " || ".join(x for x in (head[:200], tail) if x)[:MAX_DETAIL] or f"exit status {v.exit_code}"


# --- the step ------------------------------------------------------------------------------------------
def chat_sample(s: InstructionSample) -> InstructionSample:
    """``s`` with messages = [system (when it had one), user: problem, assistant: fenced solution]."""
    system = next((m.get("content", "") for m in s.messages or [] if m.get("role") == "system"), "")
    s.messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": s.problem.strip()},
        {"role": "assistant", "content": _fenced(s.language, s.solution)}]
    s.verdict, s.reason, s.detail = PASSED, "", ""
    return s


def _fenced(language: str, code: str) -> str:
    """:func:`coderforge.posttrain.parse.fenced`, with a longer fence when the code holds a fence itself."""
    runs = re.findall(r"`{3,}", code)
    if not runs:
        return fenced(language, code)
    fence = "`" * (max(map(len, runs)) + 1)
    return f"{fence}{fence_tag(language)}\n{code.strip()}\n{fence}"


def _precheck(s: InstructionSample) -> str:
    if not s.solution.strip():
        return NO_CODE
    if not s.tests.strip():
        return NO_TESTS
    return "" if canonical(s.language or "") in LANGUAGES else UNSUPPORTED


class _Books:
    """The ledger, the samples not kept and the language × outcome counts, filled as samples settle."""

    def __init__(self):
        self.ledger = Ledger("verify")
        self.rejected: list[InstructionSample] = []
        self.table: dict[str, Counter] = {}

    def count(self, s: InstructionSample, key: str) -> None:
        self.table.setdefault(s.language or "unknown", Counter())[key] += 1

    def drop(self, s: InstructionSample, reason: str, detail: str = "", verdict: str = NOT_RUN) -> None:
        s.verdict, s.reason, s.detail = verdict or s.verdict, reason, detail[:MAX_DETAIL]
        self.ledger.drop(s, reason, s.detail)
        self.rejected.append(s)
        self.count(s, reason_kind(reason))

    def quarantine(self, s: InstructionSample, error: str) -> None:
        s.verdict, s.reason, s.detail = ERROR, ERROR, error[:MAX_DETAIL]
        self.ledger.quarantine(s.id, error, s.repo, s.path, len(s.content.encode("utf-8", "surrogatepass")))
        self.rejected.append(s)
        self.count(s, ERROR)


def _sandbox_pass(cfg: RecipeConfig, samples: list[InstructionSample], books: _Books) -> list[InstructionSample]:
    """Run every runnable sample; settle the others in ``books``; the samples that passed, in order."""
    runnable, jobs = [], []
    for s in samples:
        books.count(s, "samples")
        why = _precheck(s)
        if why:
            books.drop(s, why, f"{why.replace('_', ' ')} in the sample" if why != UNSUPPORTED else s.language)
            continue
        try:
            jobs.append(sandbox_job(cfg, canonical(s.language), s.solution, s.tests))
            runnable.append(s)
        except Exception as exc:  # building the program failed: our code, not the sample's
            books.quarantine(s, f"program_for: {type(exc).__name__}: {exc}")
    if jobs:
        require_sandbox(cfg, {job["lang"] for job in jobs})
    passed = []
    for s, res in zip(runnable, execute(cfg, jobs), strict=True):
        if "error" in res:
            books.quarantine(s, f"sandbox: {res['error']}")
            continue
        v = Verdict(**res["verdict"])
        if v.verdict == REFUSED:
            if v.detail.startswith("sandbox setup failed"):
                books.quarantine(s, v.detail)
                continue
            raise RuntimeError(f"verify: the sandbox refused sample {s.id} ({s.language}): {v.detail}")
        if v.passed:
            s.verdict = PASSED
            books.count(s, "passed")
            passed.append(s)
        else:
            books.drop(s, failure_reason(v), short_detail(v), verdict=v.verdict)
    return passed


def run_verify(cfg: RecipeConfig, samples_dir: str, out_dir: str, run) -> StepResult:
    """Verify, dedup and decontaminate the instruction samples of ``samples_dir`` into ``out_dir``."""
    t0 = time.perf_counter()
    expected = count_documents(samples_dir)
    samples = list(read_samples(samples_dir))
    books = _Books()
    passed = _sandbox_pass(cfg, samples, books)
    t_sandbox = time.perf_counter() - t0
    report = clean_samples(cfg, passed)
    for s in passed:
        drop = report.drops.get(s.id)
        if drop is not None:
            books.drop(s, drop.reason, drop.detail, verdict=PASSED)
    kept = [chat_sample(s) for s in report.kept]
    for s in kept:
        books.ledger.keep(s)
        books.count(s, "kept")
    write_samples(out_dir, kept, cfg.executor.shard_size)
    write_samples(storage.join(out_dir, "rejected"), books.rejected, cfg.executor.shard_size)
    summary = books.ledger.close(out_dir, expected_inputs=expected)
    funnel = {"generated": len(samples), "verified": len(passed), "deduplicated": report.deduplicated,
              "decontaminated": report.decontaminated}
    seconds = time.perf_counter() - t0
    metrics = step_metrics(books.table, funnel)
    metrics.update(seconds=round(seconds, 3), sandbox_seconds=round(t_sandbox, 3),
                   clean_seconds=round(seconds - t_sandbox, 3))
    log_problem_table(run, [{"id": s.id, "language": s.language, "verdict": s.verdict, "reason": s.reason,
                             "detail": s.detail} for s in [*kept, *books.rejected]], "verify")
    log.info("verify: %d samples, %d passed the sandbox, %d after dedup, %d kept (%.1fs)", len(samples),
             len(passed), report.deduplicated, report.decontaminated, seconds)
    artifacts = write_table(out_dir, books.table, funnel)
    return StepResult(ledger=summary, metrics=metrics, artifacts=artifacts,
                      info={"funnel": funnel, "table": {k: dict(c) for k, c in sorted(books.table.items())}})


# --- metrics and the language × reason table ---------------------------------------------------------
def step_metrics(table: dict[str, Counter], funnel: dict[str, int]) -> dict[str, float]:
    """Per language ``language.<l>.samples|passed|pass_rate|kept``, per reason ``reason.<r>``, ``funnel.*``."""
    out: dict[str, float] = {f"funnel.{k}": float(v) for k, v in funnel.items()}
    reasons: Counter = Counter()
    for lang, c in sorted(table.items()):
        n = c["samples"]
        out.update({f"language.{lang}.samples": float(n), f"language.{lang}.passed": float(c["passed"]),
                    f"language.{lang}.pass_rate": c["passed"] / n if n else 0.0,
                    f"language.{lang}.kept": float(c["kept"])})
        reasons.update({k: v for k, v in c.items() if k not in ("samples", "passed", "kept")})
    out.update({f"reason.{r}": float(n) for r, n in sorted(reasons.items())})
    return out


def table_markdown(table: dict[str, Counter], funnel: dict[str, int]) -> str:
    reasons = sorted({k for c in table.values() for k in c} - {"samples", "passed", "kept"})
    cols = ["language", "samples", "passed", "pass rate", "kept", *reasons]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for lang, c in sorted(table.items()):
        rate = f"{c['passed'] / c['samples']:.1%}" if c["samples"] else "-"
        cells = [lang, c["samples"], c["passed"], rate, c["kept"], *(c[r] for r in reasons)]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    flow = " → ".join(f"{k} {v}" for k, v in funnel.items())
    return "# verify: samples per language and outcome\n\n" + "\n".join(lines) + f"\n\nFunnel: {flow}\n"


def write_table(out_dir: str, table: dict[str, Counter], funnel: dict[str, int]) -> list[str]:
    """``verify_table.json`` and ``.md`` into ``out_dir``; the local paths to log (copies when S3)."""
    body = {"languages": {lang: dict(c) for lang, c in sorted(table.items())}, "funnel": funnel}
    texts = {"verify_table.json": json.dumps(body, indent=2), "verify_table.md": table_markdown(table, funnel)}
    local = Path(tempfile.mkdtemp(prefix="coderforge-verify-")) if storage.is_s3(out_dir) \
        else storage.local_path(out_dir)
    paths = []
    for name, text in texts.items():
        storage.write_text(storage.join(out_dir, name), text)
        if storage.is_s3(out_dir):
            (local / name).write_text(text)
        paths.append(str(local / name))
    return paths
