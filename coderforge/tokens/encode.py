"""Encoding of training samples: a sample's pieces (text and control tokens) to token ids, with a
word cache in front of the tokenizer (``TextEncoder``). Packing (``tokens.packing``) and the
post-training formats share it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from coderforge.tokens import formats as F


@dataclass
class Sample:
    """One training sample before encoding: its pieces, split, index row and the documents it covers."""

    pieces: list[str]
    split: str
    format: str
    docs: list
    id: str
    repo: str
    path: str


_WS = r"\t\n\x0b\x0c\r "
# Qwen2's pre-tokenisation regex restricted to ASCII text, for Python's ``re``: \p{L} -> [A-Za-z],
# \p{N} -> [0-9], \s -> the ASCII White_Space characters (Python's \s would add \x1c-\x1f).
_QWEN_ASCII = re.compile(
    rf"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\nA-Za-z0-9]?[A-Za-z]+|[0-9]| ?[^{_WS}A-Za-z0-9]+[\r\n]*"""
    rf"""|[{_WS}]*[\r\n]+|[{_WS}]+(?![^{_WS}])|[{_WS}]+""")


class TextEncoder:
    """Token ids of texts, with a word cache in front of the tokenizer.

    For a tokenizer with Qwen2's exact pre-tokenisation (regex split, then byte-level, BPE without
    dropout), ASCII texts are split into pre-tokens here with an equivalent ASCII-only regex, each
    distinct pre-token is encoded once by the tokenizer and cached, and the ids are concatenated:
    the result equals the tokenizer's own output (BPE never crosses pre-token boundaries; NFC is the
    identity on ASCII) — tested on the whole standard library. Other texts, and any tokenizer with a
    different pipeline, go through the tokenizer unchanged.
    """

    def __init__(self, tok: Tokenizer, max_cache: int = 2_000_000):
        self.tok = tok
        self.max_cache = max_cache
        self.cache: dict[str, list[int]] = {}
        self.fast = self._is_qwen_pipeline(tok)

    @staticmethod
    def _is_qwen_pipeline(tok: Tokenizer) -> bool:
        from coderforge.tokens.tokenizer import QWEN_PRETOKENIZE_REGEX

        d = json.loads(tok.to_str())
        pre, model, norm = d.get("pre_tokenizer") or {}, d.get("model") or {}, d.get("normalizer")
        if norm not in (None, {"type": "NFC"}) or model.get("type") != "BPE" or model.get("dropout"):
            return False
        steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else None
        if not steps or len(steps) != 2:
            return False
        split, byte = steps
        return (split.get("type") == "Split" and split.get("pattern") == {"Regex": QWEN_PRETOKENIZE_REGEX}
                and split.get("behavior") == "Isolated" and not split.get("invert")
                and byte.get("type") == "ByteLevel" and not byte.get("add_prefix_space")
                and byte.get("use_regex") is False)

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        out: list[np.ndarray | None] = [None] * len(texts)
        slow: list[int] = []
        split: dict[int, list[str]] = {}
        if self.fast:
            for i, t in enumerate(texts):
                if t.isascii():
                    words = _QWEN_ASCII.findall(t)
                    if sum(map(len, words)) == len(t):
                        split[i] = words
                        continue
                slow.append(i)
        else:
            slow = list(range(len(texts)))
        if split:
            cache = self.cache
            if len(cache) > self.max_cache:
                cache.clear()
            missing = list({w for words in split.values() for w in words if w not in cache})
            if missing:
                for w, e in zip(missing, self.tok.encode_batch_fast(missing, add_special_tokens=False), strict=True):
                    cache[w] = e.ids
            get = cache.__getitem__
            for i, words in split.items():
                ids: list[int] = []
                ext = ids.extend
                for w in words:
                    ext(get(w))
                out[i] = np.asarray(ids, dtype=np.uint32)
        if slow:
            encs = self.tok.encode_batch_fast([texts[i] for i in slow], add_special_tokens=False)
            for i, e in zip(slow, encs, strict=True):
                out[i] = np.asarray(e.ids, dtype=np.uint32)
        return out  # type: ignore[return-value]


def encode_texts(tok: Tokenizer | TextEncoder, texts: list[str]) -> list[np.ndarray]:
    if isinstance(tok, TextEncoder):
        return tok.encode(texts)
    return [np.asarray(e.ids, dtype=np.uint32) for e in tok.encode_batch_fast(texts, add_special_tokens=False)]


def encode_samples(tok: Tokenizer | TextEncoder, samples: list[Sample], ctrl_ids: dict[str, int]) -> list:
    """Token ids of each sample (``np.ndarray``), ``None`` when its text encodes to nothing, or the
    exception that encoding it raised."""
    texts = [p for s in samples for p in s.pieces if p and not isinstance(p, F.Ctrl)]
    try:
        encoded = iter(encode_texts(tok, texts))
        per_sample = [None] * len(samples)
        for k, s in enumerate(samples):
            per_sample[k] = [next(encoded) if not isinstance(p, F.Ctrl) else None
                             for p in s.pieces if p]
    except Exception:  # one bad document must not sink the batch: retry one by one
        if len(samples) == 1:
            raise
        out = []
        for s in samples:
            try:
                out.extend(encode_samples(tok, [s], ctrl_ids))
            except Exception as exc:  # noqa: BLE001 - recorded in the ledger
                out.append(exc)
        return out
    out = []
    for s, enc in zip(samples, per_sample, strict=True):
        parts, n_text = [], 0
        for p, ids in zip([p for p in s.pieces if p], enc, strict=True):
            if isinstance(p, F.Ctrl):
                parts.append(np.asarray([ctrl_ids[p]], dtype=np.uint32))
            else:
                parts.append(ids)
                n_text += len(ids)
        out.append(np.concatenate(parts) if n_text else None)
    return out


def batches(it: Iterable, size: int) -> Iterator[list]:
    batch = []
    for x in it:
        batch.append(x)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
