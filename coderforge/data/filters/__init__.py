"""The filter step: heuristic (StarCoder2), markup/data, syntax, data-dense and Ruff filters.

``build_chain(cfg)`` assembles the filters the recipe enables, in recipe order (recipe.md §4.1,
then Abacus §9.2: syntax → data-dense → Ruff). ``run_filter`` applies the chain to every input
shard (in-process or on Ray, see ``coderforge.fanout``), writing kept documents shard by shard
and one ledger; a filter raising on a document quarantines that document.
"""

from __future__ import annotations

import time

from coderforge.config import RecipeConfig
from coderforge.data.filters.base import BatchFilter, DocumentFilter, DocumentFixer, FilterChain
from coderforge.data.filters.heuristics import starcoder_filters
from coderforge.data.filters.markup import markup_filters
from coderforge.data.shardstep import run_per_shard, write_part
from coderforge.ledger import Ledger
from coderforge.records import read_shard, write_shard
from coderforge.steps import StepResult

__all__ = ["BatchFilter", "DocumentFilter", "DocumentFixer", "FilterChain", "build_chain", "filter_documents",
           "run_filter"]


def build_chain(cfg: RecipeConfig) -> FilterChain:
    f = cfg.filter
    steps: list = []
    if f.enabled:
        steps += starcoder_filters(f)
        steps += markup_filters(f)
    if f.syntax.enabled:
        from coderforge.data.filters.syntax import syntax_filters

        steps += syntax_filters(f.syntax)
    if f.data_dense.enabled:
        from coderforge.data.filters.datadense import data_dense_filters

        steps += data_dense_filters(f.data_dense, f)
    if f.ruff.enabled:
        from coderforge.data.filters.lint import ruff_steps

        steps += ruff_steps(f.ruff)
    return FilterChain(steps)


def filter_documents(cfg: RecipeConfig, docs, ledger: Ledger):
    """Apply the recipe's filter chain to an iterable of documents (no files involved)."""
    return build_chain(cfg).run(docs, ledger)


def filter_shard(cfg: RecipeConfig, in_uri: str, out_uri: str, part: str) -> dict:
    ledger = Ledger("filter")
    t0 = time.perf_counter()
    docs = list(read_shard(in_uri))
    kept = build_chain(cfg).run(docs, ledger)
    write_shard(out_uri, kept)
    write_part(part, ledger, {"filter_seconds": time.perf_counter() - t0})
    return {"in": len(docs), "kept": len(kept)}


def run_filter(cfg: RecipeConfig, in_dir: str, out_dir: str, run) -> StepResult:
    summary, info = run_per_shard(cfg, "filter", in_dir, out_dir, filter_shard, run, sections=("filter",))
    metrics = {"shards": float(info["shards"]), "shards_resumed": float(info["shards_resumed"]),
               "docs_fixed": float(summary.fixed)}
    return StepResult(ledger=summary, metrics=metrics, info={**info, "filters": build_chain(cfg).names})
