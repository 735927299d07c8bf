"""The records of post-training data, and their shards.

* ``Seed``: a function or class with a docstring (and its doctests, where present) mined from a
  curated document, with its provenance (document id, repository, path, symbol).
* ``InstructionSample``: a problem in chat-messages form (system / user / assistant) with its
  solution, its unit tests, the seed it came from and, once verified, its sandbox verdict.

Both are stored as Parquet shards (``part-NNNNN.parquet``, the document shard layout of
``coderforge.records``) and both work with ``coderforge.ledger.Ledger`` (``id``, ``repo``,
``path`` and ``content``), so every seed and sample entering a step is accounted for.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields

import pyarrow as pa

from coderforge import records

SEED_SCHEMA = pa.schema([
    ("id", pa.string()), ("language", pa.string()), ("kind", pa.string()), ("name", pa.string()),
    ("code", pa.string()), ("docstring", pa.string()), ("doctest", pa.string()),
    ("doc_id", pa.string()), ("repo", pa.string()), ("path", pa.string()),
])

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])

SAMPLE_SCHEMA = pa.schema([
    ("id", pa.string()), ("language", pa.string()), ("seed_id", pa.string()),
    ("doc_id", pa.string()), ("repo", pa.string()), ("path", pa.string()), ("symbol", pa.string()),
    ("messages", pa.list_(MESSAGE)), ("problem", pa.string()), ("solution", pa.string()),
    ("tests", pa.string()), ("teacher", pa.string()), ("raw", pa.string()),
    ("verdict", pa.string()), ("reason", pa.string()), ("detail", pa.string()),
])


def stable_id(*parts: str) -> str:
    return hashlib.sha1("\x00".join(parts).encode()).hexdigest()[:20]


@dataclass
class Seed:
    id: str
    language: str
    kind: str  # "function" | "class"
    name: str
    code: str
    docstring: str
    doctest: str
    doc_id: str
    repo: str
    path: str

    @property
    def content(self) -> str:  # what the ledger counts as the record's bytes
        return self.code

    def to_row(self) -> dict:
        return asdict(self)


@dataclass
class InstructionSample:
    id: str
    language: str
    seed_id: str
    doc_id: str
    repo: str
    path: str
    symbol: str
    messages: list[dict] = field(default_factory=list)  # [{"role": ..., "content": ...}]
    problem: str = ""
    solution: str = ""
    tests: str = ""
    teacher: str = ""
    raw: str = ""  # the teacher's whole response
    verdict: str = ""  # the sandbox verdict once verified ("passed", "failed", "timeout", ...)
    reason: str = ""  # the ledger reason when not kept
    detail: str = ""

    @property
    def content(self) -> str:
        return self.raw or self.solution

    def to_row(self) -> dict:
        return asdict(self)


def write_seeds(prefix: str, seeds: Iterable[Seed], shard_size: int = 2000) -> list[str]:
    return records.write_row_shards(prefix, (s.to_row() for s in seeds), SEED_SCHEMA, shard_size)


def write_samples(prefix: str, samples: Iterable[InstructionSample], shard_size: int = 2000) -> list[str]:
    return records.write_row_shards(prefix, (s.to_row() for s in samples), SAMPLE_SCHEMA, shard_size)


def _read(prefix: str, cls: type) -> Iterator:
    names = {f.name for f in fields(cls)}
    for uri in records.list_shards(prefix):
        for row in records.read_rows(uri):
            yield cls(**{k: v for k, v in row.items() if k in names})


def read_seeds(prefix: str) -> Iterator[Seed]:
    return _read(prefix, Seed)


def read_samples(prefix: str) -> Iterator[InstructionSample]:
    return _read(prefix, InstructionSample)
