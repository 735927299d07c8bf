"""Reading a step's input documents: only the ``part-*.parquet`` shards of a prefix.

A step's output directory also holds its ``ledger.parquet`` (and possibly other Parquet files);
``records.list_shards`` lists every ``*.parquet``, so the steps of this area read through these
helpers, which keep to the document shards that ``records.write_documents`` names.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pyarrow.parquet as pq

from coderforge import records, storage


def document_shards(prefix: str) -> list[str]:
    return [u for u in records.list_shards(prefix) if u.replace("\\", "/").rsplit("/", 1)[-1].startswith("part-")]


def read_documents(prefix: str) -> Iterator[records.Document]:
    for uri in document_shards(prefix):
        yield from records.read_shard(uri)


def count_documents(prefix: str) -> int:
    return sum(pq.ParquetFile(io.BytesIO(storage.read_bytes(u))).metadata.num_rows for u in document_shards(prefix))
