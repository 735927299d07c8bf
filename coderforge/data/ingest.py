"""Ingest: repositories → document shards, every file seen accounted for in the ledger.

Sources (``cfg.data.sources``), each read by :mod:`coderforge.data.sources` (one module per kind):

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

import hashlib
import json
import logging
import os
from collections.abc import Iterator

from coderforge import storage
from coderforge.config import RecipeConfig, SourceSpec
from coderforge.data.encoding import EncodingError, decode_text, looks_binary
from coderforge.data.languages import canonical_language, language_of
from coderforge.data.sources import Entry, open_source
from coderforge.ledger import DocRef, Ledger
from coderforge.records import Document, document_id, list_shards, shard_name, write_shard
from coderforge.steps import StepResult

log = logging.getLogger("coderforge.ingest")


def source_label(spec: SourceSpec, index: int) -> str:
    return spec.name or f"source{index}"


def _record_refusal(ledger: Ledger, entry: Entry, ref: DocRef) -> None:
    status, reason, detail = entry.refusal
    if status == "quarantined":
        ledger.quarantine(ref.id, detail, entry.repo, entry.path, entry.size or 0, reason=reason)
    else:
        ledger.drop(ref, reason, detail, nbytes=entry.size or 0)


def _given_text(entry: Entry, ref: DocRef, ledger: Ledger, max_bytes: int) -> tuple[str, str, int] | None:
    """A row's text as it came (``too_large`` and NUL checks); None when recorded as dropped."""
    text = entry.text
    nbytes = len(text.encode("utf-8", "surrogatepass"))
    if nbytes > max_bytes:
        ledger.drop(ref, "too_large", f"{nbytes} > {max_bytes}", nbytes=nbytes)
        return None
    if "\x00" in text:
        ledger.drop(ref, "binary", "NUL character in content", nbytes=nbytes)
        return None
    return text, "utf-8", nbytes


def _read_text(cfg: RecipeConfig, entry: Entry, ref: DocRef, ledger: Ledger) -> tuple[str, str, int] | None:
    """A file's text, encoding and size in bytes, read at most ``max_file_bytes + 1`` bytes far;
    None when the file was recorded as dropped (too large, binary) or quarantined (unreadable, encoding)."""
    max_bytes = cfg.data.max_file_bytes
    if entry.text is not None:
        return _given_text(entry, ref, ledger, max_bytes)
    try:
        data = entry.read(max_bytes + 1)
    except Exception as exc:  # noqa: BLE001 - OSError, truncated archives (EOFError, zlib.error)
        ledger.quarantine(ref.id, f"{type(exc).__name__}: {exc}", entry.repo, entry.path,
                          entry.size or 0, reason="unreadable")
        return None
    nbytes = len(data)
    if nbytes > max_bytes:
        ledger.drop(ref, "too_large", f"> {max_bytes}", nbytes=nbytes)
        return None
    if looks_binary(data):
        ledger.drop(ref, "binary", "", nbytes=nbytes)
        return None
    try:
        text, encoding = decode_text(data, detect=cfg.data.detect_encoding)
    except EncodingError as exc:
        ledger.quarantine(ref.id, str(exc), entry.repo, entry.path, nbytes, reason="encoding")
        return None
    return text, encoding, nbytes


def ingest_entries(cfg: RecipeConfig, entries: Iterator[Entry], source: str, ledger: Ledger,
                   counter: list[int], seen: Ledger | None = None) -> Iterator[Document]:
    """Turn source entries into documents, recording each entry in ``ledger`` (ids unique in ``seen`` too)."""
    max_bytes = cfg.data.max_file_bytes
    for entry in entries:
        counter[0] += 1
        doc_id = entry.doc_id or document_id(source, entry.repo, entry.path)
        if ledger.status_of(doc_id) is not None or (seen is not None and seen.status_of(doc_id) is not None):
            # same source/repo/path twice (e.g. a tar with a repeated member): id made unique, still recorded
            doc_id = document_id(source, entry.repo, f"{entry.path}#{counter[0]}")
        ref = DocRef(doc_id, entry.repo, entry.path)
        try:
            if entry.refusal is not None:
                _record_refusal(ledger, entry, ref)
                continue
            lang = canonical_language(entry.lang) if entry.lang else None
            lang = lang or language_of(entry.path)
            if lang is None:
                ledger.drop(ref, "unknown_language", entry.lang or "", nbytes=entry.size or 0)
                continue
            if entry.size is not None and entry.size > max_bytes:
                ledger.drop(ref, "too_large", f"{entry.size} > {max_bytes}", nbytes=entry.size)
                continue
            read = _read_text(cfg, entry, ref, ledger)
            if read is None:
                continue
            text, encoding, nbytes = read
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


def _source_key(cfg: RecipeConfig, spec: SourceSpec, first_shard: int, counter_start: int) -> str:
    """What a source's shards depend on: its spec, the ingest settings, where its shards and ids start,
    and for a local directory or file the newest modification time under it (a changed tree redoes it)."""
    data = cfg.data.model_dump(mode="json")
    data.pop("sources", None)
    blob = {"spec": spec.model_dump(mode="json"), "data": data, "shard_size": cfg.executor.shard_size,
            "first_shard": first_shard, "counter_start": counter_start, "mtime": _newest_mtime(spec.uri)}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def _newest_mtime(uri: str) -> float | None:
    if storage.is_s3(uri) or "://" in uri or not os.path.exists(uri):
        return None  # remote sources (S3, git URLs) are keyed by their spec alone
    newest = os.stat(uri).st_mtime
    if os.path.isdir(uri):
        for root, dirs, files in os.walk(uri):
            for name in dirs + files:
                try:
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
                except OSError:
                    continue
    return newest


def _write_source(cfg: RecipeConfig, docs: Iterator[Document], out_dir: str, first: int) -> list[str]:
    """Write ``docs`` as shards ``first, first + 1, ...`` (none when ``docs`` is empty)."""
    names: list[str] = []
    batch: list[Document] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) >= cfg.executor.shard_size:
            names.append(shard_name(first + len(names)))
            write_shard(storage.join(out_dir, names[-1]), batch)
            batch = []
    if batch:
        names.append(shard_name(first + len(names)))
        write_shard(storage.join(out_dir, names[-1]), batch)
    return names


def run_ingest(cfg: RecipeConfig, out_dir: str, run) -> StepResult:
    """Read every source of ``cfg.data.sources`` into document shards under ``out_dir`` (+ ledger).

    Shards are numbered across sources in order. Each completed source leaves a record
    (``_sources/NNNNN.json``: key, shard names, files seen, ledger rows); on a re-run with
    ``executor.resume`` a source whose record carries the same key (see :func:`_source_key`) and whose
    shards are all present is not read again: its ledger rows are replayed.
    """
    ledger = Ledger("ingest")
    counter = [0]
    per_source: dict[str, int] = {}
    names: list[str] = []
    resumed = 0
    for i, spec in enumerate(cfg.data.sources):
        label = source_label(spec, i)
        record_uri = storage.join(out_dir, "_sources", f"{i:05d}.json")
        key = _source_key(cfg, spec, len(names), counter[0])
        if cfg.executor.resume and storage.exists(record_uri):
            try:
                record = json.loads(storage.read_text(record_uri))
            except ValueError:
                record = {}
            same_key = record.get("key") == key
            if same_key and all(storage.exists(storage.join(out_dir, n)) for n in record["shards"]):
                ledger.replay(record["rows"])
                counter[0] += record["files_seen"]
                per_source[label] = record["files_seen"]
                names += record["shards"]
                resumed += 1
                log.info("ingest: source %s already ingested (%d shards), skipped", label,
                         len(record["shards"]))
                continue
        before = counter[0]
        src_ledger = Ledger("ingest")
        docs = ingest_entries(cfg, open_source(spec, cfg.data), label, src_ledger, counter, ledger)
        written = _write_source(cfg, docs, out_dir, len(names))
        per_source[label] = counter[0] - before
        names += written
        rows = src_ledger.entries()
        ledger.replay(rows)
        storage.write_text(record_uri, json.dumps({"key": key, "shards": written,
                                                   "files_seen": per_source[label], "rows": rows}))
        log.info("ingest: source %s: %d files seen", label, per_source[label])
    if not names:
        names.append(shard_name(0))
        write_shard(storage.join(out_dir, names[0]), [])
    for uri in list_shards(out_dir):  # shards of an earlier, larger run are not documents of this one
        if uri.rsplit("/", 1)[-1] not in names:
            storage.delete_prefix(uri)
    summary = ledger.close(out_dir, expected_inputs=counter[0])
    metrics = {"shards": float(len(names)), "sources_resumed": float(resumed)}
    for label, n in per_source.items():
        metrics[f"files_seen.{label}"] = float(n)
    return StepResult(ledger=summary, metrics=metrics,
                      info={"shards": len(names), "files_seen": per_source, "sources_resumed": resumed})
