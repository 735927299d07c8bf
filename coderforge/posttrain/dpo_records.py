"""The records of DPO data: preference pairs, the judged completions they come from, and the held-out split.

* ``PreferencePair``: one prompt (its chat messages and the prompt rendered with the SFT model's chat
  template and a generation prompt) with a chosen and a rejected assistant response, where each came
  from (``chosen_source``: ``completion`` or ``reference``), the rejected response's failure reason,
  the split (``train`` / ``heldout``) and the sample's provenance.
* ``JudgedCompletion``: one completion sampled from the SFT model for a prompt, the code taken from it,
  and its sandbox verdict and reason (``passed``, or a failure reason of
  :func:`coderforge.posttrain.verify.failure_reason`, or ``no_code`` when it held no code block).

Both are Parquet shards in the layout of ``coderforge.records`` (``part-NNNNN.parquet``): the pairs
directly in the ``dpo_pairs`` step's output, the completions under ``completions/``. Both work with
``coderforge.ledger.Ledger`` (``id``, ``repo``, ``path``, ``content``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields

import pyarrow as pa

from coderforge import records
from coderforge.posttrain.samples import MESSAGE

COMPLETION, REFERENCE = "completion", "reference"  # where a chosen response came from
TRAIN, HELDOUT = "train", "heldout"
COMPLETIONS_DIR = "completions"

PAIR_SCHEMA = pa.schema([
    ("id", pa.string()), ("prompt_id", pa.string()), ("language", pa.string()),
    ("messages", pa.list_(MESSAGE)), ("prompt", pa.string()),
    ("chosen", pa.string()), ("rejected", pa.string()),
    ("chosen_source", pa.string()), ("chosen_index", pa.int32()), ("rejected_index", pa.int32()),
    ("rejected_reason", pa.string()), ("rejected_detail", pa.string()),
    ("completions", pa.int32()), ("passed", pa.int32()), ("split", pa.string()),
    ("seed_id", pa.string()), ("repo", pa.string()), ("path", pa.string()),
])

COMPLETION_SCHEMA = pa.schema([
    ("id", pa.string()), ("prompt_id", pa.string()), ("index", pa.int32()), ("language", pa.string()),
    ("text", pa.string()), ("code", pa.string()), ("verdict", pa.string()), ("reason", pa.string()),
    ("detail", pa.string()), ("repo", pa.string()), ("path", pa.string()),
])


@dataclass
class PreferencePair:
    id: str
    prompt_id: str  # the verified instruction sample's id
    language: str
    messages: list[dict] = field(default_factory=list)  # the prompt turns (system when present, user)
    prompt: str = ""  # the messages rendered with the SFT tokenizer's chat template + generation prompt
    chosen: str = ""  # the assistant response text (no end-of-turn token)
    rejected: str = ""
    chosen_source: str = COMPLETION  # completion | reference
    chosen_index: int = -1  # the completion's index (-1: the reference solution)
    rejected_index: int = -1
    rejected_reason: str = ""  # test_failed, runtime_error, ..., compile_error, no_code
    rejected_detail: str = ""
    completions: int = 0  # completions sampled for the prompt
    passed: int = 0  # of which passed the tests
    split: str = TRAIN
    seed_id: str = ""
    repo: str = ""
    path: str = ""

    @property
    def content(self) -> str:  # what the ledger counts as the record's bytes
        return self.chosen + self.rejected

    def to_row(self) -> dict:
        return asdict(self)


@dataclass
class JudgedCompletion:
    id: str
    prompt_id: str
    index: int
    language: str
    text: str  # the completion as generated
    code: str = ""  # the code taken from it (coderforge.posttrain.parse)
    verdict: str = ""  # the sandbox verdict ("passed", "failed", "timeout", ...), "not_run" or "error"
    reason: str = ""  # "" when passed, else the failure reason
    detail: str = ""
    repo: str = ""
    path: str = ""

    @property
    def passed(self) -> bool:
        return self.verdict == "passed" and not self.reason

    @property
    def content(self) -> str:
        return self.text

    def to_row(self) -> dict:
        return asdict(self)


def in_heldout(key: str, fraction: float) -> bool:
    """Whether ``key`` (a prompt id) falls in the held-out share ``fraction``: a hash of the key, so the
    split is the same on every run and machine, whatever else is in the data."""
    if fraction <= 0:
        return False
    return int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) / float(16 ** 12) < fraction


def write_pairs(prefix: str, pairs: Iterable[PreferencePair], shard_size: int = 2000) -> list[str]:
    return records.write_row_shards(prefix, (p.to_row() for p in pairs), PAIR_SCHEMA, shard_size)


def write_completions(prefix: str, items: Iterable[JudgedCompletion], shard_size: int = 2000) -> list[str]:
    return records.write_row_shards(prefix, (c.to_row() for c in items), COMPLETION_SCHEMA, shard_size)


def _read(prefix: str, cls: type) -> Iterator:
    names = {f.name for f in fields(cls)}
    for uri in records.list_shards(prefix):
        for row in records.read_rows(uri):
            yield cls(**{k: v for k, v in row.items() if k in names})


def read_pairs(prefix: str) -> Iterator[PreferencePair]:
    return _read(prefix, PreferencePair)


def read_completions(prefix: str) -> Iterator[JudgedCompletion]:
    return _read(prefix, JudgedCompletion)
