"""Needle in a haystack over code (recipe.md §8.2, "Needle in the Code"), for the YaRN stage.

The haystack is real code: Python standard-library modules in sorted order from a seeded start,
cut so that prompt and answer fit the chosen length in tokens of the model's tokenizer. A small
function returning a random number (the needle) is inserted at a line boundary at the chosen depth
(0 = start, 1 = end); the prompt ends with a question about it in code form, ``assert <name>() == ``,
and the model passes when its completion starts with the number.

Beyond the trained length (recipe.md §5.1): a model is saved without RoPE scaling, with
``max_position_embeddings`` = its trained length. With ``eval.long_context.enabled`` the lengths past
that length (``split_lengths``) run on a backend of their own with YaRN
(``evaluate_needle_yarn``: metrics ``needle_yarn_*``, file ``needle_yarn_results.jsonl``); the others,
and all of them when it is off, run on the model as saved (``needle_*``).
"""

from __future__ import annotations

import json
import random
import sysconfig
from dataclasses import dataclass
from pathlib import Path

MAX_NEW = 8  # tokens generated per needle (the 5-digit value and a little room), inside the needle's length


@dataclass
class NeedleTask:
    length: int
    depth: float
    name: str
    value: int
    prompt: str
    prompt_tokens: int


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.glob("*.py") if p.is_file())


def haystack_lines(tokenizer, n_tokens: int, seed: int) -> list[str]:
    """Whole lines of real code totalling about ``n_tokens`` tokens (never more)."""
    files = _stdlib_files()
    rng = random.Random(seed)
    start = rng.randrange(len(files))
    lines: list[str] = []
    used = 0
    for k in range(len(files)):
        try:
            text = files[(start + k) % len(files)].read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for line in text.splitlines(keepends=True):
            cost = len(tokenizer.encode(line, add_special_tokens=False))
            if used + cost > n_tokens:
                return lines
            lines.append(line)
            used += cost
    return lines


def build_task(tokenizer, length: int, depth: float, seed: int) -> NeedleTask:
    rng = random.Random(f"{seed}/{length}/{depth}")
    name = f"needle_{rng.getrandbits(32):08x}"
    value = rng.randrange(10_000, 100_000)
    needle = f"\n\ndef {name}():\n    return {value}\n\n\n"
    question = f"\n\n# {name} is defined above.\nassert {name}() == "
    budget = max(0, length - MAX_NEW - len(tokenizer.encode(needle + question, add_special_tokens=False)))
    hay = haystack_lines(tokenizer, budget, seed)
    at = round(max(0.0, min(1.0, depth)) * len(hay))
    prompt = "".join(hay[:at]) + needle + "".join(hay[at:]) + question
    return NeedleTask(length, depth, name, value, prompt, len(tokenizer.encode(prompt, add_special_tokens=False)))


def trained_length(model_dir: str | Path, long_context=None) -> int:
    """The length the model was trained at: ``long_context.original_max_position_embeddings`` when set,
    else the saved ``max_position_embeddings``."""
    if long_context is not None and long_context.original_max_position_embeddings:
        return int(long_context.original_max_position_embeddings)
    conf = json.loads((Path(model_dir) / "config.json").read_text())
    return int(conf.get("max_position_embeddings") or 0)


def split_lengths(lengths: list[int], model_dir: str | Path, long_context) -> tuple[list[int], list[int]]:
    """(lengths run as saved, lengths run with YaRN): the second holds those past the trained length,
    when ``long_context`` is enabled; otherwise it is empty."""
    if long_context is None or not long_context.enabled:
        return list(lengths), []
    limit = trained_length(model_dir, long_context)
    return [n for n in lengths if n <= limit], [n for n in lengths if n > limit]


def evaluate_needle_yarn(cfg, model_dir: str | Path, served_name: str, lengths: list[int], out_dir: Path, *,
                         tokenizer=None, file_prefix: str = "",
                         log_file: str | Path | None = None) -> tuple[dict, list[str]]:
    """The needle at ``lengths`` on a backend of its own with YaRN (``cfg.eval.long_context``), started
    and released here: metrics ``needle_yarn_*``."""
    from coderforge.evals.serving import generation

    files: list[str] = []
    try:
        with generation(cfg, model_dir, served_name, log_file, tokenizer=tokenizer,
                        long_context=cfg.eval.long_context) as gen:
            metrics, files = evaluate_needle(gen.backend, lengths, cfg.eval.needle_depths, out_dir, seed=cfg.run.seed,
                                             tokenizer=tokenizer, file_prefix=file_prefix,
                                             context_limit=gen.context_limit, label="needle_yarn")
            if gen.kind == "vllm":
                metrics["vllm_yarn_start_seconds"] = round(gen.start_seconds, 3)
    finally:
        if log_file is not None and Path(log_file).exists():
            files.append(str(log_file))
    return metrics, files


def evaluate_needle(backend, lengths: list[int], depths: list[float], out_dir: Path, seed: int = 0, *,
                    tokenizer=None, file_prefix: str = "", context_limit: int | None = None,
                    label: str = "needle") -> tuple[dict, list[str]]:
    """Accuracy over every (length, depth). ``tokenizer``: the model's (default: ``backend.tokenizer``); a
    haystack longer than ``context_limit`` allows is not sent and counts as not found
    (``needle_prompt_too_long``). ``label`` names the metrics and the results file."""
    from coderforge.generate import GenerationConfig

    tok = tokenizer if tokenizer is not None else backend.tokenizer
    max_new = MAX_NEW
    tasks = [build_task(tok, L, d, seed) for L in lengths for d in depths]
    sent = [i for i, t in enumerate(tasks) if context_limit is None or t.prompt_tokens + max_new <= context_limit]
    gens = backend.generate([tasks[i].prompt for i in sent], GenerationConfig(max_new_tokens=max_new)) \
        if sent else []
    by_index = {i: g[0] for i, g in zip(sent, gens, strict=True)}
    rows = []
    for i, t in enumerate(tasks):
        g = by_index.get(i)
        found = g is not None and g.strip().startswith(str(t.value))
        rows.append({"task_id": f"len{t.length}/depth{t.depth:g}", "length": t.length, "depth": t.depth,
                     "prompt_tokens": t.prompt_tokens, "expected": t.value,
                     "generation": (g or "")[:40], "found": found, "prompt_too_long": g is None})
    path = Path(out_dir) / f"{file_prefix}{label}_results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    metrics = {f"{label}_n": float(len(rows)),
               f"{label}_accuracy": sum(r["found"] for r in rows) / len(rows) if rows else 0.0}
    for r in rows:
        metrics[f"{label}_found_len{r['length']}_depth{r['depth']:g}"] = float(r["found"])
    if len(rows) - len(sent):
        metrics[f"{label}_prompt_too_long"] = float(len(rows) - len(sent))
    return metrics, [str(path)]
