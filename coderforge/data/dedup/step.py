"""Dedup as a step: decide once (locally or on Ray), store the decision, then write every shard's survivors.

Pass 2 (per shard): keep or drop each document as decided, writing the survivors and the part
ledgers. The decision is stored with a key (``_drops/_decision.json`` beside the per-shard drop lists),
so a re-run reuses it and skips the shards already written for it.
"""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np

from coderforge import storage
from coderforge.config import RecipeConfig
from coderforge.data import minhash
from coderforge.data.dedup.decide import decide
from coderforge.data.dedup.fingerprint import doc_keys, fingerprint_shard
from coderforge.data.shardstep import run_per_shard, write_part
from coderforge.fanout import map_tasks
from coderforge.ledger import Ledger
from coderforge.records import list_shards, read_shard, shard_index, shard_rows, write_shard
from coderforge.steps import StepResult


def write_shard_survivors(cfg: RecipeConfig, in_uri: str, out_uri: str, part: str, drops_uri: str) -> dict:
    """Pass 2 over one shard: keep or drop each document as decided."""
    drops = json.loads(storage.read_text(drops_uri))
    ledger = Ledger("dedup")
    kept = []
    for doc in read_shard(in_uri):
        reason = drops.get(doc.id)
        if reason:
            ledger.drop(doc, reason)
        else:
            ledger.keep(doc)
            kept.append(doc)
    write_shard(out_uri, kept)
    write_part(part, ledger)
    return {"kept": len(kept)}


def _decision_key(cfg: RecipeConfig, shards: list[str], rows: list[int]) -> str:
    blob = json.dumps({"dedup": cfg.dedup.model_dump(mode="json"), "shards": shards, "rows": rows},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _decide_all(cfg: RecipeConfig, shards: list[str], rows: list[int]) -> tuple[list[dict[str, str]], dict]:
    """Per input shard, document id → drop reason (local or Ray), and timing/size metrics."""
    t0 = time.perf_counter()
    if cfg.executor.kind == "ray":
        from coderforge.data.dedup.on_ray import decide_on_ray

        drops, ray_info, ids = decide_on_ray(cfg, shards, rows)
        metrics = {"fingerprint_seconds": 0.0, "cluster_seconds": time.perf_counter() - t0,
                   **{f"ray_{k}": float(v) for k, v in ray_info.items()}}
    else:
        prints = map_tasks(cfg.executor, fingerprint_shard, [(cfg, u) for u in shards])
        t_sig = time.perf_counter() - t0
        keys = doc_keys(prints)
        hashes = [h for fp in prints for h in fp["hashes"]]
        sigs = np.concatenate([fp["sigs"] for fp in prints]) if prints and cfg.dedup.near else None
        t1 = time.perf_counter()
        drops = decide(keys, hashes, sigs, cfg.dedup)
        ids = [k.id for k in keys]
        metrics = {"fingerprint_seconds": t_sig, "cluster_seconds": time.perf_counter() - t1}
    per_shard: list[dict[str, str]] = [{} for _ in shards]
    pos = 0
    for s, n in enumerate(rows):
        for doc_id in ids[pos:pos + n]:
            if doc_id in drops:
                per_shard[s][doc_id] = drops[doc_id]
        pos += n
    return per_shard, metrics


def run_dedup(cfg: RecipeConfig, in_dir: str, out_dir: str, run) -> StepResult:
    """Exact + near dedup of ``in_dir``'s shards into ``out_dir``.

    Re-runs: the global decision is stored with a key (dedup section, input shards and their row
    counts); with ``executor.resume`` a matching stored decision is reused instead of recomputed, and
    output shards already written for it are skipped.
    """
    shards = list_shards(in_dir)
    rows = [shard_rows(u) for u in shards]
    key = _decision_key(cfg, shards, rows)
    done_uri = storage.join(out_dir, "_drops", "_decision.json")
    reused = False
    if cfg.executor.resume and storage.exists(done_uri) and \
            json.loads(storage.read_text(done_uri)).get("key") == key:
        per_shard = [json.loads(storage.read_text(storage.join(out_dir, "_drops", f"{s:05d}.json")))
                     for s in range(len(shards))]
        metrics = json.loads(storage.read_text(done_uri))["metrics"]
        reused = True
    else:
        per_shard, metrics = _decide_all(cfg, shards, rows)
        for s, d in enumerate(per_shard):
            storage.write_text(storage.join(out_dir, "_drops", f"{s:05d}.json"), json.dumps(d))
        storage.write_text(done_uri, json.dumps({"key": key, "metrics": metrics}))
    # pass 2: a part ledger stamped with this decision's key means its shard is already written
    summary, info = run_per_shard(cfg, "dedup", in_dir, out_dir, _DedupShard(out_dir), run,
                                  sections=("dedup",), salt=key)
    reasons = [r for d in per_shard for r in d.values()]
    metrics = {
        **metrics,
        "exact_duplicates": float(sum(1 for r in reasons if r.startswith("exact_"))),
        "near_duplicates": float(sum(1 for r in reasons if r.startswith("near_"))),
        "decision_reused": float(reused),
    }
    if cfg.dedup.near:
        b, r = minhash.lsh_layout(cfg.dedup.threshold, cfg.dedup.num_perm, cfg.dedup.bands, cfg.dedup.rows)
        metrics.update({"lsh_bands": float(b), "lsh_rows": float(r)})
    return StepResult(ledger=summary, metrics=metrics, info={**info, **{k: v for k, v in metrics.items()}})


class _DedupShard:
    """Picklable pass-2 task bound to this run's drop lists."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir

    def __call__(self, cfg: RecipeConfig, in_uri: str, out_uri: str, part: str) -> dict:
        drops_uri = storage.join(self.out_dir, "_drops", f"{shard_index(part):05d}.json")
        return write_shard_survivors(cfg, in_uri, out_uri, part, drops_uri)
