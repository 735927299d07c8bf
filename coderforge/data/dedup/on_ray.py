"""Dedup decisions on Ray (``executor.kind: ray``): no document's fingerprint goes through the driver.

1. **Map** (one Ray task per input shard): exact hash, MinHash signature and LSH band keys of every
   document (:func:`coderforge.data.dedup.fingerprint.fingerprint_shard`). The task returns the small
   keep-rule attributes (id, path, length, stars) to the driver, leaves the signatures in the object
   store, and emits its grouping records — ``(band, key, doc)``, band ``-1`` carrying the exact content hash —
   already split into ``P`` partitions by a hash of ``(band, key)``: the shuffle.
2. **Reduce** (one task per partition): sort the partition's records by key, turn each run of equal keys
   into exact groups (band ``-1``) or candidate pairs (first member paired with the rest:
   :func:`coderforge.data.minhash.bucket_pairs`, as in-process).
3. **Verify** (one task per shard, when ``dedup.verify``): estimated Jaccard of each candidate pair whose
   first member is in the shard, against the signatures fetched from the object store.
4. **Driver**: the keep rule on the exact groups, union-find over the verified pairs (few, compared with
   the documents), the keep rule per cluster of exact survivors (:mod:`coderforge.data.dedup.decide`).

Same decisions as the in-process path (tested): exact duplicates have equal normalised content, hence the
same word tokens, hence equal signatures, so grouping every document (not only exact survivors) links the
same survivors, and a cluster's kept document is the same minimum of the keep rule.
"""

from __future__ import annotations

import logging

import numpy as np

from coderforge.config import RecipeConfig
from coderforge.data import minhash
from coderforge.data.dedup.decide import UnionFind, keep_one, keep_sort_key
from coderforge.data.dedup.fingerprint import doc_keys, fingerprint_shard
from coderforge.data.ngrams import mix64
from coderforge.fanout import ray_init

log = logging.getLogger("coderforge.dedup")

RECORD = np.dtype([("band", "<i4"), ("k1", "<u8"), ("k2", "<u8"), ("idx", "<i8")])
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def grouping_records(cfg: RecipeConfig, hashes: list[str], sigs: np.ndarray, offset: int) -> np.ndarray:
    """One record per (document, exact hash) and per (document, LSH band)."""
    d = cfg.dedup
    n = len(hashes)
    idx = np.arange(offset, offset + n, dtype=np.int64)
    out = []
    if d.exact and n:
        rec = np.empty(n, dtype=RECORD)
        rec["band"] = -1
        rec["k1"] = np.array([int(h[:16], 16) for h in hashes], dtype=np.uint64)
        rec["k2"] = np.array([int(h[16:32], 16) for h in hashes], dtype=np.uint64)
        rec["idx"] = idx
        out.append(rec)
    if d.near and n:
        bands, rows = minhash.lsh_layout(d.threshold, d.num_perm, d.bands, d.rows)
        for b, keys in enumerate(minhash.band_keys(sigs, bands, rows)):
            rec = np.empty(n, dtype=RECORD)
            rec["band"], rec["k1"], rec["k2"], rec["idx"] = b, keys, 0, idx
            out.append(rec)
    return np.concatenate(out) if out else np.zeros(0, dtype=RECORD)


def partition_of(records: np.ndarray, parts: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        mixed = mix64(records["k1"] ^ (records["band"].astype(np.int64).astype(np.uint64) * _GOLDEN))
    return (mixed % np.uint64(parts)).astype(np.int64)


def map_shard(cfg: RecipeConfig, uri: str, offset: int, parts: int) -> tuple:
    """Ray map task: ``(meta, signatures, partition_0, ..., partition_{parts-1})``."""
    fp = fingerprint_shard(cfg, uri)
    records = grouping_records(cfg, fp["hashes"], fp["sigs"], offset)
    which = partition_of(records, parts)
    meta = {k: fp[k] for k in ("ids", "paths", "lengths", "stars")}
    return (meta, fp["sigs"], *[records[which == p] for p in range(parts)])


def _same_as_previous(rec: np.ndarray) -> np.ndarray:
    """``out[i]``: record ``i + 1`` has the same (band, key) as record ``i``."""
    return (rec["band"][1:] == rec["band"][:-1]) & (rec["k1"][1:] == rec["k1"][:-1]) & \
        (rec["k2"][1:] == rec["k2"][:-1])


def reduce_partition(*chunks: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Ray reduce task: exact groups (arrays of document indices) and candidate pairs ``(m, 2)``."""
    rec = np.concatenate(chunks) if chunks else np.zeros(0, dtype=RECORD)
    if len(rec) < 2:
        return [], np.zeros((0, 2), dtype=np.int64)
    rec = rec[np.lexsort((rec["idx"], rec["k2"], rec["k1"], rec["band"]))]
    split = int(np.searchsorted(rec["band"], 0))  # exact-hash records (band -1) sort first
    exact, lsh = rec[:split], rec[split:]
    groups: list[np.ndarray] = []
    if split:
        starts = np.flatnonzero(np.concatenate(([True], ~_same_as_previous(exact)))).tolist()
        for s, e in zip(starts, [*starts[1:], split], strict=True):
            if e - s >= 2:
                groups.append(exact["idx"][s:e].copy())
    return groups, minhash.bucket_pairs(lsh["idx"], _same_as_previous(lsh))


def verify_pairs(pairs: np.ndarray, offsets: list[int], threshold: float, shard_ids: list[int],
                 *sigs: np.ndarray) -> np.ndarray:
    """Ray task: the pairs whose estimated Jaccard reaches ``threshold``.

    ``sigs[k]`` are the signatures of shard ``shard_ids[k]``; ``offsets[s]`` is shard ``s``'s first index."""
    if len(pairs) == 0:
        return pairs
    where = dict(zip(shard_ids, sigs, strict=True))
    bounds = np.asarray(offsets[1:])

    def rows(ix: np.ndarray) -> np.ndarray:
        shard = np.searchsorted(bounds, ix, side="right")
        out = np.empty((len(ix), next(iter(where.values())).shape[1]), dtype=np.uint32)
        for s in np.unique(shard).tolist():
            sel = shard == s
            out[sel] = where[s][ix[sel] - offsets[s]]
        return out

    est = np.mean(rows(pairs[:, 0]) == rows(pairs[:, 1]), axis=1)
    return pairs[est >= threshold]


def decide_on_ray(cfg: RecipeConfig, shards: list[str],
                  rows: list[int]) -> tuple[dict[str, str], dict, list[str]]:
    """Document id → drop reason, as :func:`coderforge.data.dedup.decide.decide`, computed on Ray; plus
    info and the document ids in input order."""
    ray = ray_init(cfg.executor)
    d = cfg.dedup
    offsets = np.concatenate(([0], np.cumsum(rows))).astype(int).tolist()
    parts = max(2, min(64, len(shards)))
    mapper = ray.remote(num_cpus=1, max_retries=2, num_returns=parts + 2)(map_shard)
    mapped = [mapper.remote(cfg, uri, offsets[s], parts) for s, uri in enumerate(shards)]
    if not shards:
        return {}, {"partitions": parts, "candidate_pairs": 0, "verified_pairs": 0}, []
    reducer = ray.remote(num_cpus=1, max_retries=2, num_returns=2)(reduce_partition)
    reduced = [reducer.remote(*[m[2 + p] for m in mapped]) for p in range(parts)]
    keys = doc_keys(ray.get([m[0] for m in mapped]))
    sort_key = keep_sort_key(d.keep)
    drops: dict[str, str] = {}
    exact_dropped = np.zeros(len(keys), dtype=bool)
    for groups in ray.get([r[0] for r in reduced]):
        members = [g.tolist() for g in groups]
        kept = keep_one(members, keys, sort_key, drops, "exact")
        for group in members:
            exact_dropped[group] = True
        exact_dropped[kept] = False
    info = {"partitions": parts, "candidate_pairs": 0, "verified_pairs": 0}
    ids = [k.id for k in keys]
    if not d.near:
        return drops, info, ids
    pair_lists = [p for p in ray.get([r[1] for r in reduced]) if len(p)]
    pairs = np.unique(np.concatenate(pair_lists), axis=0) if pair_lists else np.zeros((0, 2), dtype=np.int64)
    info["candidate_pairs"] = int(len(pairs))
    if d.verify and len(pairs):
        verifier = ray.remote(num_cpus=1, max_retries=2)(verify_pairs)
        bounds = np.asarray(offsets[1:])
        first_shard = np.searchsorted(bounds, pairs[:, 0], side="right")
        jobs = []
        for s in np.unique(first_shard).tolist():
            mine = pairs[first_shard == s]
            needed = sorted(set(np.searchsorted(bounds, mine.ravel(), side="right").tolist()))
            jobs.append(verifier.remote(mine, offsets, d.threshold, needed, *[mapped[k][1] for k in needed]))
        verified = [v for v in ray.get(jobs) if len(v)]
        pairs = np.concatenate(verified) if verified else np.zeros((0, 2), dtype=np.int64)
    info["verified_pairs"] = int(len(pairs))
    uf = UnionFind(len(keys))
    for i, j in pairs.tolist():
        uf.union(i, j)
    clusters: dict[int, list[int]] = {}
    for i in np.unique(pairs).tolist():
        if not exact_dropped[i]:
            clusters.setdefault(uf.find(i), []).append(i)
    keep_one([c for c in clusters.values() if len(c) > 1], keys, sort_key, drops, "near")
    log.info("dedup on ray: %d shards, %d partitions, %d candidate / %d verified pairs", len(shards), parts,
             info["candidate_pairs"], info["verified_pairs"])
    return drops, info, ids
