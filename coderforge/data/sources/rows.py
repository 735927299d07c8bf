"""Parquet and JSONL rows as sources, in The Stack's layout.

Columns: ``content``; ``path`` (or ``max_stars_repo_path``); ``repo_name`` (or
``max_stars_repo_name``, ``repo``); ``lang`` (or ``language``); every other column goes to ``meta``.
``source.columns`` renames. Malformed rows (bad JSON, missing or non-string content/path) are
quarantined as ``malformed_row``; an unreadable row group or file as ``unreadable``. A directory
source reads every Parquet (JSONL) file under it.
"""

from __future__ import annotations

import gzip
import io
import json
import posixpath
from collections.abc import Iterator
from typing import Any

from coderforge import storage
from coderforge.config import DataSection, SourceSpec
from coderforge.data.sources.entry import Entry, refused

STACK_COLUMNS = {
    "content": ("content", "text", "code"),
    "path": ("path", "max_stars_repo_path", "file_path", "filename"),
    "repo": ("repo_name", "max_stars_repo_name", "repo", "repository"),
    "lang": ("lang", "language"),
}


def _column_map(spec: SourceSpec, names: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for field_name, candidates in STACK_COLUMNS.items():
        if field_name in spec.columns:
            out[field_name] = spec.columns[field_name]
        else:
            out[field_name] = next((c for c in candidates if c in names), None)
    return out


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, str | int | float | bool):
        return v
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return str(v)


def row_entry(row: dict, cols: dict[str, str | None], spec: SourceSpec, where: str,
              default_repo: str) -> Entry:
    path = row.get(cols["path"]) if cols["path"] else None
    content = row.get(cols["content"]) if cols["content"] else None
    repo = row.get(cols["repo"]) if cols["repo"] else None
    repo = spec.repo_name or (repo if isinstance(repo, str) and repo else default_repo)
    if not isinstance(path, str) or not path:
        return refused(repo, where, "malformed_row", f"{where}: no path (column {cols['path']!r})",
                       status="quarantined")
    if not isinstance(content, str):
        return refused(repo, path, "malformed_row",
                       f"{where}: content is {type(content).__name__}, not text (column {cols['content']!r})",
                       status="quarantined")
    lang = row.get(cols["lang"]) if cols["lang"] else None
    used = {c for c in cols.values() if c}
    meta = {k: _jsonable(v) for k, v in row.items() if k not in used}
    meta["row"] = where
    return Entry(repo, path, size=None, text=content, lang=lang if isinstance(lang, str) else None, meta=meta)


def _files(uri: str, suffixes: tuple[str, ...]) -> list[str]:
    if storage.is_s3(uri) or not storage.local_path(uri).is_dir():
        return [uri]
    return [u for u in storage.list_uris(uri) if u.lower().endswith(suffixes)]


def parquet_entries(spec: SourceSpec, data: DataSection) -> Iterator[Entry]:
    import pyarrow.parquet as pq

    for uri in _files(spec.uri, (".parquet", ".pq")):
        name = posixpath.basename(uri)
        default_repo = name.rsplit(".", 1)[0]
        try:
            pf = pq.ParquetFile(io.BytesIO(storage.read_bytes(uri)))
        except Exception as exc:  # noqa: BLE001 - a corrupt file is one quarantined entry
            yield refused(default_repo, name, "unreadable", f"parquet: {type(exc).__name__}: {exc}",
                          status="quarantined")
            continue
        cols = _column_map(spec, pf.schema_arrow.names)
        if cols["content"] is None:
            yield refused(default_repo, name, "malformed_row", f"{name}: no content column "
                          f"(columns {pf.schema_arrow.names[:20]})", status="quarantined")
            continue
        n = 0
        for rg in range(pf.num_row_groups):
            try:
                rows = pf.read_row_group(rg).to_pylist()
            except Exception as exc:  # noqa: BLE001
                yield refused(default_repo, f"{name}#rowgroup{rg}", "unreadable",
                              f"row group {rg}: {type(exc).__name__}: {exc}", status="quarantined")
                continue
            for row in rows:
                entry = row_entry(row, cols, spec, f"{name}:{n}", default_repo)
                n += 1
                if spec.repos is None or entry.repo in spec.repos:
                    yield entry


def jsonl_entries(spec: SourceSpec, data: DataSection) -> Iterator[Entry]:
    for uri in _files(spec.uri, (".jsonl", ".jsonl.gz", ".ndjson", ".json.gz")):
        name = posixpath.basename(uri)
        default_repo = name.split(".", 1)[0]
        raw = storage.read_bytes(uri)
        if uri.endswith(".gz"):
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError) as exc:
                yield refused(default_repo, name, "unreadable", f"gzip: {exc}", status="quarantined")
                continue
        for lineno, line in enumerate(raw.split(b"\n"), start=1):
            if not line.strip():
                continue
            where = f"{name}:{lineno}"
            try:
                row = json.loads(line)
            except ValueError as exc:
                yield refused(default_repo, where, "malformed_row", f"{where}: {exc}", status="quarantined")
                continue
            if not isinstance(row, dict):
                yield refused(default_repo, where, "malformed_row", f"{where}: not an object",
                              status="quarantined")
                continue
            cols = _column_map(spec, list(row))  # JSONL rows need not share their keys
            entry = row_entry(row, cols, spec, where, default_repo)
            if spec.repos is None or entry.repo in spec.repos:
                yield entry
