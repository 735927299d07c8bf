"""The document schema and the one API for document shards, used by every step (data and tokens).

A document is one file: ``id, repo, path, lang, content, source, meta`` (``meta`` is a JSON object
stored as a string so any step can add keys without a schema change). Shards are Parquet files
named ``part-00000.parquet`` … directly under a directory/prefix; steps never modify their inputs.
A step's output directory also holds other files (``ledger.parquet``, ``_parts/`` …): only the
``part-NNNNN.parquet`` files directly under the prefix are documents, and every reader below keeps
to them (:func:`list_shards`).

* write: :func:`write_shard` (one shard, atomic), :func:`write_documents` (consecutive shards);
* list and count: :func:`list_shards`, :func:`shard_rows`, :func:`count_documents`, :func:`shard_index`;
* read: :func:`read_shard`, :func:`read_documents` (every shard of a prefix, in order).
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from coderforge import storage

DOC_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("repo", pa.string()),
        pa.field("path", pa.string()),
        pa.field("lang", pa.string()),
        pa.field("content", pa.large_string()),
        pa.field("source", pa.string()),
        pa.field("meta", pa.string()),
    ]
)

SHARD_SUFFIX = ".parquet"
_SHARD_RE = re.compile(r"^part-\d{5,}\.parquet$")


@dataclass
class Document:
    id: str
    repo: str
    path: str
    lang: str
    content: str
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def with_content(self, content: str, **meta: Any) -> Document:
        return replace(self, content=content, meta={**self.meta, **meta})

    def to_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "repo": self.repo,
            "path": self.path,
            "lang": self.lang,
            "content": self.content,
            "source": self.source,
            "meta": json.dumps(self.meta, sort_keys=True, ensure_ascii=False),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Document:
        meta = row.get("meta") or "{}"
        return cls(
            id=row["id"],
            repo=row.get("repo") or "",
            path=row.get("path") or "",
            lang=row.get("lang") or "",
            content=row.get("content") or "",
            source=row.get("source") or "",
            meta=json.loads(meta) if isinstance(meta, str) else dict(meta),
        )


def document_id(source: str, repo: str, path: str) -> str:
    """Stable id of a file: the same source/repo/path always gets the same id."""
    return hashlib.sha1(f"{source}\x00{repo}\x00{path}".encode()).hexdigest()[:20]


def shard_name(index: int) -> str:
    return f"part-{index:05d}{SHARD_SUFFIX}"


def write_rows(uri: str, rows: list[dict], schema: pa.Schema) -> int:
    """Write one Parquet shard of ``rows`` atomically; returns the number of rows written."""
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buf, compression="zstd")
    storage.write_bytes(uri, buf.getvalue())
    return len(rows)


def write_row_shards(prefix: str, rows: Iterable[dict], schema: pa.Schema, shard_size: int = 2000) -> list[str]:
    """Write rows as consecutive shards under ``prefix`` (at least one, maybe empty); returns the URIs."""
    uris: list[str] = []
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= shard_size:
            uris.append(storage.join(prefix, shard_name(len(uris))))
            write_rows(uris[-1], batch, schema)
            batch = []
    if batch or not uris:
        uris.append(storage.join(prefix, shard_name(len(uris))))
        write_rows(uris[-1], batch, schema)
    return uris


def write_shard(uri: str, docs: Iterable[Document]) -> int:
    """Write one Parquet shard of documents atomically; returns the number of documents written."""
    return write_rows(uri, [d.to_row() for d in docs], DOC_SCHEMA)


def write_documents(prefix: str, docs: Iterable[Document], shard_size: int = 2000) -> list[str]:
    """Write documents as consecutive shards under ``prefix``; returns the shard URIs."""
    return write_row_shards(prefix, (d.to_row() for d in docs), DOC_SCHEMA, shard_size)


def list_shards(prefix: str) -> list[str]:
    """The document shards directly under ``prefix`` (``part-NNNNN.parquet``), in order: a step's other
    Parquet files (``ledger.parquet``) and subdirectories are not documents."""
    base = str(prefix).rstrip("/")
    out = []
    for uri in storage.list_uris(prefix, SHARD_SUFFIX):
        rel = uri[len(base):].lstrip("/") if storage.is_s3(base) \
            else posixpath.relpath(uri, storage.local_path(base).as_posix())
        if "/" not in rel and _SHARD_RE.match(rel):
            out.append(uri)
    return out


def shard_index(uri: str) -> int:
    """The number of a shard (``.../part-00012.parquet`` → 12; also for names derived from it)."""
    return int(uri.rsplit("part-", 1)[1].split(".", 1)[0])


def read_rows(uri: str) -> list[dict]:
    """The rows of one shard."""
    return pq.read_table(io.BytesIO(storage.read_bytes(uri))).to_pylist()


def read_shard(uri: str) -> Iterator[Document]:
    for row in read_rows(uri):
        yield Document.from_row(row)


def read_documents(prefix: str) -> Iterator[Document]:
    for uri in list_shards(prefix):
        yield from read_shard(uri)


def shard_rows(uri: str) -> int:
    """Documents in one shard (from the Parquet footer; the rows are not read)."""
    return pq.ParquetFile(io.BytesIO(storage.read_bytes(uri))).metadata.num_rows


def count_documents(prefix: str) -> int:
    return sum(shard_rows(uri) for uri in list_shards(prefix))
