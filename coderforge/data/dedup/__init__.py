"""Dedup: exact (normalised content hash) then MinHash LSH near-duplicates; drops name the kept twin.

Pass 1 (per shard, on the executor, :mod:`~coderforge.data.dedup.fingerprint`): for every document
its normalised-content hash (:mod:`~coderforge.data.dedup.exact`) and, when ``dedup.near``, its
MinHash signature (:mod:`coderforge.data.minhash`). Driver (:mod:`~coderforge.data.dedup.decide`):
exact groups → one kept per group (``exact_duplicate_of:<id>``); the remaining documents go through
LSH banding, candidate pairs are verified by estimated Jaccard (``dedup.verify``), and connected
components (union-find) keep one document each (``near_duplicate_of:<id>``). The kept document of a
group is chosen by ``dedup.keep``: ``first`` (input order), ``shortest_path``, ``longest`` (most
content), or ``most_stars`` (``meta.stars``/``max_stars_count`` when present, then input order).
With ``executor.kind: ray`` the grouping runs on the cluster instead of the driver
(:mod:`~coderforge.data.dedup.on_ray`: band keys shuffled by key, pairs verified per shard,
union-find on the driver over the candidate pairs only), with the same decisions.
Pass 2 (per shard, :mod:`~coderforge.data.dedup.step`): write the survivors and the part ledgers.
The decision is stored with a key, so a re-run reuses it and skips the shards already written for it.
"""

from coderforge.data.dedup.step import run_dedup

__all__ = ["run_dedup"]
