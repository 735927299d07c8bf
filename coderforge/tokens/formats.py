"""Sample formats (recipe.md §3): file-level FIM (PSM/SPM) and Qwen2.5-Coder repo-level samples.

A sample is a list of *pieces*: plain ``str`` text, or ``Ctrl`` (a control token, by name). Rendering
the pieces joined gives the exact text of recipe.md; encoding maps text pieces through the tokenizer's
plain model and ``Ctrl`` pieces to their ids, so document text can never forge a control token.

* PSM: ``<|fim_prefix|>{pre}<|fim_suffix|>{suf}<|fim_middle|>{mid}<|endoftext|>`` (recipe §3.1).
* SPM: ``<|fim_suffix|>{suf}<|fim_prefix|>{pre}<|fim_middle|>{mid}<|endoftext|>`` (Bavarian et al.,
  §3; Qwen documents PSM only, so ``fim.spm_rate`` defaults to 0).
* Repo-level (recipe §3.2): ``<|repo_name|>{name}\\n`` then ``<|file_sep|>{path}\\n{content}`` per
  file, blocks joined by ``\\n``, then ``<|endoftext|>``; with repo-level FIM the *last* file's block is
  ``<|file_sep|>{path}\\n<|fim_prefix|>{pre}<|fim_suffix|>{suf}<|fim_middle|>{mid}``.

The FIM span is two uniform random character positions, drawn from a generator seeded by
``(seed, document id)``, so a document gets the same split whatever the order of processing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from coderforge.tokens.tokenizer import ENDOFTEXT, FILE_SEP, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, REPO_NAME


class Ctrl(str):
    """A control token inside a sample (rendered as its text, encoded as its id)."""


EOT, PRE, MID, SUF = Ctrl(ENDOFTEXT), Ctrl(FIM_PREFIX), Ctrl(FIM_MIDDLE), Ctrl(FIM_SUFFIX)
REPO, SEP = Ctrl(REPO_NAME), Ctrl(FILE_SEP)

Pieces = list[str]


def render(pieces: Sequence[str]) -> str:
    return "".join(pieces)


def doc_rng(seed: int, key: str, salt: str = "fim") -> np.random.Generator:
    h = hashlib.blake2b(f"{salt}\x00{key}".encode(), digest_size=8).digest()
    return np.random.default_rng([seed, int.from_bytes(h, "big")])


def fim_split(text: str, rng: np.random.Generator) -> tuple[str, str, str]:
    """(prefix, middle, suffix) at two uniform random character positions."""
    a, b = sorted(int(x) for x in rng.integers(0, len(text) + 1, size=2))
    return text[:a], text[a:b], text[b:]


def fim_pieces(prefix: str, middle: str, suffix: str, spm: bool = False) -> Pieces:
    if spm:
        return [SUF, suffix, PRE, prefix, MID, middle]
    return [PRE, prefix, SUF, suffix, MID, middle]


@dataclass
class FimChoice:
    fim: bool
    spm: bool = False


def choose_fim(rng: np.random.Generator, rate: float, spm_rate: float) -> FimChoice:
    u, v = rng.random(2)
    return FimChoice(bool(u < rate), bool(v < spm_rate))


def file_sample(content: str, doc_id: str, seed: int, rate: float, spm_rate: float = 0.0) -> tuple[Pieces, str]:
    """A file-level sample (with ``<|endoftext|>``) and its format name: plain, psm or spm."""
    rng = doc_rng(seed, doc_id)
    choice = choose_fim(rng, rate, spm_rate)
    if not choice.fim:
        return [content, EOT], "plain"
    pre, mid, suf = fim_split(content, rng)
    return fim_pieces(pre, mid, suf, choice.spm) + [EOT], "spm" if choice.spm else "psm"


def unfim(text: str) -> str:
    """The original document of a rendered file-level sample (plain, PSM or SPM)."""
    if text.endswith(ENDOFTEXT):
        text = text[: -len(ENDOFTEXT)]
    if text.startswith(FIM_PREFIX):
        body = text[len(FIM_PREFIX):]
        pre, rest = body.split(FIM_SUFFIX, 1)
        suf, mid = rest.split(FIM_MIDDLE, 1)
        return pre + mid + suf
    if text.startswith(FIM_SUFFIX):
        body = text[len(FIM_SUFFIX):]
        suf, rest = body.split(FIM_PREFIX, 1)
        pre, mid = rest.split(FIM_MIDDLE, 1)
        return pre + mid + suf
    return text


def unfim_pieces(pieces: Sequence[str]) -> str:
    """The original document from a file-level sample's pieces (robust to document text that
    contains control-token spellings, since pieces keep text and control tokens apart)."""
    body = [p for p in pieces if not (isinstance(p, Ctrl) and p == EOT)]
    if not body or not isinstance(body[0], Ctrl):
        return "".join(body)
    parts = {body[i]: body[i + 1] for i in range(0, len(body), 2)}
    return parts[PRE] + parts[MID] + parts[SUF]


def repo_header(name: str) -> Pieces:
    return [REPO, f"{name}\n"]


def file_block(path: str, content: str, first: bool) -> Pieces:
    return ([] if first else ["\n"]) + [SEP, f"{path}\n{content}"]


def fim_file_block(path: str, content: str, first: bool, rng: np.random.Generator) -> Pieces:
    pre, mid, suf = fim_split(content, rng)
    return ([] if first else ["\n"]) + [SEP, f"{path}\n"] + fim_pieces(pre, mid, suf)


def repo_sample(name: str, files: Sequence[tuple[str, str]], fim_last: bool = False,
                rng: np.random.Generator | None = None) -> Pieces:
    """A whole repo-level sample (recipe.md §3.2), files in the given order, ending in ``<|endoftext|>``."""
    pieces = repo_header(name)
    for i, (path, content) in enumerate(files):
        last = i == len(files) - 1
        if last and fim_last:
            pieces += fim_file_block(path, content, i == 0, rng or np.random.default_rng(0))
        else:
            pieces += file_block(path, content, i == 0)
    return pieces + [EOT]
