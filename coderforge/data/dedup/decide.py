"""The dedup decision: which documents are duplicates, and of which kept document.

Shared by the in-process path (:func:`decide`, on the driver) and the Ray path
(:mod:`coderforge.data.dedup.on_ray`): the keep rule (:func:`keep_sort_key`), one kept document per
group (:func:`keep_one`) and the union-find over verified candidate pairs (:class:`UnionFind`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from coderforge.config import DedupSection
from coderforge.data import minhash
from coderforge.data.dedup.fingerprint import DocKey


def keep_sort_key(rule: str) -> Callable[[DocKey], tuple | int]:
    """The key whose minimum is the document a group keeps (``dedup.keep``)."""
    if rule == "shortest_path":
        return lambda k: (len(k.path), k.order)
    if rule == "longest":
        return lambda k: (-k.length, k.order)
    if rule == "most_stars":
        return lambda k: (-k.stars, k.order)
    return lambda k: k.order


class UnionFind:
    """Disjoint sets over ``0..n-1``; a set's root is its smallest member (union order is irrelevant)."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def keep_one(groups: Iterable[Sequence[int]], keys: list[DocKey], sort_key, drops: dict[str, str],
             kind: str) -> list[int]:
    """Keep one document per group (the first by ``sort_key``); every other member is dropped as
    ``<kind>_duplicate_of:<kept id>`` in ``drops``. Returns the kept member of every group."""
    kept_all = []
    for members in groups:
        kept = min(members, key=lambda i: sort_key(keys[i]))
        kept_all.append(kept)
        for i in members:
            if i != kept:
                drops[keys[i].id] = f"{kind}_duplicate_of:{keys[kept].id}"
    return kept_all


def decide(keys: list[DocKey], hashes: list[str], sigs: np.ndarray | None, d: DedupSection) -> dict[str, str]:
    """Document id → drop reason, for every document that is a duplicate of a kept one."""
    sort_key = keep_sort_key(d.keep)
    drops: dict[str, str] = {}
    survivors = list(range(len(keys)))
    if d.exact:
        groups: dict[str, list[int]] = {}
        for i, h in enumerate(hashes):
            groups.setdefault(h, []).append(i)
        survivors = sorted(keep_one(groups.values(), keys, sort_key, drops, "exact"))
    if d.near and sigs is not None and len(survivors) > 1:
        bands, rows = minhash.lsh_layout(d.threshold, d.num_perm, d.bands, d.rows)
        sub = sigs[survivors]
        uf = UnionFind(len(survivors))
        for i, j in minhash.candidate_pairs(sub, bands, rows):
            if d.verify and minhash.estimated_jaccard(sub[i], sub[j]) < d.threshold:
                continue
            uf.union(i, j)
        clusters: dict[int, list[int]] = {}
        for local in range(len(survivors)):
            clusters.setdefault(uf.find(local), []).append(survivors[local])
        keep_one([c for c in clusters.values() if len(c) > 1], keys, sort_key, drops, "near")
    return drops
