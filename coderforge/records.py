"""The document schema and Parquet shards of documents.

A document is one file: ``id, repo, path, lang, content, source, meta`` (``meta`` is a JSON object
stored as a string so any step can add keys without a schema change). Shards are Parquet files
named ``part-00000.parquet`` … under a directory/prefix; steps never modify their inputs.
"""

from __future__ import annotations

import hashlib
import io
import json
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


def write_shard(uri: str, docs: Iterable[Document]) -> int:
    """Write one Parquet shard atomically; returns the number of documents written."""
    rows = [d.to_row() for d in docs]
    table = pa.Table.from_pylist(rows, schema=DOC_SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    storage.write_bytes(uri, buf.getvalue())
    return len(rows)


def write_documents(prefix: str, docs: Iterable[Document], shard_size: int = 2000) -> list[str]:
    """Write documents as consecutive shards under ``prefix``; returns the shard URIs."""
    uris: list[str] = []
    batch: list[Document] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) >= shard_size:
            uris.append(storage.join(prefix, shard_name(len(uris))))
            write_shard(uris[-1], batch)
            batch = []
    if batch or not uris:
        uris.append(storage.join(prefix, shard_name(len(uris))))
        write_shard(uris[-1], batch)
    return uris


def list_shards(prefix: str) -> list[str]:
    """The document shards directly under ``prefix`` (``part-*.parquet``); a step's other Parquet
    files (``ledger.parquet``) and subdirectories are not documents."""
    base = prefix.rstrip("/")
    out = []
    for uri in storage.list_uris(prefix, SHARD_SUFFIX):
        rel = uri[len(base):].lstrip("/") if storage.is_s3(prefix) or uri.startswith(base) else uri
        if "/" not in rel and rel.startswith("part-"):
            out.append(uri)
    return out


def read_shard(uri: str) -> Iterator[Document]:
    table = pq.read_table(io.BytesIO(storage.read_bytes(uri)))
    for row in table.to_pylist():
        yield Document.from_row(row)


def read_documents(prefix: str) -> Iterator[Document]:
    for uri in list_shards(prefix):
        yield from read_shard(uri)


def count_documents(prefix: str) -> int:
    total = 0
    for uri in list_shards(prefix):
        total += pq.ParquetFile(io.BytesIO(storage.read_bytes(uri))).metadata.num_rows
    return total
