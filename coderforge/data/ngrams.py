"""Token hashes and word n-gram hashes (numpy), shared by near-dedup (MinHash) and decontamination.

Two tokenisations, one n-gram routine:

* :func:`word_token_hashes` (MinHash shingles): maximal runs of word bytes of the UTF-8 text (ASCII
  letters, digits, ``_`` and every non-ASCII byte, i.e. ``\\w+`` for ASCII text; non-ASCII characters
  count as word characters). Found and hashed for the whole document at once: a polynomial prefix
  hash of the bytes (wrap-around uint64), each token's hash read off as a difference of two prefixes
  times the inverse power of its start, then a splitmix64 finaliser. No per-token Python objects.
* :func:`whitespace_token_hashes` (decontamination, as Qwen2.5-Coder's ``decont.py``):
  whitespace-separated words, each hashed with xxh3-64.
* :func:`ngram_hashes`: the hash of every window of ``n`` consecutive tokens, a polynomial roll of
  the tokens' hashes (all windows at once, wrap-around uint64).
"""

from __future__ import annotations

import numpy as np
import xxhash

U64 = np.uint64
ROLL = U64(0x100000001B3)
_P = 0x9E3779B97F4A7C15 | 1  # odd multiplier of the byte polynomial
_P_INV = pow(_P, -1, 1 << 64)

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
            for k, base in enumerate((_P, _P_INV)):
                steps = np.concatenate(([U64(1)], np.full(size - 1, base, dtype=U64)))
                _powers[k] = np.cumprod(steps, dtype=U64)
    return _powers[0], _powers[1]


def mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, in place (returns ``h``)."""
    with np.errstate(over="ignore"):
        h ^= h >> U64(30)
        h *= U64(0xBF58476D1CE4E5B9)
        h ^= h >> U64(27)
        h *= U64(0x94D049BB133111EB)
        h ^= h >> U64(31)
    return h


def _word_edges(raw: np.ndarray) -> np.ndarray:
    """+1 where a word-byte run starts, -1 one past where it ends (length ``len(raw) + 1``)."""
    return np.diff(_WORD[raw].view(np.int8), prepend=np.int8(0), append=np.int8(0))


def word_token_hashes(text: str) -> np.ndarray:
    """64-bit hashes of the word tokens of ``text``, in order (equal tokens, equal hashes)."""
    raw = np.frombuffer(text.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    n = len(raw)
    if n == 0:
        return np.zeros(0, dtype=U64)
    edges = _word_edges(raw)
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
    return mix64(th)


def word_tokens(text: str) -> list[str]:
    """The tokens :func:`word_token_hashes` hashes, as strings (for baselines and tests)."""
    raw = text.encode("utf-8", "surrogatepass")
    edges = _word_edges(np.frombuffer(raw, dtype=np.uint8))
    return [raw[s:e].decode("utf-8", "surrogatepass") for s, e in
            zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True)]


def whitespace_token_hashes(text: str) -> np.ndarray:
    """xxh3-64 hashes (uint64) of the whitespace-separated words of ``text``, in order."""
    toks = text.split()
    h = xxhash.xxh3_64_intdigest
    table = {t: h(t.encode("utf-8", "surrogatepass")) for t in set(toks)}
    return np.fromiter(map(table.__getitem__, toks), dtype=U64, count=len(toks))


def ngram_hashes(token_hashes: np.ndarray, n: int) -> np.ndarray:
    """Hashes (uint64) of every window of ``n`` consecutive tokens, in order; empty with fewer than ``n``.

    ``h(t_i … t_{i+n-1}) = sum_k t_{i+k} * ROLL**(n-1-k)`` (mod 2**64), computed for all windows at once."""
    m = len(token_hashes) - n + 1
    if n < 1 or m < 1:
        return np.zeros(0, dtype=U64)
    with np.errstate(over="ignore"):
        acc = token_hashes[:m].copy()
        for k in range(1, n):
            acc *= ROLL
            acc += token_hashes[k:k + m]
    return acc
