"""Vectorised MinHash signatures and LSH banding (numpy), plus the band/row choice of datasketch.

* Tokens: ``\\w+`` runs (identifiers, keywords, numbers). Each distinct token is hashed once with
  xxh3-64; a word n-gram's hash is a polynomial roll of its tokens' hashes, computed for all
  n-grams of a document at once in numpy (wrap-around uint64 arithmetic).
* Signature: for ``num_perm`` universal hash functions ``((a * x + b) mod (2**61 - 1)) & (2**32 - 1)``
  over the 32-bit-folded n-gram hashes, the minimum per function (one ``(n_shingles, num_perm)``
  matrix per document, processed in chunks to bound memory).
* LSH: ``bands x rows`` with ``(bands, rows)`` minimising false positives + false negatives around
  the threshold (the integral rule datasketch uses); documents sharing any band are candidates.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
import xxhash

MERSENNE = np.uint64((1 << 61) - 1)
MAX32 = np.uint64(0xFFFFFFFF)
_TOKEN = re.compile(r"\w+")
_ROLL = np.uint64(0x100000001B3)
_CHUNK = 4096


@lru_cache(maxsize=16)
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    a = rng.randint(1, 1 << 32, size=num_perm, dtype=np.uint64)
    b = rng.randint(0, 1 << 32, size=num_perm, dtype=np.uint64)
    return a, b


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def shingle_hashes(text: str, ngram: int) -> np.ndarray:
    """Distinct 32-bit hashes of the word ``ngram``-grams of ``text`` (a short text is one shingle)."""
    toks = tokens(text)
    if not toks:
        return np.zeros(0, dtype=np.uint64)
    h = xxhash.xxh3_64_intdigest
    table = {t: h(t.encode("utf-8", "surrogatepass")) for t in set(toks)}
    th = np.fromiter(map(table.__getitem__, toks), dtype=np.uint64, count=len(toks))
    n = min(ngram, len(th))
    m = len(th) - n + 1
    with np.errstate(over="ignore"):
        acc = th[:m].copy()
        for k in range(1, n):
            acc = acc * _ROLL + th[k:k + m]
        folded = (acc >> np.uint64(32)) ^ (acc & MAX32)
    return np.unique(folded)


def signature(hashes: np.ndarray, num_perm: int, seed: int = 1) -> np.ndarray:
    """MinHash signature (uint32[num_perm]) of a set of 32-bit hashes; empty set → all max."""
    a, b = permutations(num_perm, seed)
    out = np.full(num_perm, 0xFFFFFFFF, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for start in range(0, len(hashes), _CHUNK):
            x = hashes[start:start + _CHUNK, None]
            phv = ((x * a + b) % MERSENNE) & MAX32
            np.minimum(out, phv.min(axis=0), out=out)
    return out.astype(np.uint32)


def text_signature(text: str, ngram: int, num_perm: int, seed: int = 1) -> np.ndarray:
    return signature(shingle_hashes(text, ngram), num_perm, seed)


def estimated_jaccard(s1: np.ndarray, s2: np.ndarray) -> float:
    return float(np.mean(s1 == s2))


def _integrate(f, a: float, b: float, steps: int = 200) -> float:
    xs = np.linspace(a, b, steps + 1)
    ys = np.array([f(x) for x in xs])
    return float(np.trapezoid(ys, xs))


@lru_cache(maxsize=64)
def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
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


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> list[np.ndarray]:
    """For each band, one 64-bit key per document (xxh3 of the band's rows)."""
    out = []
    for i in range(bands):
        block = np.ascontiguousarray(signatures[:, i * rows:(i + 1) * rows])
        out.append(np.fromiter((xxhash.xxh3_64_intdigest(row.tobytes()) for row in block),
                               dtype=np.uint64, count=len(block)))
    return out


def candidate_pairs(signatures: np.ndarray, bands: int, rows: int) -> set[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, sharing at least one band (first member of each bucket paired with the rest)."""
    pairs: set[tuple[int, int]] = set()
    for keys in band_keys(signatures, bands, rows):
        order = np.argsort(keys, kind="stable")
        sk = keys[order]
        if len(sk) < 2:
            continue
        boundaries = np.flatnonzero(np.diff(sk)) + 1
        starts = np.concatenate(([0], boundaries))
        ends = np.concatenate((boundaries, [len(sk)]))
        for s, e in zip(starts, ends, strict=True):
            if e - s < 2:
                continue
            members = np.sort(order[s:e])
            head = int(members[0])
            for j in members[1:]:
                pairs.add((head, int(j)))
    return pairs
