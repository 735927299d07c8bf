"""Vectorised MinHash signatures and LSH banding (numpy), plus the band/row choice of datasketch.

* Tokens: maximal runs of word bytes of the UTF-8 text (ASCII letters, digits, ``_`` and every
  non-ASCII byte, i.e. ``\\w+`` for ASCII text; non-ASCII characters count as word characters).
  Found and hashed for the whole document at once in numpy: a polynomial prefix hash of the bytes
  (wrap-around uint64), each token's hash read off as a difference of two prefixes times the inverse
  power of its start, then a splitmix64 finaliser. No per-token Python objects.
* Shingles: a word n-gram's hash is a polynomial roll of its tokens' hashes (all n-grams at once),
  folded to 32 bits; a document's shingle set is the distinct folded hashes.
* Signature: ``num_perm`` multiply-shift hash functions ``h_a(x) = (a * x mod 2**64) >> 32`` with
  random odd 64-bit ``a`` (Dietzfelbinger's universal family for 32-bit keys), minimum per function.
  The shift is monotone, so the minimum is taken over the 64-bit products and shifted once: one
  multiply and one min-reduction per (shingle, function), no modulo (3-5x faster than the
  ``(a x + b) mod (2**61 - 1)`` family of datasketch/datatrove, measured in benchmarks/curation.py).
* LSH: ``bands x rows`` with ``(bands, rows)`` minimising false positives + false negatives around
  the threshold (the integral rule datasketch uses); documents sharing any band are candidates.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

U64 = np.uint64
MAX32 = U64(0xFFFFFFFF)
_ROLL = U64(0x100000001B3)
_P = 0x9E3779B97F4A7C15 | 1  # odd multiplier of the byte polynomial
_P_INV = pow(_P, -1, 1 << 64)
_ROWS = 2048  # shingles per block of the signature product (bounds memory at 2048 x num_perm x 8 bytes)

_WORD = np.zeros(256, dtype=bool)
for _c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_":
    _WORD[_c] = True
_WORD[128:] = True
_powers: list[np.ndarray] = [np.ones(1, dtype=U64), np.ones(1, dtype=U64)]


def _power_tables(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``P**j`` and ``P**-j`` (mod 2**64) for ``j < n`` (grown by doubling, shared by all calls)."""
    if len(_powers[0]) < n:
        size = max(n, 2 * len(_powers[0]), 1 << 16)
        with np.errstate(over="ignore"):
            _powers[0] = np.cumprod(np.concatenate(([U64(1)], np.full(size - 1, _P, dtype=U64))), dtype=U64)
            _powers[1] = np.cumprod(np.concatenate(([U64(1)], np.full(size - 1, _P_INV, dtype=U64))), dtype=U64)
    return _powers[0], _powers[1]


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, in place."""
    with np.errstate(over="ignore"):
        h ^= h >> U64(30)
        h *= U64(0xBF58476D1CE4E5B9)
        h ^= h >> U64(27)
        h *= U64(0x94D049BB133111EB)
        h ^= h >> U64(31)
    return h


def token_hashes(text: str) -> np.ndarray:
    """64-bit hashes of the word tokens of ``text``, in order (equal tokens, equal hashes)."""
    raw = np.frombuffer(text.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    n = len(raw)
    if n == 0:
        return np.zeros(0, dtype=U64)
    word = _WORD[raw]
    edges = np.diff(word.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edges == 1)
    if len(starts) == 0:
        return np.zeros(0, dtype=U64)
    ends = np.flatnonzero(edges == -1)
    pw, pinv = _power_tables(n + 1)
    prefix = np.empty(n + 1, dtype=U64)
    prefix[0] = 0
    with np.errstate(over="ignore"):
        np.cumsum((raw.astype(U64) + U64(1)) * pw[:n], out=prefix[1:])
        th = (prefix[ends] - prefix[starts]) * pinv[starts]
        th += (ends - starts).astype(U64)  # length in the key: no two token lengths share a polynomial shift
    return _mix(th)


def tokens(text: str) -> list[str]:
    """The tokens :func:`token_hashes` hashes, as strings (for baselines and tests)."""
    raw = text.encode("utf-8", "surrogatepass")
    word = _WORD[np.frombuffer(raw, dtype=np.uint8)] if raw else np.zeros(0, dtype=bool)
    edges = np.diff(word.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    return [raw[s:e].decode("utf-8", "surrogatepass") for s, e in
            zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True)]


def shingle_hashes(text: str, ngram: int) -> np.ndarray:
    """Distinct 32-bit hashes (as uint64) of the word ``ngram``-grams of ``text`` (a short text is one shingle)."""
    th = token_hashes(text)
    if len(th) == 0:
        return th
    n = min(ngram, len(th))
    m = len(th) - n + 1
    with np.errstate(over="ignore"):
        acc = th[:m].copy()
        for k in range(1, n):
            acc *= _ROLL
            acc += th[k:k + m]
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
    """For each band, one 64-bit key per document (a multiply-add roll of the band's rows, mixed)."""
    sig = signatures.astype(U64, copy=False)
    out = []
    with np.errstate(over="ignore"):
        for i in range(bands):
            key = np.full(len(sig), U64(i + 1), dtype=U64)
            for col in range(i * rows, (i + 1) * rows):
                key *= _ROLL
                key += sig[:, col]
            out.append(_mix(key))
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
