"""Data mixture: sample code / text / math sources to a token budget at configured ratios.

recipe.md §9.6 (Abacus cosine stage): 70 % code, 20 % general text, 10 % math, by tokens.

* Every source (a directory of document shards) belongs to a category and has a weight inside it.
* The budget defaults to the largest one the data supports without upsampling any category:
  ``B = min_c(available_c / ratio_c)``. Category ``c`` gets ``ratio_c · B`` tokens, split over its
  sources by weight.
* A source with more tokens than its target is **downsampled**: its documents are ranked by a hash of
  (seed, id) and taken in that order until the target is met. A source with fewer tokens is
  **upsampled**: every document is repeated ``floor(f)`` times and the hash-ranked documents fill the
  fractional part; a source is never repeated more than ``mixture.max_repeat`` times (the shortfall
  is reported, and the realised ratios show it).
* Repeated copies get ids ``<id>~r<k>`` (k ≥ 1) so later ledgers still see unique documents.
* Decontamination (recipe.md §4.5 applies it to all pre-training data): the documents of
  ``mixture.sources`` (the text and math sources, and any extra code source) are checked against the
  benchmarks of ``cfg.decontam`` with the same rules as the ``decontam`` step
  (:func:`coderforge.data.decontam.decontaminate_documents`) before anything is sampled; an
  overlapping document is dropped ``contaminated:<bench>/<item>``. The pipeline's curated code
  (``docs_dir``) has been through the ``decontam`` step already and is not checked again.
  ``decontam.enabled: false`` switches this off too.
* The ledger accounts for every input document: kept (``detail`` = copies) or dropped
  ``downsampled`` / ``contaminated:…``; the realised token share of every category and source is
  reported, and the documents each source lost to decontamination.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from dataclasses import dataclass, field, replace

from coderforge import records
from coderforge.data.decontam import decontaminate_documents
from coderforge.ledger import Ledger
from coderforge.steps import StepResult


def token_counter(tokenizer_dir: str | None):
    """Exact token counts with a saved tokenizer, else ~4 characters per token."""
    if tokenizer_dir:
        from coderforge.text_tokenizer import plain_text_tokenizer

        tok = plain_text_tokenizer(tokenizer_dir)
        return lambda texts: [len(e.ids) + 1 for e in tok.encode_batch_fast(texts, add_special_tokens=False)]
    return lambda texts: [max(1, math.ceil(len(t) / 4)) + 1 for t in texts]


def _rank(seed: int, doc_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}\x00{doc_id}".encode(), digest_size=8).digest(), "big")


@dataclass
class SourcePlan:
    name: str
    category: str
    weight: float
    docs: list = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    target: float = 0.0
    copies: dict[str, int] = field(default_factory=dict)

    @property
    def available(self) -> int:
        return sum(self.tokens)

    @property
    def realised(self) -> int:
        return sum(n * self.copies.get(d.id, 0) for d, n in zip(self.docs, self.tokens, strict=True))


def plan_mixture(sources: list[SourcePlan], ratios: dict[str, float], budget: int | None, seed: int,
                 max_repeat: float) -> int:
    """Fill ``copies`` of every source; returns the budget used."""
    total_ratio = sum(ratios.values())
    ratios = {c: r / total_ratio for c, r in ratios.items() if r > 0}
    avail: dict[str, int] = defaultdict(int)
    for s in sources:
        avail[s.category] += s.available
    missing = [c for c in ratios if avail.get(c, 0) == 0]
    if missing:
        raise ValueError(f"mixture: no documents for categories {missing} (ratios {ratios})")
    if budget is None:
        budget = int(min(avail[c] / r for c, r in ratios.items()))
    weights: dict[str, float] = defaultdict(float)
    for s in sources:
        if s.category in ratios:
            weights[s.category] += s.weight
    for s in sources:
        if s.category not in ratios:
            s.target = 0.0
        else:
            s.target = budget * ratios[s.category] * s.weight / weights[s.category]
        factor = min(s.target / s.available, max_repeat) if s.available else 0.0
        whole = int(math.floor(factor))
        s.copies = {d.id: whole for d in s.docs}
        want = s.target - whole * s.available if factor < max_repeat else 0.0
        order = sorted(range(len(s.docs)), key=lambda i: _rank(seed, s.docs[i].id))
        got = 0
        for i in order:  # hash order; skip a document that would overshoot more than it fills
            if got >= want:
                break
            if got + s.tokens[i] - want > want - got:
                continue
            s.copies[s.docs[i].id] += 1
            got += s.tokens[i]
    return budget


def run_mixture(cfg, out_dir: str, run, tokenizer_dir: str | None = None,
                docs_dir: str | None = None) -> StepResult:
    """Mix ``cfg.mixture.sources`` (plus ``docs_dir``, the pipeline's curated code, as the code source
    ``curated`` with weight ``mixture.curated_weight``) into one document set at ``out_dir``."""
    from coderforge.config import MixtureSource

    mc = cfg.mixture
    sources = list(mc.sources)
    if docs_dir:
        sources.insert(0, MixtureSource(path=docs_dir, category="code", weight=mc.curated_weight,
                                        name="curated"))
    if not sources:
        raise ValueError("mixture.sources is empty: name the document directories to mix")
    count = token_counter(tokenizer_dir)
    ledger = Ledger("mixture")
    plans = []
    n_inputs = 0
    contaminated: dict[str, int] = {}
    for i, src in enumerate(sources):
        name = src.name or f"source{i}"
        docs = list(records.read_documents(src.path))
        n_inputs += len(docs)
        if not (docs_dir and i == 0):  # the curated code was decontaminated by its own step
            clean = decontaminate_documents(docs, cfg.decontam, ledger)
            contaminated[name] = len(docs) - len(clean)
            docs = clean
        plans.append(SourcePlan(name, src.category, src.weight, docs,
                                count([d.content for d in docs]) if docs else []))
    budget = plan_mixture(plans, mc.ratios, mc.budget_tokens, cfg.run.seed, mc.max_repeat)
    out_docs = []
    for p in plans:
        for d in p.docs:
            k = p.copies.get(d.id, 0)
            if k == 0:
                ledger.drop(d, "downsampled", detail=p.name)
                continue
            ledger.keep(d, detail=f"{p.name} x{k}")
            for r in range(k):
                out_docs.append(replace(d, id=d.id if r == 0 else f"{d.id}~r{r}",
                                        meta={**d.meta, "mixture_source": p.name,
                                              "mixture_category": p.category, "mixture_copy": r}))
    out_docs.sort(key=lambda d: _rank(cfg.run.seed + 1, d.id))  # interleave sources
    records.write_documents(out_dir, out_docs, cfg.executor.shard_size)
    summary = ledger.close(out_dir, expected_inputs=n_inputs)
    cat_tokens: dict[str, int] = defaultdict(int)
    for p in plans:
        cat_tokens[p.category] += p.realised
    total = sum(cat_tokens.values()) or 1
    metrics = {"budget_tokens": budget, "tokens": sum(cat_tokens.values()), "documents_out": len(out_docs)}
    for c, n in sorted(cat_tokens.items()):
        metrics[f"ratio.{c}"] = n / total
        metrics[f"tokens.{c}"] = n
    sources = {}
    for p in plans:
        sources[p.name] = {"category": p.category, "available": p.available, "target": round(p.target),
                           "realised": p.realised, "factor": p.realised / p.available if p.available else 0.0}
        metrics[f"factor.{p.name}"] = sources[p.name]["factor"]
        if p.name in contaminated:
            sources[p.name]["contaminated"] = contaminated[p.name]
            metrics[f"contaminated.{p.name}"] = contaminated[p.name]
    return StepResult(ledger=summary, metrics=metrics,
                      info={"ratios_configured": mc.ratios, "sources": sources,
                            "ratios_realised": {c: n / total for c, n in cat_tokens.items()}})
