"""The ``dpo_pairs`` step: preference pairs from execution feedback (recipe.md §7.4, §7.5).

``run_dpo_pairs(cfg, instructions_dir, model_dir, out_dir, run)`` reads the verified instruction
samples of the ``verify`` step (problem, reference solution, tests, chat messages) and, for each one
that carries tests:

1. renders its prompt turns (system when present, user) with the SFT model tokenizer's chat template
   and a generation prompt (``synthesise.render_prompts``; ChatML when the tokenizer has no template);
2. samples ``dpo.completions`` completions from the SFT model on a vLLM server (started here from the
   vLLM environment and always stopped, or the one at ``vllm.base_url``), with ``dpo.temperature``,
   ``dpo.top_p`` and the sampling seed ``run.seed + i * completions`` for the ``i``-th prompt sent;
3. takes the code out of each completion (``parse.parse_response``: the first code block in the
   prompt's language) and runs it with the sample's tests in the sandbox (``verify.sandbox_job``,
   ``verify.execute`` → ``verify.run_jobs``, the ``verify`` limits); each completion gets ``passed``
   or a failure reason (``verify.failure_reason``: ``test_failed``, ``runtime_error``,
   ``early_exit``, ``timeout``, ``oom``, ``compile_error``), ``no_code`` (no code block: a format
   error) or ``empty_completion``;
4. builds at most one pair per prompt (:func:`build_pair`): chosen = the first passing completion;
   rejected = a failing completion, classified first: real failures before format errors
   (``REJECT_ORDER``: a wrong answer, then a crash, ..., a compile error, no code at all), the first
   of the best class. With no passing completion the verified reference solution (the sample's
   assistant turn) is the chosen side when ``dpo.reference_as_chosen``. Every pair records where its
   chosen side came from (``chosen_source``: ``completion`` or ``reference``) and why the rejected
   side failed (``rejected_reason``).

Ledger (``Ledger("dpo_pairs")``, over prompts): kept with a pair; dropped ``no_tests``,
``unsupported_language``, ``max_prompts`` (beyond ``dpo.max_prompts``), ``prompt_too_long`` (prompt
tokens + ``dpo.max_new_tokens`` over ``vllm.max_model_len``), ``all_passed`` (no failing completion:
nothing to reject), ``no_pair`` (nothing to choose: no passing completion and no reference to use),
``contaminated:<bench>/<item>`` (a chosen or rejected side shares a benchmark n-gram: generated text is
checked like all training text; the prompts were checked by ``verify``);
quarantined ``generation_failed`` when its request failed after the backend's retries.

Output: the pairs (``dpo_records.PreferencePair`` shards) with the held-out split
(``dpo.heldout_fraction`` of prompts, by a hash of the prompt id), every judged completion under
``completions/``, the ledger, the vLLM server log; metrics: prompts, pairs, the completions' pass
rate, the share of chosen sides from the reference, per language and per failure reason.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

from coderforge import storage
from coderforge.generate.backend import batches
from coderforge.generate.vllm_server import context_limit, require_alive
from coderforge.ledger import Ledger
from coderforge.posttrain.clean import benchmark_index
from coderforge.posttrain.dpo_records import (
    COMPLETION,
    COMPLETIONS_DIR,
    HELDOUT,
    REFERENCE,
    TRAIN,
    JudgedCompletion,
    PreferencePair,
    in_heldout,
    write_completions,
    write_pairs,
)
from coderforge.posttrain.parse import fenced, parse_response
from coderforge.posttrain.samples import InstructionSample, read_samples, stable_id
from coderforge.posttrain.synthesise import (
    load_teacher_tokenizer,
    render_prompts,
    teacher_source,
)
from coderforge.posttrain.verify import (
    COMPILE_ERROR,
    EARLY_EXIT,
    ERROR,
    NOT_RUN,
    RUNTIME_ERROR,
    TEST_FAILED,
    execute,
    failure_reason,
    require_sandbox,
    sandbox_job,
    short_detail,
)
from coderforge.progress import report
from coderforge.records import count_documents
from coderforge.sandbox.languages import LANGUAGES, canonical
from coderforge.sandbox.verdict import OOM, PASSED, REFUSED, TIMEOUT, Verdict
from coderforge.steps import StepResult

log = logging.getLogger("coderforge.posttrain.dpo_pairs")

NO_CODE, EMPTY = "no_code", "empty_completion"
ALL_PASSED, NO_PAIR = "all_passed", "no_pair"
# rejected-side preference: a wrong answer from code that runs first, format errors last
REJECT_ORDER = (TEST_FAILED, RUNTIME_ERROR, EARLY_EXIT, TIMEOUT, OOM, COMPILE_ERROR, NO_CODE)
FORMAT_ERRORS = (COMPILE_ERROR, NO_CODE)
SERVED_NAME = "sft"


# --- prompts --------------------------------------------------------------------------------------------
def prompt_messages(s: InstructionSample) -> list[dict[str, str]]:
    """The turns before the answer: the sample's system turn (when it has one) and its user turn."""
    turns = [{"role": m["role"], "content": m["content"]} for m in s.messages or []
             if m.get("role") in ("system", "user")]
    if not any(m["role"] == "user" for m in turns):
        turns.append({"role": "user", "content": s.problem.strip()})
    return turns


def reference_response(s: InstructionSample) -> str:
    """The verified solution as the SFT model was taught to answer: the sample's assistant turn."""
    answer = [m["content"] for m in s.messages or [] if m.get("role") == "assistant"]
    return answer[-1] if answer else (fenced(s.language, s.solution) if s.solution.strip() else "")


def precheck(s: InstructionSample) -> str:
    """Why the sample cannot give a pair whatever the model writes ('' when it can)."""
    if not s.tests.strip():
        return "no_tests"
    return "" if canonical(s.language or "") in LANGUAGES else "unsupported_language"


# --- judging completions ----------------------------------------------------------------------------------
def extract_code(text: str, language: str) -> str:
    """The solution code of a completion: the first code block in ``language`` (untagged counts)."""
    return parse_response(text, language).solution if text.strip() else ""


def judge(cfg, items: list[tuple[InstructionSample, list[str]]]) -> list[list[JudgedCompletion]]:
    """Every completion of every ``(sample, completions)`` run with the sample's tests in the sandbox
    (all at once, ``verify.executor`` / ``verify.workers``); the judged completions, per sample."""
    out: list[list[JudgedCompletion]] = []
    jobs, where = [], []
    for s, texts in items:
        lang = canonical(s.language)
        judged = []
        for k, text in enumerate(texts):
            c = JudgedCompletion(stable_id(s.id, "dpo", str(k)), s.id, k, lang, text, repo=s.repo, path=s.path)
            c.code = extract_code(text, lang)
            if not text.strip():
                c.verdict, c.reason = NOT_RUN, EMPTY
            elif not c.code.strip():
                c.verdict, c.reason, c.detail = NOT_RUN, NO_CODE, "no code block in the completion"
            else:
                try:
                    jobs.append(sandbox_job(cfg, lang, c.code, s.tests))
                    where.append(c)
                except Exception as exc:  # building the program failed: unusable, not the model's fault
                    c.verdict, c.reason, c.detail = ERROR, ERROR, f"program_for: {type(exc).__name__}: {exc}"
            judged.append(c)
        out.append(judged)
    if jobs:
        require_sandbox(cfg, {job["lang"] for job in jobs})
    for c, res in zip(where, execute(cfg, jobs), strict=True):
        _settle(c, res)
    return out


def _settle(c: JudgedCompletion, res: dict) -> None:
    if "error" in res:
        c.verdict, c.reason, c.detail = ERROR, ERROR, f"sandbox: {res['error']}"[:600]
        return
    v = Verdict(**res["verdict"])
    if v.verdict == REFUSED:
        if v.detail.startswith("sandbox setup failed"):
            c.verdict, c.reason, c.detail = ERROR, ERROR, v.detail[:600]
            return
        raise RuntimeError(f"dpo_pairs: the sandbox refused completion {c.id} ({c.language}): {v.detail}")
    c.verdict = v.verdict
    c.reason, c.detail = ("", "") if v.passed else (failure_reason(v), short_detail(v))


# --- pairs --------------------------------------------------------------------------------------------------
def rejected_rank(c: JudgedCompletion) -> int | None:
    """Where a completion stands as a rejected side (lower is better), None when it cannot be one."""
    return REJECT_ORDER.index(c.reason) if c.reason in REJECT_ORDER else None


def build_pair(s: InstructionSample, judged: list[JudgedCompletion], prompt: str, reference_as_chosen: bool,
               heldout_fraction: float) -> tuple[PreferencePair | None, str, str]:
    """``(pair, "", detail)`` for a prompt whose completions were judged, or ``(None, reason, detail)``."""
    passing = [c for c in judged if c.passed]
    failing = sorted((c for c in judged if rejected_rank(c) is not None), key=lambda c: (rejected_rank(c), c.index))
    counts = ", ".join(f"{r} {n}" for r, n in sorted(Counter(c.reason or PASSED for c in judged).items()))
    if not failing:
        if passing:
            return None, ALL_PASSED, f"{len(passing)}/{len(judged)} passed: nothing to reject"
        return None, NO_PAIR, f"no usable completion ({counts})"
    reference = reference_response(s) if reference_as_chosen else ""
    if passing:
        source, chosen, chosen_index = COMPLETION, passing[0].text, passing[0].index
    elif reference.strip():
        source, chosen, chosen_index = REFERENCE, reference, -1
    else:
        why = "dpo.reference_as_chosen is off" if not reference_as_chosen else "the sample has no solution"
        return None, NO_PAIR, f"no passing completion and no reference ({why}; {counts})"
    rej = failing[0]
    pair = PreferencePair(
        id=stable_id(s.id, "dpo-pair", str(chosen_index), str(rej.index)), prompt_id=s.id,
        language=canonical(s.language), messages=prompt_messages(s), prompt=prompt, chosen=chosen,
        rejected=rej.text, chosen_source=source, chosen_index=chosen_index, rejected_index=rej.index,
        rejected_reason=rej.reason, rejected_detail=rej.detail, completions=len(judged), passed=len(passing),
        split=HELDOUT if in_heldout(s.id, heldout_fraction) else TRAIN, seed_id=s.seed_id, repo=s.repo,
        path=s.path)
    return pair, "", f"chosen {source}, rejected #{rej.index} ({rej.reason}); {counts}"


# --- generation -----------------------------------------------------------------------------------------
def server_config(cfg, model_source: str, log_file: Path):
    from coderforge.generate.vllm_server import server_config as from_recipe

    return from_recipe(cfg.vllm, model_source, SERVED_NAME, log_file)


class _Sampler:
    """Completions for batches of prompts from one vLLM server; a failed batch is retried prompt by prompt."""

    def __init__(self, cfg, backend, server):
        self.cfg, self.backend, self.server = cfg, backend, server
        self.output_tokens, self.seconds = 0, 0.0

    def _generate(self, prompts: list[str], position: int) -> list[list[str]]:
        from coderforge.generate import GenerationConfig

        d = self.cfg.dpo
        gen = GenerationConfig(max_new_tokens=d.max_new_tokens, temperature=d.temperature, top_p=d.top_p,
                               n=d.completions, seed=self.cfg.run.seed + position * d.completions)
        out, usage = self.backend.generate_with_usage(prompts, gen)
        self.output_tokens += usage.completion_tokens
        self.seconds += usage.seconds
        return out

    def batch(self, prompts: list[str], start: int) -> list[list[str] | Exception]:
        from coderforge.generate import VLLMRequestError

        try:
            return list(self._generate(prompts, start))
        except VLLMRequestError as err:
            log.warning("dpo_pairs: batch at %d failed (%s); retrying its prompts one by one", start, err)
        results: list[list[str] | Exception] = []
        for i, prompt in enumerate(prompts):
            try:
                results.append(self._generate([prompt], start + i)[0])
            except VLLMRequestError as one:
                require_alive(self.server, one, "dpo_pairs")
                results.append(one)
        return results


# --- the step ---------------------------------------------------------------------------------------------
class _Books:
    def __init__(self, cfg=None):
        self.ledger = Ledger("dpo_pairs")
        self.pairs: list[PreferencePair] = []
        self.judged: list[JudgedCompletion] = []
        self.sent: Counter = Counter()  # language → prompts sent
        # the generated sides are new text: checked for benchmark n-grams like every other training text
        self.dc = benchmark_index(cfg) if cfg is not None and cfg.decontam.enabled else None

    def settle(self, cfg, s: InstructionSample, prompt: str, judged: list[JudgedCompletion]) -> None:
        self.judged += judged
        pair, reason, detail = build_pair(s, judged, prompt, cfg.dpo.reference_as_chosen, cfg.dpo.heldout_fraction)
        hit = self.dc.ngram_match(pair.chosen + "\n" + pair.rejected) if pair is not None and self.dc else None
        if pair is None:
            self.ledger.drop(s, reason, detail)
        elif hit is not None:
            self.ledger.drop(s, hit.reason, f"a completion shares benchmark n-grams: {','.join(hit.items[:20])}")
        else:
            self.pairs.append(pair)
            self.ledger.keep(s, detail=detail)


def _select(cfg, samples: list[InstructionSample], tok, ledger: Ledger,
            limit: int | None = None) -> list[tuple[InstructionSample, str]]:
    """(sample, rendered prompt) of every sample to sample completions for; the others dropped. ``limit``:
    the server's context (default ``vllm.max_model_len``)."""
    d, v = cfg.dpo, cfg.vllm
    wanted = []
    for s in samples:
        why = precheck(s)
        if why:
            ledger.drop(s, why, s.language if why == "unsupported_language" else "the sample has no tests")
        elif d.max_prompts is not None and len(wanted) >= d.max_prompts:
            ledger.drop(s, "max_prompts", f"beyond dpo.max_prompts = {d.max_prompts}")
        else:
            wanted.append(s)
    texts, counts = render_prompts(tok, [prompt_messages(s) for s in wanted])
    todo = []
    limit = limit or v.max_model_len
    for s, text, n in zip(wanted, texts, counts, strict=True):
        if n + d.max_new_tokens > limit:
            ledger.drop(s, "prompt_too_long",
                        f"{n} prompt tokens + {d.max_new_tokens} new > the server's context {limit}")
        else:
            todo.append((s, text))
    return todo


def _sample_and_judge(cfg, todo: list[tuple[InstructionSample, str]], source: str, log_file: Path,
                      books: _Books, run, total: int) -> dict[str, float]:
    from coderforge.generate import VLLMBackend, VLLMServer

    v = cfg.vllm
    timing = {"server_start_seconds": 0.0, "sandbox_seconds": 0.0}
    with VLLMServer(server_config(cfg, source, log_file)) as server:
        timing["server_start_seconds"] = server.start_seconds or 0.0
        backend = VLLMBackend.from_server(server, concurrency=v.concurrency, request_timeout_s=v.request_timeout_s,
                                          max_retries=v.max_retries)
        sampler = _Sampler(cfg, backend, server)
        done = total - len(todo)
        for k, (start, batch) in enumerate(batches(todo, max(4 * v.concurrency, 1))):
            results = sampler.batch([p for _, p in batch], start)
            ok = []
            for (s, prompt), res in zip(batch, results, strict=True):
                if isinstance(res, Exception):
                    books.ledger.quarantine(s.id, f"{type(res).__name__}: {res}", s.repo, s.path,
                                            len(s.content.encode()), reason="generation_failed")
                else:
                    books.sent[canonical(s.language)] += 1
                    ok.append((s, prompt, res))
            t0 = time.perf_counter()
            for (s, prompt, _), judged in zip(ok, judge(cfg, [(s, res) for s, _, res in ok]), strict=True):
                books.settle(cfg, s, prompt, judged)
            timing["sandbox_seconds"] += time.perf_counter() - t0
            done += len(batch)
            report(done=done, total=total)
            run.log_metrics({"pairs": len(books.pairs), "completions": len(books.judged)}, step=k)
    timing.update(output_tokens=sampler.output_tokens, generate_seconds=sampler.seconds)
    return timing


def pair_metrics(books: _Books, n_samples: int) -> dict[str, float]:
    pairs, judged = books.pairs, books.judged
    n_ref = sum(p.chosen_source == REFERENCE for p in pairs)
    m: dict[str, float] = {
        "prompts": n_samples, "prompts_sent": sum(books.sent.values()), "completions": len(judged),
        "completions_passed": sum(c.passed for c in judged),
        "pass_rate": sum(c.passed for c in judged) / len(judged) if judged else 0.0,
        "pairs": len(pairs), "pairs_train": sum(p.split == TRAIN for p in pairs),
        "pairs_heldout": sum(p.split == HELDOUT for p in pairs), "chosen_from_reference": n_ref,
        "chosen_reference_share": n_ref / len(pairs) if pairs else 0.0,
        "rejected_format_error_share": (sum(p.rejected_reason in FORMAT_ERRORS for p in pairs) / len(pairs)
                                        if pairs else 0.0),
    }
    for reason, n in Counter(c.reason or PASSED for c in judged).items():
        m[f"completion.{reason}"] = n
    for reason, n in Counter(p.rejected_reason for p in pairs).items():
        m[f"rejected.{reason}"] = n
    for lang in sorted(books.sent):
        lj = [c for c in judged if c.language == lang]
        lp = [p for p in pairs if p.language == lang]
        m.update({f"language.{lang}.prompts": books.sent[lang], f"language.{lang}.completions": len(lj),
                  f"language.{lang}.pass_rate": sum(c.passed for c in lj) / len(lj) if lj else 0.0,
                  f"language.{lang}.pairs": len(lp),
                  f"language.{lang}.chosen_reference_share":
                      sum(p.chosen_source == REFERENCE for p in lp) / len(lp) if lp else 0.0})
    return m


def run_dpo_pairs(cfg, instructions_dir: str, model_dir: str, out_dir: str, run) -> StepResult:
    """Preference pairs for the verified prompts of ``instructions_dir``, sampled from ``model_dir``."""
    t0 = time.monotonic()
    expected = count_documents(instructions_dir)
    samples = list(read_samples(instructions_dir))
    books = _Books(cfg)
    scratch = Path(tempfile.mkdtemp(prefix="coderforge-dpo-pairs-"))
    log_file = scratch / "vllm-server.log"
    info: dict = {"model": model_dir, "server": cfg.vllm.base_url or "local", "chat_template": "tokenizer"}
    artifacts: list[str] = []
    timing: dict[str, float] = {}
    try:
        source = teacher_source(model_dir, scratch, tokenizer_only=bool(cfg.vllm.base_url))
        tok, fallback = load_teacher_tokenizer(source)
        if fallback:
            info["chat_template"] = "chatml (the model's tokenizer has none)"
        todo = _select(cfg, samples, tok, books.ledger, context_limit(cfg.vllm, source))
        report(done=len(samples) - len(todo), total=len(samples))
        if todo:
            timing = _sample_and_judge(cfg, todo, source, log_file, books, run, len(samples))
    finally:
        if log_file.exists():
            dest = storage.join(out_dir, "vllm-server.log")
            storage.write_bytes(dest, log_file.read_bytes())
            if not storage.is_s3(out_dir):
                artifacts.append(dest)
        shutil.rmtree(scratch, ignore_errors=True)
    write_pairs(out_dir, books.pairs, cfg.executor.shard_size)
    write_completions(storage.join(out_dir, COMPLETIONS_DIR), books.judged, cfg.executor.shard_size)
    summary = books.ledger.close(out_dir, expected_inputs=expected)
    metrics = pair_metrics(books, len(samples))
    metrics.update({k: round(float(v), 3) for k, v in timing.items()})
    metrics["step_seconds"] = round(time.monotonic() - t0, 3)
    log.info("dpo_pairs: %d prompts, %d completions (pass rate %.3f) → %d pairs (%d with the reference chosen)",
             len(samples), metrics["completions"], metrics["pass_rate"], metrics["pairs"],
             metrics["chosen_from_reference"])
    return StepResult(ledger=summary, metrics=metrics, artifacts=artifacts, info=info)
