"""The shared token / n-gram hashing: one rolling routine for MinHash shingles and decontamination."""

from __future__ import annotations

import re

import numpy as np
import xxhash

from coderforge.data import minhash, ngrams
from coderforge.data.decontam import Decontaminator, text_ngram_hashes

TEXTS = ["", "x", "def f(a, b):\n    return a + b  # café\n", "  many   spaces\tand\ttabs\n" * 3,
         "naïve façade — 中文 ok_1 2x", "a " * 40]


def _roll(th: list[int], n: int) -> list[int]:
    out = []
    for i in range(len(th) - n + 1):
        acc = 0
        for t in th[i:i + n]:
            acc = (acc * 0x100000001B3 + t) % (1 << 64)
        out.append(acc)
    return out


def test_ngram_hashes_is_the_polynomial_roll_of_the_token_hashes():
    rng = np.random.default_rng(0)
    th = rng.integers(0, 1 << 63, size=30, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    for n in (1, 2, 5, 30, 31):
        assert ngrams.ngram_hashes(th, n).tolist() == _roll(th.tolist(), n)
    assert ngrams.ngram_hashes(th[:0], 3).tolist() == []


def test_word_tokens_are_ascii_word_runs_with_non_ascii_as_word_characters():
    assert ngrams.word_tokens("def f(a_1, b):  return é+x") == ["def", "f", "a_1", "b", "return", "é", "x"]
    for text in TEXTS:
        ascii_text = text.encode("ascii", "ignore").decode()
        assert ngrams.word_tokens(ascii_text) == re.findall(r"[A-Za-z0-9_]+", ascii_text)
        hashes = ngrams.word_token_hashes(text)
        toks = ngrams.word_tokens(text)
        assert len(hashes) == len(toks)
        for i, a in enumerate(toks):
            for j, b in enumerate(toks):
                assert (hashes[i] == hashes[j]) == (a == b)


def test_decontamination_ngrams_are_xxh3_whitespace_tokens_rolled():
    for text in TEXTS:
        toks = text.split()
        th = [xxhash.xxh3_64_intdigest(t.encode()) for t in toks]
        assert ngrams.whitespace_token_hashes(text).tolist() == th
        for n in (1, 3, 10):
            assert text_ngram_hashes(text, n).tolist() == _roll(th, n)
    dc = Decontaminator(n=3)
    dc.add_text("b/1", "alpha beta gamma delta")
    dc.freeze()
    assert dc.check("x alpha  beta\tgamma y").items == ["1"] and dc.check("alpha beta x gamma") is None


def test_minhash_shingles_roll_word_tokens_and_a_short_text_is_one_shingle():
    for text in TEXTS:
        th = ngrams.word_token_hashes(text).tolist()
        for n in (1, 2, 5):
            rolled = _roll(th, min(n, len(th))) if th else []
            folded = sorted({(h >> 32) ^ (h & 0xFFFFFFFF) for h in rolled})
            assert minhash.shingle_hashes(text, n).tolist() == folded
    assert len(minhash.shingle_hashes("one two", 5)) == 1
