"""HumanEval-FIM single-line infilling, built deterministically from HumanEval solutions (recipe.md §8.1).

For each HumanEval problem the full solution is prompt + canonical solution; one non-blank line of
the canonical solution (chosen by a SHA-256 of the task id, so every run and machine picks the
same) is the middle. The prompt is ``<|fim_prefix|>`` prefix ``<|fim_suffix|>`` suffix
``<|fim_middle|>`` (PSM). Scoring as Qwen's ``humaneval_fim.py``: the first generated line (the
second if the output starts with a newline), stripped, must equal the stripped reference line; edit
similarity is the normalised indel similarity (``rapidfuzz.fuzz.ratio``), computed here from the
longest common subsequence.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE = "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"
RIGHT_CONTEXT_CHARS = 2048


@dataclass
class FimTask:
    task_id: str
    prefix: str
    suffix: str
    middle: str

    def prompt(self) -> str:
        return f"{FIM_PREFIX}{self.prefix}{FIM_SUFFIX}{self.suffix}{FIM_MIDDLE}"


def build_fim_tasks(limit: int | None = None) -> list[FimTask]:
    from coderforge.evals.execution import humaneval_problems

    tasks = []
    for p in humaneval_problems(limit):
        body_lines = p.canonical_solution.splitlines(keepends=True)
        candidates = [i for i, ln in enumerate(body_lines) if ln.strip()]
        if not candidates:
            continue
        h = int.from_bytes(hashlib.sha256(p.task_id.encode()).digest()[:8], "big")
        i = candidates[h % len(candidates)]
        line = body_lines[i]
        indent = line[: len(line) - len(line.lstrip())]
        prefix = p.prompt + "".join(body_lines[:i]) + indent
        suffix = ("\n" if line.endswith("\n") else "") + "".join(body_lines[i + 1:])
        tasks.append(FimTask(p.task_id, prefix, suffix[:RIGHT_CONTEXT_CHARS], line.strip()))
    return tasks


def first_line(generation: str) -> str:
    lines = generation.split("\n")
    if generation.startswith("\n") and len(lines) > 1:
        return lines[1].strip()
    return lines[0].strip()


def edit_similarity(a: str, b: str) -> float:
    """100 · 2·LCS(a, b) / (|a| + |b|): the normalised indel similarity (``fuzz.ratio``)."""
    if not a and not b:
        return 100.0
    prev = [0] * (len(b) + 1)
    for ca in a:
        cur = [0]
        for j, cb in enumerate(b):
            cur.append(prev[j] + 1 if ca == cb else max(prev[j + 1], cur[j]))
        prev = cur
    return 100.0 * 2 * prev[-1] / (len(a) + len(b))


def score(task: FimTask, generation: str) -> dict:
    pred = first_line(generation)
    return {"task_id": task.task_id, "reference": task.middle, "prediction": pred,
            "exact_match": pred == task.middle, "edit_similarity": round(edit_similarity(pred, task.middle), 2)}


def evaluate_fim(backend, n_problems: int, max_new_tokens: int, out_dir: Path, *, tokenizer=None,
                 file_prefix: str = "", context_limit: int | None = None) -> tuple[dict, list[str]]:
    """Exact match and edit similarity over the first ``n_problems`` HumanEval-FIM tasks. ``tokenizer``:
    the model's (default: ``backend.tokenizer``); a task whose prompt leaves no room for the answer in
    ``context_limit`` tokens is not sent and counts as a miss (``fim_prompt_too_long``)."""
    from coderforge.generate import GenerationConfig

    tok = tokenizer if tokenizer is not None else backend.tokenizer
    vocab = tok.get_vocab()
    missing = [t for t in (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE) if t not in vocab]
    if missing:
        raise ValueError(f"HumanEval-FIM needs the FIM tokens in the tokenizer; missing {missing}")
    tasks = build_fim_tasks(n_problems)
    max_new = min(max_new_tokens, 64)
    prompts = [t.prompt() for t in tasks]
    counts = [len(ids) for ids in tok(prompts, add_special_tokens=False)["input_ids"]] if prompts else []
    fits = [context_limit is None or c + max_new <= context_limit for c in counts]
    sent = [i for i, ok in enumerate(fits) if ok]
    gens = backend.generate([prompts[i] for i in sent], GenerationConfig(max_new_tokens=max_new)) if sent else []
    by_index = {i: g[0] for i, g in zip(sent, gens, strict=True)}
    rows = []
    for i, t in enumerate(tasks):
        row = score(t, by_index.get(i, ""))
        if not fits[i]:
            row["exact_match"], row["prompt_too_long"] = False, True
        rows.append(row)
    path = Path(out_dir) / f"{file_prefix}fim_results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    n = len(rows)
    metrics = {"fim_n": float(n),
               "fim_exact_match": sum(r["exact_match"] for r in rows) / n if n else 0.0,
               "fim_edit_similarity": sum(r["edit_similarity"] for r in rows) / n if n else 0.0}
    if n - len(sent):
        metrics["fim_prompt_too_long"] = float(n - len(sent))
    return metrics, [str(path)]
