"""Vectorised MinHash signatures and LSH banding (numpy), plus the band/row choice of datasketch.

* Shingles: the word n-grams of a document (tokens and n-gram hashes from
  :mod:`coderforge.data.ngrams`: :func:`~coderforge.data.ngrams.word_token_hashes`,
  :func:`~coderforge.data.ngrams.ngram_hashes`), folded to 32 bits; a document's shingle set is the
  distinct folded hashes (a document shorter than ``ngram`` tokens is one shingle).
* Signature: ``num_perm`` multiply-shift hash functions ``h_a(x) = (a * x mod 2**64) >> 32`` with
  random odd 64-bit ``a`` (Dietzfelbinger's universal family for 32-bit keys), minimum per function.
  The shift is monotone, so the minimum is taken over the 64-bit products and shifted once: one
  multiply and one min-reduction per (shingle, function), no modulo (3-5x faster than the
  ``(a x + b) mod (2**61 - 1)`` family of datasketch/datatrove, measured in benchmarks/curation.py).
* LSH: ``bands x rows`` (:func:`lsh_layout`: configured, or minimising false positives + false
  negatives around the threshold, the integral rule datasketch uses); one key per (document, band)
  (:func:`band_keys`); documents sharing a band key are candidates (:func:`bucket_pairs`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from coderforge.data.ngrams import ROLL, U64, mix64, ngram_hashes, word_token_hashes

MAX32 = U64(0xFFFFFFFF)
_ROWS = 2048  # shingles per block of the signature product (bounds memory at 2048 x num_perm x 8 bytes)


def shingle_hashes(text: str, ngram: int) -> np.ndarray:
    """Distinct 32-bit hashes (as uint64) of the word ``ngram``-grams of ``text`` (a shorter text is one
    shingle)."""
    th = word_token_hashes(text)
    if len(th) == 0:
        return th
    acc = ngram_hashes(th, min(ngram, len(th)))
    folded = (acc >> U64(32)) ^ (acc & MAX32)
    return np.unique(folded)


@lru_cache(maxsize=16)
def permutations(num_perm: int, seed: int) -> np.ndarray:
    """Random odd 64-bit multipliers, one per hash function."""
    rng = np.random.RandomState(seed)
    return rng.randint(0, 1 << 63, size=num_perm, dtype=U64) * U64(2) + U64(1)


def signature(hashes: np.ndarray, num_perm: int, seed: int = 1) -> np.ndarray:
    """MinHash signature (uint32[num_perm]) of a set of 32-bit hashes; empty set → all max."""
    a = permutations(num_perm, seed)
    n = len(hashes)
    if n == 0:
        return np.full(num_perm, 0xFFFFFFFF, dtype=np.uint32)
    out = np.full(num_perm, np.iinfo(np.uint64).max, dtype=U64)
    buf = np.empty((min(n, _ROWS), num_perm), dtype=U64)
    with np.errstate(over="ignore"):
        for start in range(0, n, _ROWS):
            x = hashes[start:start + _ROWS, None]
            block = buf[:len(x)]
            np.multiply(x, a, out=block)
            np.minimum(out, block.min(axis=0), out=out)
    return (out >> U64(32)).astype(np.uint32)


def text_signature(text: str, ngram: int, num_perm: int, seed: int = 1) -> np.ndarray:
    return signature(shingle_hashes(text, ngram), num_perm, seed)


def estimated_jaccard(s1: np.ndarray, s2: np.ndarray) -> float:
    return float(np.mean(s1 == s2))


def _integrate(f, a: float, b: float, steps: int = 200) -> float:
    xs = np.linspace(a, b, steps + 1)
    ys = np.array([f(x) for x in xs])
    return float(np.trapezoid(ys, xs))


@lru_cache(maxsize=64)
def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5,
                  fn_weight: float = 0.5) -> tuple[int, int]:
    """``(bands, rows)`` with ``bands * rows <= num_perm`` minimising the weighted FP + FN areas."""
    best, best_err = (1, num_perm), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = _integrate(lambda s, b=b, r=r: 1 - (1 - s ** r) ** b, 0.0, threshold, 50)
            fn = _integrate(lambda s, b=b, r=r: 1 - (1 - (1 - s ** r) ** b), threshold, 1.0, 50)
            err = fp_weight * fp + fn_weight * fn
            if err < best_err:
                best, best_err = (b, r), err
    return best


def lsh_layout(threshold: float, num_perm: int, bands: int | None = None,
               rows: int | None = None) -> tuple[int, int]:
    """``(bands, rows)`` of the LSH index: the configured pair when both are set, else the optimal one."""
    return (bands, rows) if bands and rows else optimal_bands(threshold, num_perm)


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> list[np.ndarray]:
    """For each band, one 64-bit key per document (a multiply-add roll of the band's rows, mixed)."""
    sig = signatures.astype(U64, copy=False)
    out = []
    with np.errstate(over="ignore"):
        for i in range(bands):
            key = np.full(len(sig), U64(i + 1), dtype=U64)
            for col in range(i * rows, (i + 1) * rows):
                key *= ROLL
                key += sig[:, col]
            out.append(mix64(key))
    return out


def bucket_pairs(members: np.ndarray, same: np.ndarray) -> np.ndarray:
    """Candidate pairs ``(m, 2)`` of LSH buckets: the first member of every bucket paired with each other one.

    ``members``: document indices grouped by bucket (ascending within a bucket); ``same[i]``: member
    ``i + 1`` is in the same bucket as member ``i``."""
    if len(members) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    bucket = np.concatenate(([0], np.cumsum(~same)))
    heads = np.flatnonzero(np.concatenate(([True], ~same)))
    rest = np.ones(len(members), dtype=bool)
    rest[heads] = False
    return np.stack([members[heads][bucket[rest]], members[rest]], axis=1).astype(np.int64, copy=False)


def candidate_pairs(signatures: np.ndarray, bands: int, rows: int) -> set[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, sharing at least one band (bucket heads paired with the rest)."""
    pairs: set[tuple[int, int]] = set()
    for keys in band_keys(signatures, bands, rows):
        order = np.argsort(keys, kind="stable")  # stable: ascending indices within a bucket
        sk = keys[order]
        pairs.update(map(tuple, bucket_pairs(order, sk[1:] == sk[:-1]).tolist()))
    return pairs
