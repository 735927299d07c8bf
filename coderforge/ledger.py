"""Per-step accounting: every input document is kept, dropped (reason code) or quarantined (error).

A step records one entry per input; ``Ledger.close(expected_inputs=N)`` checks that
inputs = kept + dropped + quarantined and that no document was accounted for twice, then writes
``ledger.parquet`` (one row per input) and ``ledger.json`` (counts per status and reason) beside the
step's output. Reason codes are short and greppable: ``max_line_length``, ``exact_duplicate_of:<id>``,
``contaminated:humaneval/12``; the part before ``:`` is the reason *kind* used for funnel charts.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from coderforge import storage

KEPT, DROPPED, QUARANTINED = "kept", "dropped", "quarantined"
STATUSES = (KEPT, DROPPED, QUARANTINED)

LEDGER_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("repo", pa.string()),
        ("path", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("bytes", pa.int64()),
    ]
)


class LedgerImbalance(AssertionError):
    """A step lost or double-counted documents."""


def reason_kind(reason: str) -> str:
    return reason.split(":", 1)[0] if reason else ""


@dataclass
class LedgerSummary:
    step: str
    inputs: int
    kept: int
    dropped: int
    quarantined: int
    reasons: dict[str, int]
    bytes_in: int
    bytes_kept: int
    fixed: int = 0

    def as_dict(self) -> dict:
        return {
            "step": self.step,
            "in": self.inputs,
            "kept": self.kept,
            "dropped": self.dropped,
            "quarantined": self.quarantined,
            "reasons": dict(sorted(self.reasons.items())),
            "bytes_in": self.bytes_in,
            "bytes_kept": self.bytes_kept,
            "fixed": self.fixed,
        }

    def metrics(self) -> dict[str, float]:
        out = {
            "docs_in": self.inputs,
            "docs_kept": self.kept,
            "docs_dropped": self.dropped,
            "docs_quarantined": self.quarantined,
            "bytes_in": self.bytes_in,
            "bytes_kept": self.bytes_kept,
        }
        for reason, n in self.reasons.items():
            out[f"drop.{_metric_safe(reason)}"] = n
        return out


@dataclass(frozen=True, slots=True)
class DocRef:
    """What the ledger needs of a document it records without its content: a file that never became a
    document (refused or unreadable at ingest), or an entry replayed from a part ledger (give ``nbytes``)."""

    id: str
    repo: str
    path: str
    content: str = ""


def _metric_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)[:200]


class Ledger:
    def __init__(self, step: str):
        self.step = step
        self._rows: dict[str, tuple] = {}
        self._duplicates: list[str] = []
        self.fixed = 0

    def _add(self, doc_id: str, status: str, reason: str, detail: str, repo: str, path: str, nbytes: int):
        if doc_id in self._rows:
            self._duplicates.append(doc_id)
        self._rows[doc_id] = (doc_id, repo, path, status, reason, detail, int(nbytes))

    def keep(self, doc, detail: str = "", nbytes: int | None = None):
        self._add(doc.id, KEPT, "", detail, doc.repo, doc.path, _nbytes(doc, nbytes))

    def drop(self, doc, reason: str, detail: str = "", nbytes: int | None = None):
        if not reason:
            raise ValueError("a drop needs a reason code")
        self._add(doc.id, DROPPED, reason, detail, doc.repo, doc.path, _nbytes(doc, nbytes))

    def quarantine(self, doc_id: str, error: str, repo: str = "", path: str = "", nbytes: int = 0,
                   reason: str = "error"):
        self._add(doc_id, QUARANTINED, reason, error[:4000], repo, path, nbytes)

    def replay(self, rows: list[dict], fixed: int = 0) -> None:
        """Record the entries of another ledger (``Ledger.entries()`` rows, e.g. a shard's part ledger)."""
        for row in rows:
            ref = DocRef(row["id"], row["repo"], row["path"])
            if row["status"] == KEPT:
                self.keep(ref, detail=row["detail"], nbytes=row["bytes"])
            elif row["status"] == DROPPED:
                self.drop(ref, row["reason"], row["detail"], nbytes=row["bytes"])
            else:
                self.quarantine(row["id"], row["detail"], row["repo"], row["path"], row["bytes"],
                                reason=row["reason"])
        self.fixed += int(fixed)

    def __len__(self) -> int:
        return len(self._rows)

    def status_of(self, doc_id: str) -> str | None:
        row = self._rows.get(doc_id)
        return row[3] if row else None

    def entries(self) -> list[dict]:
        names = LEDGER_SCHEMA.names
        return [dict(zip(names, row, strict=True)) for row in self._rows.values()]

    def summary(self) -> LedgerSummary:
        counts = Counter(row[3] for row in self._rows.values())
        reasons = Counter(reason_kind(row[4]) for row in self._rows.values() if row[3] != KEPT)
        return LedgerSummary(
            step=self.step,
            inputs=len(self._rows),
            kept=counts[KEPT],
            dropped=counts[DROPPED],
            quarantined=counts[QUARANTINED],
            reasons=dict(reasons),
            bytes_in=sum(row[6] for row in self._rows.values()),
            bytes_kept=sum(row[6] for row in self._rows.values() if row[3] == KEPT),
            fixed=self.fixed,
        )

    def check(self, expected_inputs: int | None = None) -> LedgerSummary:
        if self._duplicates:
            raise LedgerImbalance(
                f"step {self.step}: {len(self._duplicates)} documents accounted for twice, "
                f"e.g. {self._duplicates[:3]}"
            )
        s = self.summary()
        if s.kept + s.dropped + s.quarantined != s.inputs:
            raise LedgerImbalance(f"step {self.step}: statuses do not add up: {s.as_dict()}")
        if expected_inputs is not None and expected_inputs != s.inputs:
            raise LedgerImbalance(
                f"step {self.step}: {expected_inputs} documents came in but the ledger accounts for "
                f"{s.inputs} (kept {s.kept} + dropped {s.dropped} + quarantined {s.quarantined})"
            )
        return s

    def close(self, out_dir: str, expected_inputs: int | None = None) -> LedgerSummary:
        """Check the balance and write ``ledger.parquet`` and ``ledger.json`` into ``out_dir``."""
        s = self.check(expected_inputs)
        table = pa.Table.from_pylist(self.entries(), schema=LEDGER_SCHEMA)
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        storage.write_bytes(storage.join(out_dir, "ledger.parquet"), buf.getvalue())
        storage.write_text(storage.join(out_dir, "ledger.json"), json.dumps(s.as_dict(), indent=2))
        return s


def _nbytes(doc, nbytes: int | None) -> int:
    if nbytes is not None:
        return nbytes
    return len(doc.content.encode("utf-8", "surrogatepass"))


def read_ledger(out_dir: str) -> list[dict]:
    table = pq.read_table(io.BytesIO(storage.read_bytes(storage.join(out_dir, "ledger.parquet"))))
    return table.to_pylist()


def read_summary(out_dir: str) -> dict:
    return json.loads(storage.read_text(storage.join(out_dir, "ledger.json")))
