"""MinHash LSH: band layout, band keys and the candidate pairs of buckets (shared by in-process and Ray)."""

from __future__ import annotations

import numpy as np

from coderforge.data import minhash
from coderforge.data.dedup.on_ray import RECORD, reduce_partition


def _signatures(n_docs: int, num_perm: int, seed: int = 0) -> np.ndarray:
    """Signatures with planted groups: every fourth document shares half its rows with the previous one."""
    rng = np.random.default_rng(seed)
    sig = rng.integers(0, 50, size=(n_docs, num_perm), dtype=np.uint32)
    for i in range(1, n_docs, 4):
        sig[i, : num_perm // 2] = sig[i - 1, : num_perm // 2]
    return sig


def _brute_force(sig: np.ndarray, bands: int, rows: int) -> set[tuple[int, int]]:
    """Pairs sharing a band, as (first member of the bucket, other member)."""
    pairs = set()
    for b in range(bands):
        buckets: dict[bytes, list[int]] = {}
        for i in range(len(sig)):
            buckets.setdefault(sig[i, b * rows:(b + 1) * rows].tobytes(), []).append(i)
        for members in buckets.values():
            pairs.update((members[0], j) for j in members[1:])
    return pairs


def test_lsh_layout_is_the_configured_pair_or_the_optimal_one():
    assert minhash.lsh_layout(0.7, 256, 16, 8) == (16, 8)
    optimal = minhash.optimal_bands(0.7, 256)
    assert minhash.lsh_layout(0.7, 256) == minhash.lsh_layout(0.7, 256, 16, None) == optimal
    b, r = minhash.lsh_layout(0.7, 64)
    assert b * r <= 64


def test_candidate_pairs_are_the_documents_sharing_a_band():
    sig = _signatures(120, 32)
    for bands, rows in ((4, 8), (8, 4), (16, 2), (2, 16)):
        assert minhash.candidate_pairs(sig, bands, rows) == _brute_force(sig, bands, rows)
    assert minhash.candidate_pairs(sig[:1], 4, 8) == set()


def test_bucket_pairs_pair_each_head_with_the_rest():
    members = np.array([3, 5, 9, 1, 2, 7, 8], dtype=np.int64)
    same = np.array([True, True, False, False, True, True])  # buckets [3 5 9] [1] [2 7 8]
    assert minhash.bucket_pairs(members, same).tolist() == [[3, 5], [3, 9], [2, 7], [2, 8]]
    assert minhash.bucket_pairs(members[:1], same[:0]).shape == (0, 2)


def test_ray_reduce_groups_exact_hashes_and_pairs_band_buckets_like_in_process():
    sig = _signatures(40, 16, seed=1)
    bands, rows = 4, 4
    records = []
    for b, keys in enumerate(minhash.band_keys(sig, bands, rows)):
        rec = np.zeros(len(sig), dtype=RECORD)
        rec["band"], rec["k1"], rec["idx"] = b, keys, np.arange(len(sig))
        records.append(rec)
    exact = np.zeros(6, dtype=RECORD)
    exact["band"], exact["idx"] = -1, range(6)
    exact["k1"], exact["k2"] = [5, 5, 7, 9, 9, 9], [1, 1, 1, 2, 2, 2]
    records.append(exact)
    chunks = np.concatenate(records)
    np.random.default_rng(0).shuffle(chunks)
    groups, pairs = reduce_partition(*np.array_split(chunks, 3))
    assert sorted(g.tolist() for g in groups) == [[0, 1], [3, 4, 5]]
    assert {tuple(p) for p in pairs.tolist()} == minhash.candidate_pairs(sig, bands, rows)
    only_exact = reduce_partition(exact)
    assert len(only_exact[0]) == 2 and only_exact[1].shape == (0, 2)
    no_exact = reduce_partition(*records[:-1])
    assert no_exact[0] == [] and no_exact[1].tolist() == pairs.tolist()
