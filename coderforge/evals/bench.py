"""One execution benchmark for one model: generate, run in the sandbox, score (recipe.md §8.1).

Greedy decoding with one completion per problem gives ``<bench>_pass_at_1`` (the headline). With
``eval.temperature > 0`` a second, sampled run draws ``eval.samples`` completions per problem and
gives the unbiased ``<bench>_pass_at_<k>`` for each ``k > 1`` of ``eval.pass_k`` (and, for ``k = 1``,
``<bench>_sampled_pass_at_1``). A prompt that leaves no room for the answer in the backend's context
(``vllm.max_model_len``, or the model's positions) is not sent: its problem fails with the verdict
``prompt_too_long``.

Completion mode sends the problem's prompt and stops at its stop sequences (MultiPL-E's, or the
HumanEval ones); instruct mode sends the chat-template rendering (``coderforge.evals.instruct``) and
runs the code extracted from the answer.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from coderforge.evals import instruct
from coderforge.evals.execution import Problem, check_completions, summarize


@dataclass
class ModelRun:
    """What every benchmark of one model shares."""

    cfg: object  # RecipeConfig
    stage: str  # base | sft | dpo
    mode: str  # completion | instruct
    backend: object  # GenerationBackend
    tokenizer: object
    context_limit: int
    out: Path
    run: object
    prefix: str = ""  # result file / table name prefix ("" for base, "sft." ...)
    languages: list[dict] = field(default_factory=list)  # one row per benchmark, for the language tables


@dataclass
class _Pass:
    results: list[list[dict]]
    generate_seconds: float
    execute_seconds: float
    completion_tokens: int


def _prompts(mr: ModelRun, problems: list[Problem]) -> list[str]:
    if mr.mode == "instruct":
        return [instruct.render(mr.tokenizer, p.language, p.prompt, mr.cfg.eval.instruct_prefill) for p in problems]
    return [p.prompt for p in problems]


def _stops(mr: ModelRun, problem: Problem) -> tuple[str, ...]:
    from coderforge.generate import HUMANEVAL_STOP

    if mr.mode == "instruct":
        return ("\n```",) if mr.cfg.eval.instruct_prefill else ()
    return problem.stop or HUMANEVAL_STOP


def _generate(mr: ModelRun, problems: list[Problem], prompts: list[str], fits: list[bool], temperature: float,
              n: int) -> tuple[list[list[str]], int]:
    """Completions (answers in instruct mode) per problem; ``[]`` for a prompt that does not fit."""
    from coderforge.generate import GenerationConfig

    ev = mr.cfg.eval
    max_new = ev.instruct_max_new_tokens if mr.mode == "instruct" else ev.max_new_tokens
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, p in enumerate(problems):
        if fits[i]:
            groups.setdefault(_stops(mr, p), []).append(i)
    out: list[list[str]] = [[] for _ in problems]
    tokens = 0
    for stops, idx in groups.items():
        gen = GenerationConfig(max_new_tokens=max_new, temperature=temperature, n=n, seed=mr.cfg.run.seed,
                               stop=stops)
        texts = mr.backend.generate([prompts[i] for i in idx], gen)
        usage = getattr(mr.backend, "last_usage", None)
        tokens += usage.completion_tokens if usage is not None else 0
        for i, t in zip(idx, texts, strict=True):
            out[i] = [instruct.answer_text(x, problems[i].language, ev.instruct_prefill) for x in t] \
                if mr.mode == "instruct" else t
    return out, tokens


def _one_pass(mr: ModelRun, name: str, problems: list[Problem], temperature: float, n: int) -> _Pass:
    ev, sb = mr.cfg.eval, mr.cfg.sandbox
    prompts = _prompts(mr, problems)
    max_new = ev.instruct_max_new_tokens if mr.mode == "instruct" else ev.max_new_tokens
    counts = [len(ids) for ids in mr.tokenizer(prompts, add_special_tokens=False)["input_ids"]] if prompts else []
    fits = [c + max_new <= mr.context_limit for c in counts]
    t0 = time.time()
    completions, tokens = _generate(mr, problems, prompts, fits, temperature, n)
    t_gen = time.time() - t0
    sent = [i for i in range(len(problems)) if fits[i]]
    checked = check_completions([problems[i] for i in sent], [completions[i] for i in sent], mode=mr.mode,
                                timeout_s=ev.timeout_s, memory_mb=ev.memory_mb, workers=sb.workers,
                                allow_unisolated=sb.allow_unisolated, scratch_mb=sb.scratch_mb,
                                max_output=sb.max_output_bytes)
    results: list[list[dict]] = []
    by_index = dict(zip(sent, checked, strict=True))
    for i, p in enumerate(problems):
        results.append(by_index.get(i) or [
            {"task_id": p.task_id, "language": p.language, "sample": s, "completion": "", "passed": False,
             "verdict": "prompt_too_long", "seconds": 0.0, "isolated": None,
             "detail": f"{counts[i]} prompt tokens + {max_new} new > context {mr.context_limit}"}
            for s in range(n)])
    refused = [r for res in results for r in res if r["verdict"] == "refused"]
    if refused:  # a score over programs that never ran would read as a model result: stop here, say why
        raise RuntimeError(
            f"evaluate/{name}: the sandbox refused {len(refused)} of {sum(len(r) for r in results)} programs: "
            f"{refused[0]['detail']} — run evaluation where `coderforge sandbox check` reports isolated: true "
            "(docs/kubernetes.md, 'The sandbox on cluster nodes'), or set sandbox.allow_unisolated: true "
            "on a node dedicated to it")
    return _Pass(results, t_gen, time.time() - t0 - t_gen, tokens)


def _write_rows(mr: ModelRun, file_name: str, results: list[list[dict]]) -> str:
    rows = [r for res in results for r in res]
    path = mr.out / f"{mr.prefix}{file_name}_results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    log_problem_table(mr.run, rows, f"{mr.prefix}{file_name}")
    return str(path)


def log_problem_table(run, rows: list[dict], name: str, artifact_file: str | None = None) -> None:
    """The per-problem table as an MLflow table artifact (``tables/<name>_results.json``)."""
    client, run_id = getattr(run, "client", None), getattr(run, "run_id", None)
    if client is None or not run_id or not rows:
        return
    cols = list(dict.fromkeys(c for r in rows for c in r))
    client.log_table(run_id, data={c: [r.get(c) for r in rows] for c in cols},
                     artifact_file=artifact_file or f"tables/{name}_results.json")


def execution_bench(mr: ModelRun, name: str, problems: list[Problem]) -> tuple[dict[str, float], list[str]]:
    """Metrics (unprefixed, ``<name>_...``) and result files of benchmark ``name`` for this model."""
    ev = mr.cfg.eval
    greedy = _one_pass(mr, name, problems, 0.0, 1)
    metrics: dict[str, float] = {f"{name}_pass_at_1": summarize(greedy.results, ks=(1,)).get("pass_at_1", 0.0),
                                 f"{name}_n": float(len(problems)),
                                 f"{name}_generate_seconds": round(greedy.generate_seconds, 3),
                                 f"{name}_execute_seconds": round(greedy.execute_seconds, 3),
                                 f"{name}_completion_tokens": float(greedy.completion_tokens)}
    for res in greedy.results:
        for r in res:
            key = f"{name}_verdict_{r['verdict']}"
            metrics[key] = metrics.get(key, 0.0) + 1.0
    files = [_write_rows(mr, name, greedy.results)]
    language = problems[0].language if problems else "python"
    row = {"stage": mr.stage, "mode": mr.mode, "benchmark": name, "language": language, "n": len(problems),
           "pass_at_1": metrics[f"{name}_pass_at_1"]}
    if ev.temperature > 0:
        sampled = _one_pass(mr, name, problems, ev.temperature, ev.samples)
        summary = summarize(sampled.results, ks=tuple(ev.pass_k))
        for k in ev.pass_k:
            if f"pass_at_{k}" in summary:
                key = f"{name}_sampled_pass_at_1" if k == 1 else f"{name}_pass_at_{k}"
                metrics[key] = summary[f"pass_at_{k}"]
                row[key[len(name) + 1:]] = summary[f"pass_at_{k}"]
        metrics[f"{name}_samples"] = float(ev.samples)
        metrics[f"{name}_sampled_generate_seconds"] = round(sampled.generate_seconds, 3)
        metrics[f"{name}_sampled_execute_seconds"] = round(sampled.execute_seconds, 3)
        files.append(_write_rows(mr, f"{name}_sampled", sampled.results))
    mr.languages.append(row)
    return metrics, files
