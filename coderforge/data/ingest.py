"""Ingest: repositories → document shards, every file seen accounted for in the ledger.

Sources (``cfg.data.sources``), each read by :mod:`coderforge.data.sources`:

* ``dir``: a directory; each top-level folder is a repository (loose top-level files form a
  repository named after the directory);
* ``git``: a git repository (local path or URL) read with the ``git`` CLI at ``ref``;
* ``archive``: a tar or zip file, treated as hostile (traversal, links, bombs refused and recorded);
* ``parquet`` / ``jsonl``: rows in The Stack's layout (``content``, ``path``, ``repo``/
  ``repo_name``/``max_stars_repo_name``, ``lang``; other columns go to ``meta``);
* ``auto``: chosen from the URI.

Per file: language from :mod:`coderforge.data.languages` (unknown → dropped ``unknown_language``
before reading), size over ``data.max_file_bytes`` → dropped ``too_large`` (never read in full),
binary → dropped ``binary``, undecodable → quarantined ``encoding``, unreadable → quarantined
``unreadable``; refusals of the source readers (``path_traversal``, ``symlink_escape``,
``zip_bomb`` …) are recorded as they come. Document ids are ``records.document_id(source, repo, path)``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from coderforge.config import RecipeConfig, SourceSpec
from coderforge.data import sources as src
from coderforge.data.encoding import EncodingError, decode_text, looks_binary
from coderforge.data.languages import canonical_language, language_of
from coderforge.ledger import Ledger
from coderforge.records import Document, document_id, write_documents
from coderforge.steps import StepResult

log = logging.getLogger("coderforge.ingest")


class _Ref:
    """What the ledger needs of a document that never became one."""

    __slots__ = ("id", "repo", "path", "content")

    def __init__(self, doc_id: str, repo: str, path: str):
        self.id, self.repo, self.path, self.content = doc_id, repo, path, ""


def source_label(spec: SourceSpec, index: int) -> str:
    return spec.name or f"source{index}"


def ingest_entries(cfg: RecipeConfig, entries: Iterator[src.Entry], source: str, ledger: Ledger,
                   counter: list[int]) -> Iterator[Document]:
    """Turn source entries into documents, recording every entry in ``ledger``."""
    max_bytes = cfg.data.max_file_bytes
    for entry in entries:
        counter[0] += 1
        doc_id = entry.doc_id or document_id(source, entry.repo, entry.path)
        if ledger.status_of(doc_id) is not None:
            # same source/repo/path twice (e.g. a tar with a repeated member): id made unique, still recorded
            doc_id = document_id(source, entry.repo, f"{entry.path}#{counter[0]}")
        ref = _Ref(doc_id, entry.repo, entry.path)
        try:
            if entry.refusal is not None:
                status, reason, detail = entry.refusal
                if status == "quarantined":
                    ledger.quarantine(doc_id, detail, entry.repo, entry.path, entry.size or 0, reason=reason)
                else:
                    ledger.drop(ref, reason, detail, nbytes=entry.size or 0)
                continue
            lang = canonical_language(entry.lang) if entry.lang else None
            lang = lang or language_of(entry.path)
            if lang is None:
                ledger.drop(ref, "unknown_language", entry.lang or "", nbytes=entry.size or 0)
                continue
            if entry.size is not None and entry.size > max_bytes:
                ledger.drop(ref, "too_large", f"{entry.size} > {max_bytes}", nbytes=entry.size)
                continue
            if entry.text is not None:
                text, encoding = entry.text, "utf-8"
                nbytes = len(text.encode("utf-8", "surrogatepass"))
                if nbytes > max_bytes:
                    ledger.drop(ref, "too_large", f"{nbytes} > {max_bytes}", nbytes=nbytes)
                    continue
                if "\x00" in text:
                    ledger.drop(ref, "binary", "NUL character in content", nbytes=nbytes)
                    continue
            else:
                try:
                    data = entry.read(max_bytes + 1)
                except Exception as exc:  # noqa: BLE001 - OSError, truncated archives (EOFError, zlib.error)
                    ledger.quarantine(doc_id, f"{type(exc).__name__}: {exc}", entry.repo, entry.path,
                                      entry.size or 0, reason="unreadable")
                    continue
                nbytes = len(data)
                if nbytes > max_bytes:
                    ledger.drop(ref, "too_large", f"> {max_bytes}", nbytes=nbytes)
                    continue
                if looks_binary(data):
                    ledger.drop(ref, "binary", "", nbytes=nbytes)
                    continue
                try:
                    text, encoding = decode_text(data, detect=cfg.data.detect_encoding)
                except EncodingError as exc:
                    ledger.quarantine(doc_id, str(exc), entry.repo, entry.path, nbytes, reason="encoding")
                    continue
            meta = dict(entry.meta)
            if encoding != "utf-8":
                meta["encoding"] = encoding
            doc = Document(id=doc_id, repo=entry.repo, path=entry.path, lang=lang, content=text,
                           source=source, meta=meta)
            ledger.keep(doc, nbytes=nbytes)
            yield doc
        except Exception as exc:  # noqa: BLE001 - one bad file never stops the step
            if ledger.status_of(doc_id) is None:
                ledger.quarantine(doc_id, f"{type(exc).__name__}: {exc}", entry.repo, entry.path,
                                  entry.size or 0, reason="error")


def run_ingest(cfg: RecipeConfig, out_dir: str, run) -> StepResult:
    """Read every source of ``cfg.data.sources`` into document shards under ``out_dir`` (+ ledger)."""
    ledger = Ledger("ingest")
    counter = [0]
    per_source: dict[str, int] = {}

    def all_docs() -> Iterator[Document]:
        for i, spec in enumerate(cfg.data.sources):
            label = source_label(spec, i)
            before = counter[0]
            entries = src.open_source(spec, cfg.data)
            yield from ingest_entries(cfg, entries, label, ledger, counter)
            per_source[label] = counter[0] - before
            log.info("ingest: source %s: %d files seen", label, per_source[label])

    shards = write_documents(out_dir, all_docs(), shard_size=cfg.executor.shard_size)
    summary = ledger.close(out_dir, expected_inputs=counter[0])
    metrics = {"shards": float(len(shards))}
    for label, n in per_source.items():
        metrics[f"files_seen.{label}"] = float(n)
    return StepResult(ledger=summary, metrics=metrics, info={"shards": len(shards), "files_seen": per_source})
