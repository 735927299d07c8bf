"""StarCoder2 / The Stack v2 heuristics (recipe.md §4.1), thresholds from ``cfg.filter``.

Each filter is one rule with one reason code: ``empty``, ``too_many_lines``, ``max_line_length``,
``mean_line_length``, ``auto_generated``, ``low_alpha`` (``low_alnum`` for assembly),
``encoded_data``. Line statistics are computed once per document and shared by the filters.
"""

from __future__ import annotations

import re
import string

from coderforge.config import FilterSection
from coderforge.data.filters.base import DocumentFilter, Verdict
from coderforge.records import Document

_ASCII_ALPHA = string.ascii_letters.encode()
_ASCII_ALNUM = (string.ascii_letters + string.digits).encode()


class LineStats:
    __slots__ = ("n_lines", "max_len", "mean_len")

    def __init__(self, content: str):
        lines = content.splitlines() or [""]
        lengths = list(map(len, lines))
        self.n_lines = len(lines)
        self.max_len = max(lengths)
        self.mean_len = sum(lengths) / len(lines)


_stats_cache: list = [None, None]


def line_stats(doc: Document) -> LineStats:
    """Line statistics of ``doc.content``, cached for the document being filtered."""
    if _stats_cache[0] is not doc.content:
        _stats_cache[0], _stats_cache[1] = doc.content, LineStats(doc.content)
    return _stats_cache[1]


def alpha_fraction(text: str, alnum: bool = False) -> float:
    if not text:
        return 0.0
    if text.isascii():
        raw = text.encode("ascii")
        keep = _ASCII_ALNUM if alnum else _ASCII_ALPHA
        return (len(raw) - len(raw.translate(None, keep))) / len(raw)
    test = str.isalnum if alnum else str.isalpha
    return sum(map(test, text)) / len(text)


class EmptyFilter(DocumentFilter):
    name = "empty"

    def __init__(self, min_chars: int = 1):
        self.min_chars = min_chars

    def keep(self, doc: Document) -> Verdict:
        return len(doc.content.strip()) >= self.min_chars


class LineCountFilter(DocumentFilter):
    name = "too_many_lines"

    def __init__(self, max_lines: int):
        self.max_lines = max_lines

    def keep(self, doc: Document) -> Verdict:
        n = line_stats(doc).n_lines
        return True if n <= self.max_lines else (self.name, str(n))


class LineLengthFilter(DocumentFilter):
    """Max / mean line length; markup and data formats only have the long limit (100,000)."""

    name = "line_length"

    def __init__(self, max_line: int, max_mean: float, exempt: list[str], exempt_max: int):
        self.max_line, self.max_mean = max_line, max_mean
        self.exempt, self.exempt_max = frozenset(exempt), exempt_max

    def keep(self, doc: Document) -> Verdict:
        st = line_stats(doc)
        if doc.lang in self.exempt:
            return True if st.max_len <= self.exempt_max else ("max_line_length", str(st.max_len))
        if st.max_len > self.max_line:
            return "max_line_length", str(st.max_len)
        if st.mean_len > self.max_mean:
            return "mean_line_length", f"{st.mean_len:.1f}"
        return True


_GENERATED_PATH = re.compile(
    r"(\.min\.(js|css)$|-min\.js$|\.bundle\.js$|_pb2(_grpc)?\.pyi?$|\.pb\.(go|cc|h|swift)$|\.pb-c\.[ch]$"
    r"|\.g\.dart$|\.freezed\.dart$|\.designer\.cs$|\.generated\.\w+$|(^|/)package-lock\.json$"
    r"|(^|/)yarn\.lock$|(^|/)composer\.lock$|(^|/)Cargo\.lock$|(^|/)Gemfile\.lock$|(^|/)poetry\.lock$"
    r"|(^|/)pnpm-lock\.yaml$|\.js\.map$|\.css\.map$)", re.IGNORECASE)


class GeneratedFilter(DocumentFilter):
    """Markers in the first lines (StarCoder2 list) plus go-enry-style generated-file names."""

    name = "auto_generated"

    def __init__(self, markers: list[str], first_lines: int):
        self.markers = [m.lower() for m in markers]
        self.first_lines = first_lines

    def keep(self, doc: Document) -> Verdict:
        m = _GENERATED_PATH.search(doc.path)
        if m:
            return self.name, f"path {m.group(0)}"
        head = doc.content[:20_000].split("\n", self.first_lines)[: self.first_lines]
        text = "\n".join(head).lower()
        for marker in self.markers:
            if marker in text:
                return self.name, marker
        return True


class AlphaFilter(DocumentFilter):
    """< 25 % alphabetic characters; assembly uses the alphanumeric fraction instead."""

    name = "low_alpha"

    def __init__(self, min_alpha: float, min_alnum_asm: float):
        self.min_alpha, self.min_alnum_asm = min_alpha, min_alnum_asm

    def keep(self, doc: Document) -> Verdict:
        if doc.lang == "assembly":
            f = alpha_fraction(doc.content, alnum=True)
            return True if f >= self.min_alnum_asm else ("low_alnum", f"{f:.3f}")
        f = alpha_fraction(doc.content)
        return True if f >= self.min_alpha else (self.name, f"{f:.3f}")


ENCODED_PATTERNS = {
    "base64": re.compile(r"[a-zA-Z0-9+/\n=]{64,}"),
    "hex": re.compile(r"(?:\b(?:0x|\\x)?[0-9a-fA-F]{2}(?:,|\b\s*)){8,}"),
    "unicode": re.compile(r"(?:\\u[0-9a-fA-F]{4}){8,}"),
}


# A necessary condition for a "hex" match (its units without the word-boundary checks), which starts with a
# character class, so ``re`` scans for it fast; the exact pattern, which starts with ``\b``, is entered at
# every position. Texts without this weaker match cannot hold a hex run: the exact scan is skipped.
_HEX_NECESSARY = re.compile(r"[0-9a-fA-F]{2}(?:,|\b\s*)(?:(?:0x|\\x)?[0-9a-fA-F]{2}(?:,|\b\s*)){7}")


def encoded_spans(text: str) -> tuple[int, int, str]:
    """(longest match, total matched chars, kind of the longest) over the StarCoder2 encoded-data regexes."""
    longest, total, kind = 0, 0, ""
    for name, pattern in ENCODED_PATTERNS.items():
        if name == "unicode" and "\\u" not in text:  # every match starts with a backslash-u: skip the scan
            continue
        if name == "hex" and not _HEX_NECESSARY.search(text):
            continue
        for m in pattern.finditer(text):
            n = m.end() - m.start()
            total += n
            if n > longest:
                longest, kind = n, name
    return longest, total, kind


class EncodedDataFilter(DocumentFilter):
    name = "encoded_data"

    def __init__(self, max_match: int, max_fraction: float):
        self.max_match, self.max_fraction = max_match, max_fraction

    def keep(self, doc: Document) -> Verdict:
        if not doc.content:
            return True
        longest, total, kind = encoded_spans(doc.content)
        if longest > self.max_match:
            return self.name, f"{kind} run of {longest} chars"
        if total > self.max_fraction * len(doc.content):
            return self.name, f"{total / len(doc.content):.2f} of the file"
        return True


def starcoder_filters(f: FilterSection) -> list[DocumentFilter]:
    return [
        EmptyFilter(f.min_chars),
        LineCountFilter(f.max_lines),
        LineLengthFilter(f.max_line_length, f.max_mean_line_length, f.long_line_exempt_langs,
                         f.long_line_exempt_max),
        GeneratedFilter(f.generated_markers, f.generated_marker_lines),
        AlphaFilter(f.min_alpha_fraction, f.min_alnum_fraction_asm),
        EncodedDataFilter(f.max_encoded_match_chars, f.max_encoded_fraction),
    ]
