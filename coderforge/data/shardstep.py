"""Per-shard steps with resume: shard ``i`` of the input → shard ``i`` of the output + a part ledger.

A shard task writes its output shard, then its part ledger (``_parts/part-NNNNN.ledger.json``);
both writes are atomic, so a part ledger present means the shard is complete, and a re-run with
``executor.resume`` skips it. The driver merges the part ledgers into the step's ledger and checks
inputs = kept + dropped + quarantined against the input shards' row counts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

from coderforge import storage
from coderforge.config import RecipeConfig
from coderforge.fanout import map_tasks
from coderforge.ledger import Ledger, LedgerSummary
from coderforge.records import list_shards, shard_name, shard_rows, write_shard


def part_uri(out_dir: str, index: int) -> str:
    return storage.join(out_dir, "_parts", shard_name(index).replace(".parquet", ".ledger.json"))


def write_part(uri: str, ledger: Ledger, extra: dict | None = None) -> None:
    storage.write_text(uri, json.dumps({"rows": ledger.entries(), "fixed": ledger.fixed, **(extra or {})}))


class _Task:
    """Runs the step's shard function, then stamps the part ledger with the shard's key."""

    def __init__(self, fn: Callable[[RecipeConfig, str, str, str], dict]):
        self.fn = fn

    def __call__(self, cfg: RecipeConfig, in_uri: str, out_uri: str, part: str, key: str) -> dict:
        result = self.fn(cfg, in_uri, out_uri, part)
        body = json.loads(storage.read_text(part))
        body["key"] = key
        storage.write_text(part, json.dumps(body))
        return result


def _fingerprint(cfg: RecipeConfig, sections: tuple[str, ...], in_uri: str, rows: int, salt: str = "") -> str:
    blob = json.dumps({s: getattr(cfg, s).model_dump(mode="json") for s in sections}, sort_keys=True)
    return hashlib.sha256(f"{blob}|{in_uri}|{rows}|{salt}".encode()).hexdigest()[:16]


def _done(part: str, out_shard: str, key: str) -> bool:
    if not (storage.exists(part) and storage.exists(out_shard)):
        return False
    try:
        return json.loads(storage.read_text(part)).get("key") == key
    except ValueError:
        return False


def run_per_shard(cfg: RecipeConfig, step: str, in_dir: str, out_dir: str,
                  shard_fn: Callable[[RecipeConfig, str, str, str], dict],
                  run=None, sections: tuple[str, ...] = (), salt: str = "") -> tuple[LedgerSummary, dict]:
    """Run ``shard_fn(cfg, in_shard, out_shard, part_uri)`` for every input shard not yet done.

    A shard counts as done when its part ledger carries the same key: the recipe ``sections`` the
    step reads, the input shard's URI and its row count (a changed recipe redoes the shard), plus
    ``salt`` (e.g. a global decision the shard's output depends on).
    """
    shards = list_shards(in_dir)
    rows = [shard_rows(u) for u in shards]
    expected = sum(rows)
    tasks, skipped = [], 0
    for i, uri in enumerate(shards):
        part, out_shard = part_uri(out_dir, i), storage.join(out_dir, shard_name(i))
        key = _fingerprint(cfg, sections, uri, rows[i], salt)
        if cfg.executor.resume and _done(part, out_shard, key):
            skipped += 1
            continue
        tasks.append((cfg, uri, out_shard, part, key))
    map_tasks(cfg.executor, _Task(shard_fn), tasks)
    ledger = Ledger(step)
    extras: dict = {}
    for i in range(len(shards)):
        part = json.loads(storage.read_text(part_uri(out_dir, i)))
        ledger.replay(part["rows"], part.get("fixed", 0))
        for k, v in part.items():
            if k not in ("rows", "fixed", "key") and isinstance(v, int | float):
                extras[k] = extras.get(k, 0) + v
    if not shards:
        write_shard(storage.join(out_dir, shard_name(0)), [])
    summary = ledger.close(out_dir, expected_inputs=expected)
    return summary, {"shards": len(shards), "shards_resumed": skipped, **extras}
