"""Seed mining: documented functions and classes of the curated corpus, the seeds of execution-verified
instruction synthesis (recipe.md §6 and §7.1 item 2; the synthesis step turns each seed into problem +
solution + tests, the sandbox keeps what runs).

``run_seeds(cfg, docs_dir, out_dir, run)`` reads the curated document shards, mines every document of
a sandbox language of ``synth.languages`` and writes the seeds (``coderforge.posttrain.samples.Seed``)
as shards at ``out_dir``, with the step's ledger beside them.

Languages. A seed's ``language`` is the sandbox language its synthesised samples run in; documents
map to it by their language (``coderforge.data.languages`` names): ``python`` ← python;
``javascript`` ← javascript and typescript (JSDoc reads the same; synthesis writes JavaScript);
``java`` ← java; ``cpp`` ← c++ and c (C headers are ``.h`` files, the ingest's ``c``, and C++ libraries
ship most of their documented code in ``.h`` headers; both parse with the C++ grammar).

Extraction (tree-sitter; rules per language in :mod:`coderforge.posttrain.seed_extract`): functions,
methods and classes with a docstring / JSDoc / Javadoc / Doxygen comment; the seed's ``code`` is the
declaration as written (doc comment included, dedented), ``docstring`` the cleaned documentation and
``doctest`` its usage examples (Python doctests; JSDoc ``@example``; Javadoc ``<pre>{@code}`` blocks;
Doxygen ``@code`` blocks). A symbol is a candidate when it is not private, special (constructors,
destructors, operators), a test, or unparsable, its docstring has at least ``synth.min_docstring_chars``
characters and its code at most ``synth.max_seed_chars``; only the first symbol of a name and kind per
document is a candidate (overloads share an id, ``stable_id(doc_id, name, kind)``). Test files are
not mined: ``test/``, ``tests/``, ``__tests__/`` folders, ``test_*.py``, ``*_test.*``, ``*Test.java``,
``*.test.js``, ``*.spec.ts`` ….

Choice. Candidates with examples come first when ``synth.prefer_doctests`` (their examples give the teacher
tests to build on), then candidates are ranked by ``stable_id(synth.seed, seed id)`` (a hash: a uniform sample that does
not depend on sharding or input order); candidates whose code equals (up to whitespace) a better-ranked
one are duplicates; every language keeps its ``synth.max_seeds_per_language`` best-ranked distinct
candidates. Shards are mined in parallel (``executor``: local processes or Ray tasks); each shard
returns only its own best ``max_seeds_per_language`` distinct candidates per language, which
always contain the global choice.

Ledger (one entry per input document): kept (≥ 1 seed chosen; detail ``seeds=k candidates=n``), or
dropped: ``language_not_sandboxed`` (no sandbox runs the language), ``language_not_selected`` (a sandbox
language left out of ``synth.languages``), ``test_file``, ``no_documented_symbol`` (no documented
public function or class), ``no_seed_within_limits`` (documented ones, all outside the docstring/code
size limits), ``syntax_error`` (nothing mined and the tree has parse errors), ``duplicate_seed`` (every
candidate duplicates another seed), ``seed_cap_reached`` (candidates, none among the chosen); or
quarantined with the error when extraction raises.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from coderforge import records
from coderforge.config import RecipeConfig
from coderforge.config.posttrain import SANDBOX_LANGUAGES, SynthSection
from coderforge.fanout import map_tasks
from coderforge.ledger import DocRef, Ledger
from coderforge.posttrain.samples import Seed, stable_id, write_seeds
from coderforge.posttrain.seed_extract import extract
from coderforge.records import Document
from coderforge.steps import StepResult

SOURCE_LANGUAGES: dict[str, tuple[str, ...]] = {
    "python": ("python",), "javascript": ("javascript", "typescript"), "java": ("java",), "cpp": ("c++", "c"),
}
_TEST_DIRS = frozenset({"test", "tests", "__tests__", "__test__"})
_TEST_FILE = (  # (predicate on the file name) — case matters for Java
    lambda n: n.startswith(("test_", "test-")) or n in ("conftest.py", "tests.py", "test.py"),
    lambda n: n.rsplit(".", 1)[0].endswith(("_test", "_tests", "_unittest", "-test")),
    lambda n: n.endswith(("Test.java", "Tests.java", "TestCase.java")),
    lambda n: any(f".{k}." in n for k in ("test", "spec")),
)


def is_test_path(path: str) -> bool:
    *dirs, name = path.replace("\\", "/").split("/")
    return any(d.lower() in _TEST_DIRS for d in dirs) or any(rule(name) for rule in _TEST_FILE)


def sandbox_language(doc_lang: str) -> str | None:
    return next((sb for sb, langs in SOURCE_LANGUAGES.items() if doc_lang in langs), None)


def seed_rank(synth: SynthSection, seed: Seed) -> str:
    """Lower ranks first: with ``prefer_doctests`` the seeds that carry examples, then a hash order."""
    first = "0" if synth.prefer_doctests and seed.doctest else "1"
    return first + stable_id(str(synth.seed), seed.id)


def code_key(code: str) -> str:
    return stable_id(" ".join(code.split()))


@dataclass
class DocOutcome:
    """What mining made of one document (the driver turns it into a ledger entry)."""

    ref: DocRef
    nbytes: int
    language: str  # the sandbox language ("" when not mined)
    reason: str = ""  # the drop reason, "error" for a quarantine, "" when it has candidates
    detail: str = ""
    candidates: int = 0
    duplicates: int = 0


@dataclass
class ShardSeeds:
    docs: list[DocOutcome] = field(default_factory=list)
    candidates: dict[str, list[tuple[str, str, Seed]]] = field(default_factory=dict)  # lang → (rank, key, seed)
    counts: Counter = field(default_factory=Counter)


def mine_document(doc: Document, synth: SynthSection) -> tuple[DocOutcome, list[Seed], Counter]:
    """The candidate seeds of one document, its outcome, and counters (symbols by skip reason …)."""
    out = DocOutcome(DocRef(doc.id, doc.repo, doc.path), len(doc.content.encode("utf-8", "surrogatepass")), "")
    counts: Counter = Counter()
    lang = sandbox_language(doc.lang)
    if lang is None or lang not in synth.languages:
        out.reason = "language_not_sandboxed" if lang is None else "language_not_selected"
        out.detail = doc.lang
        return out, [], counts
    out.language = lang
    counts[f"documents.{lang}"] += 1
    if is_test_path(doc.path):
        out.reason = "test_file"
        return out, [], counts
    try:
        found = extract(doc.lang, doc.path, doc.content)
    except Exception as exc:  # any failure on one document quarantines it; the step goes on
        out.reason, out.detail = "error", f"{type(exc).__name__}: {exc}"
        return out, [], counts
    seeds, seen = [], set()
    why: Counter = Counter()
    for sym in found.symbols:
        if sym.skip:
            why[sym.skip] += 1
        elif len(sym.docstring) < synth.min_docstring_chars:
            why["short_docstring"] += 1
        elif len(sym.code) > synth.max_seed_chars:
            why["too_long"] += 1
        elif (sym.name, sym.kind) in seen:
            why["same_name"] += 1
        else:
            seen.add((sym.name, sym.kind))
            seeds.append(Seed(id=stable_id(doc.id, sym.name, sym.kind), language=lang, kind=sym.kind,
                              name=sym.name, code=sym.code, docstring=sym.docstring, doctest=sym.doctest,
                              doc_id=doc.id, repo=doc.repo, path=doc.path))
    counts.update({f"symbols.skipped.{k}": v for k, v in why.items()})
    counts["symbols.documented"] += len(found.symbols)
    out.candidates = len(seeds)
    if not seeds:
        out.detail = " ".join([f"documented={len(found.symbols)}", *(f"{k}={v}" for k, v in sorted(why.items())),
                               f"parse_errors={found.parse_errors}"])
        if why["short_docstring"] or why["too_long"]:
            out.reason = "no_seed_within_limits"
        elif found.parse_errors:
            out.reason = "syntax_error"
        else:
            out.reason = "no_documented_symbol"
    return out, seeds, counts


def _choose(ranked: list[tuple[str, str, Seed]], cap: int, dups: Counter) -> list[tuple[str, str, Seed]]:
    """The ``cap`` best-ranked candidates with distinct code; duplicates are counted per document."""
    chosen, keys = [], set()
    for item in sorted(ranked, key=lambda r: (r[0], r[2].id)):
        if item[1] in keys:
            dups[item[2].doc_id] += 1
        elif len(chosen) < cap:
            keys.add(item[1])
            chosen.append(item)
    return chosen


def mine_shard(synth: SynthSection, uri: str) -> ShardSeeds:
    """Mine one document shard; keep its best ``max_seeds_per_language`` distinct candidates per language."""
    shard = ShardSeeds()
    ranked: dict[str, list] = {}
    for doc in records.read_shard(uri):
        outcome, seeds, counts = mine_document(doc, synth)
        shard.docs.append(outcome)
        shard.counts.update(counts)
        for s in seeds:
            ranked.setdefault(s.language, []).append((seed_rank(synth, s), code_key(s.code), s))
    dups: Counter = Counter()
    for lang, items in ranked.items():
        shard.counts[f"candidates.{lang}"] += len(items)
        shard.candidates[lang] = _choose(items, synth.max_seeds_per_language, dups)
    for d in shard.docs:
        d.duplicates = dups[d.ref.id]
    return shard


def _record(ledger: Ledger, d: DocOutcome, chosen: int, dups: int, cap: int) -> None:
    if d.reason == "error":
        ledger.quarantine(d.ref.id, d.detail, d.ref.repo, d.ref.path, d.nbytes)
    elif d.reason:
        ledger.drop(d.ref, d.reason, d.detail, nbytes=d.nbytes)
    elif chosen:
        ledger.keep(d.ref, detail=f"seeds={chosen} candidates={d.candidates}", nbytes=d.nbytes)
    elif dups >= d.candidates:
        ledger.drop(d.ref, "duplicate_seed", f"candidates={d.candidates}", nbytes=d.nbytes)
    else:
        ledger.drop(d.ref, "seed_cap_reached", f"candidates={d.candidates} cap={cap} ({d.language})",
                    nbytes=d.nbytes)


def run_seeds(cfg: RecipeConfig, docs_dir: str, out_dir: str, run) -> StepResult:
    """Mine seeds from the curated documents at ``docs_dir`` into ``out_dir`` (seed shards + ledger)."""
    t0 = time.perf_counter()
    synth = cfg.synth
    shards = records.list_shards(docs_dir)
    expected = sum(records.shard_rows(u) for u in shards)
    mined: list[ShardSeeds] = map_tasks(cfg.executor, mine_shard, [(synth, uri) for uri in shards])
    counts: Counter = Counter()
    dups: Counter = Counter()
    chosen: dict[str, list[Seed]] = {}
    for lang in synth.languages:
        pooled = [item for m in mined for item in m.candidates.get(lang, [])]
        chosen[lang] = [item[2] for item in _choose(pooled, synth.max_seeds_per_language, dups)]
    per_doc = Counter(s.doc_id for seeds in chosen.values() for s in seeds)
    ledger = Ledger("seeds")
    for m in mined:
        counts.update(m.counts)
        for d in m.docs:
            _record(ledger, d, per_doc[d.ref.id], d.duplicates + dups[d.ref.id], synth.max_seeds_per_language)
    seeds = [s for lang in synth.languages for s in chosen[lang]]
    write_seeds(out_dir, seeds, cfg.executor.shard_size)
    summary = ledger.close(out_dir, expected_inputs=expected)
    metrics: dict[str, float] = {"seeds": len(seeds), "seeds.with_doctest": sum(bool(s.doctest) for s in seeds),
                                 "seconds": time.perf_counter() - t0}
    languages = {}
    for lang in synth.languages:
        mine = chosen[lang]
        languages[lang] = {"documents": counts[f"documents.{lang}"], "candidates": counts[f"candidates.{lang}"],
                           "seeds": len(mine), "with_doctest": sum(bool(s.doctest) for s in mine),
                           "classes": sum(s.kind == "class" for s in mine)}
        metrics.update({f"seeds.{lang}": len(mine), f"seeds.{lang}.with_doctest": languages[lang]["with_doctest"],
                        f"documents.{lang}": languages[lang]["documents"],
                        f"candidates.{lang}": languages[lang]["candidates"]})
    metrics.update({k: v for k, v in counts.items() if k.startswith("symbols.")})
    info = {"languages": languages, "shards": len(shards), "max_seeds_per_language": synth.max_seeds_per_language,
            "sandbox_languages": list(SANDBOX_LANGUAGES)}
    return StepResult(ledger=summary, metrics=metrics, info=info)
