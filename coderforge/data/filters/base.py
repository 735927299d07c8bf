"""Small uniform filters (datatrove style) and the chain that does their bookkeeping.

A :class:`DocumentFilter` only answers ``keep(doc) -> True | reason`` (a reason is a short code
such as ``max_line_length``, or a ``(reason, detail)`` pair); ``False`` means "drop with my name".
A filter may restrict itself to some languages (``languages``). A :class:`DocumentFixer` rewrites
kept documents (``fix(doc) -> (doc, detail) | None``). A :class:`BatchFilter` sees a whole batch at
once (for filters that run an external tool, such as Ruff) and returns one verdict per document,
optionally with a fixed document.

:class:`FilterChain` runs them in order and records each document in a ledger: kept (with the
fixes applied listed in the detail), dropped (first filter that said no), or quarantined when a
filter raised on it (``filter_error:<filter>``), so one pathological file never stops a step.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from coderforge.ledger import Ledger
from coderforge.records import Document

log = logging.getLogger("coderforge.filters")

Verdict = bool | str | tuple[str, str]


class DocumentFilter:
    name: str = "filter"
    languages: frozenset[str] | None = None  # None = every language

    def applies(self, doc: Document) -> bool:
        return self.languages is None or doc.lang in self.languages

    def keep(self, doc: Document) -> Verdict:
        raise TypeError(f"{type(self).__name__} must define keep(doc)")


class DocumentFixer:
    name: str = "fixer"
    languages: frozenset[str] | None = None

    def applies(self, doc: Document) -> bool:
        return self.languages is None or doc.lang in self.languages

    def fix(self, doc: Document) -> tuple[Document, str] | None:
        raise TypeError(f"{type(self).__name__} must define fix(doc)")


@dataclass
class BatchVerdict:
    verdict: Verdict = True
    fixed: Document | None = None
    fix_detail: str = ""


class BatchFilter:
    name: str = "batch_filter"
    languages: frozenset[str] | None = None

    def applies(self, doc: Document) -> bool:
        return self.languages is None or doc.lang in self.languages

    def keep_batch(self, docs: Sequence[Document]) -> list[BatchVerdict]:
        raise TypeError(f"{type(self).__name__} must define keep_batch(docs)")


def _reason(filter_name: str, verdict: Verdict) -> tuple[str, str] | None:
    """``None`` when kept, else ``(reason, detail)``."""
    if verdict is True:
        return None
    if verdict is False or verdict is None:
        return filter_name, ""
    if isinstance(verdict, tuple):
        return str(verdict[0]) or filter_name, str(verdict[1]) if len(verdict) > 1 else ""
    return str(verdict) or filter_name, ""


class FilterChain:
    def __init__(self, steps: Iterable[DocumentFilter | DocumentFixer | BatchFilter]):
        self.steps = list(steps)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.steps]

    def run(self, docs: Iterable[Document], ledger: Ledger) -> list[Document]:
        """Apply every step to ``docs``; record each in ``ledger``; return the kept (possibly fixed) docs."""
        alive: list[Document] = list(docs)
        fixes: dict[str, list[str]] = {}
        sizes = {d.id: len(d.content.encode("utf-8", "surrogatepass")) for d in alive}
        for step in self.steps:
            if not alive:
                break
            if isinstance(step, BatchFilter):
                alive = self._run_batch(step, alive, ledger, fixes, sizes)
                continue
            survivors: list[Document] = []
            for doc in alive:
                if not step.applies(doc):
                    survivors.append(doc)
                    continue
                try:
                    if isinstance(step, DocumentFixer):
                        out = step.fix(doc)
                        if out is not None:
                            doc = out[0]
                            note = f"{step.name}:{out[1]}" if out[1] else step.name
                            fixes.setdefault(doc.id, []).append(note)
                        survivors.append(doc)
                        continue
                    reason = _reason(step.name, step.keep(doc))
                except Exception as exc:  # noqa: BLE001 - quarantine the document, not the step
                    log.debug("filter %s raised on %s", step.name, doc.id, exc_info=True)
                    ledger.quarantine(doc.id, f"{type(exc).__name__}: {exc}", doc.repo, doc.path,
                                      sizes[doc.id], reason=f"filter_error:{step.name}")
                    continue
                if reason is None:
                    survivors.append(doc)
                else:
                    ledger.drop(doc, reason[0], reason[1], nbytes=sizes[doc.id])
            alive = survivors
        kept: list[Document] = []
        for doc in alive:
            applied = fixes.get(doc.id)
            if applied:
                ledger.fixed += 1
                doc = doc.with_content(doc.content, fixes=applied)
            ledger.keep(doc, detail=";".join(applied) if applied else "", nbytes=sizes[doc.id])
            kept.append(doc)
        return kept

    def _run_batch(self, step: BatchFilter, docs: list[Document], ledger: Ledger, fixes: dict[str, list[str]],
                   sizes: dict[str, int]) -> list[Document]:
        todo = [d for d in docs if step.applies(d)]
        if not todo:
            return docs
        try:
            verdicts = step.keep_batch(todo)
            if len(verdicts) != len(todo):
                raise RuntimeError(f"{step.name} returned {len(verdicts)} verdicts for {len(todo)} documents")
        except Exception:  # noqa: BLE001 - fall back to one document at a time to isolate the culprit
            log.warning("batch filter %s failed on a batch of %d; retrying one by one", step.name, len(todo),
                        exc_info=True)
            verdicts = []
            for doc in todo:
                try:
                    verdicts.append(step.keep_batch([doc])[0])
                except Exception as exc:  # noqa: BLE001
                    verdicts.append(exc)
        by_id = {d.id: v for d, v in zip(todo, verdicts, strict=True)}
        out: list[Document] = []
        for doc in docs:
            v = by_id.get(doc.id)
            if v is None:
                out.append(doc)
                continue
            if isinstance(v, Exception):
                ledger.quarantine(doc.id, f"{type(v).__name__}: {v}", doc.repo, doc.path, sizes[doc.id],
                                  reason=f"filter_error:{step.name}")
                continue
            reason = _reason(step.name, v.verdict)
            if reason is not None:
                ledger.drop(doc, reason[0], reason[1], nbytes=sizes[doc.id])
                continue
            if v.fixed is not None:
                doc = v.fixed
                note = f"{step.name}:{v.fix_detail}" if v.fix_detail else step.name
                fixes.setdefault(doc.id, []).append(note)
            out.append(doc)
        return out
