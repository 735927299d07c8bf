"""Data-dense and repetitive code (Abacus §9.2 step 2; thresholds are recipe.md's INFERRED stand-in).

* ``data_dense``: a string/bytes literal longer than ``max_literal_chars`` (docstrings excluded),
  literals covering more than ``max_literal_fraction`` of the file, or numeric literals making up
  more than ``max_numeric_fraction`` of the non-blank characters (huge numeric tables). Python
  literals come from ``ast``; other languages use a quoted-string regex.
  For Python, a one-pass regex tokeniser of strings and comments first bounds the literals from
  above (raw body lengths, implicitly concatenated pieces summed, docstrings included); only a file
  whose bound crosses a threshold is parsed with ``ast`` for the exact answer (most files are not).
* ``repetitive`` (files with at least ``min_lines_for_repetition`` non-trivial lines): duplicated
  normalised lines above ``max_duplicate_line_fraction``; one line template (literals replaced by
  placeholders) repeated more than ``max_template_repeats`` times; or a run of more than
  ``max_branch_run`` structurally identical ``elif``/``else if``/``case``/``when`` branches.
"""

from __future__ import annotations

import ast
import re
import warnings
from collections import Counter

from coderforge.config import DataDenseSection, FilterSection
from coderforge.data.filters.base import DocumentFilter, Verdict
from coderforge.data.languages import MARKUP_OR_DATA
from coderforge.records import Document

_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'')
_NUMBER = re.compile(r"(?<![\w.])(?:0[xX][0-9a-fA-F]+|\d+\.?\d*(?:[eE][-+]?\d+)?)(?![\w.])")
_WS = re.compile(r"\s+")
_TRIVIAL = frozenset({"", "}", "{", "};", ")", ");", "]", "];", "end", "else:", "else", "pass", "break;",
                      "break", "return;", "*/", "/*", "*", "#", "//", "fi", "done", "esac", "endif", "});",
                      "})", "},", "try:", "finally:", "begin", "end;", "'''", '"""', "<br>", "</div>",
                      "<div>"})
_COMMENT_START = ("*", "//", "#", "/*", "--", ";", "%", "'", "<!--", "@param", "@return", "@throws")
_HWS = re.compile(r"[^\S\n]+")
_BRANCH_LINE = re.compile(r"^[^\S\n]*(?:elif\b|else[^\S\n]+if\b|\}[^\S\n]*else[^\S\n]+if\b|case\b|when\b"
                          r"|elsif\b|elseif\b)[^\n]*", re.MULTILINE)


_PY_TOKEN = re.compile(  # possessive quantifiers: no backtracking into a token (linear time)
    r"#[^\n]*+"
    r"|(?:[rRbBuUfF]{1,2})?(?:\"\"\"(?:[^\"\\]|\\[\s\S]|\"(?!\"\"))*+(?:\"\"\"|$)"
    r"|'''(?:[^'\\]|\\[\s\S]|'(?!''))*+(?:'''|$)"
    r"|\"(?:[^\"\\\n]|\\[\s\S])*+\"?|'(?:[^'\\\n]|\\[\s\S])*+'?)")
_PY_GAP = re.compile(r"(?:\s++|\\\n|#[^\n]*+)*+")


def python_literal_bound(source: str) -> tuple[int, int]:
    """Upper bounds ``(longest, total)`` of the lengths ``python_literals`` would report.

    Every string token's raw body is at least as long as its decoded value (escapes only shrink),
    implicitly concatenated tokens (only whitespace, line continuations or comments between them)
    are summed as ``ast`` joins them, and docstrings are counted although ``ast`` excludes them.
    """
    longest = total = 0
    group, prev_end = 0, -1
    for m in _PY_TOKEN.finditer(source):
        tok = m.group()
        if tok[0] == "#":
            continue
        body = len(tok) - 2  # at least the two quotes go; prefixes and triple quotes only shorten it more
        if prev_end >= 0 and _PY_GAP.fullmatch(source, prev_end, m.start()):
            group += body
        else:
            group = body
        prev_end = m.end()
        total += body
        longest = max(longest, group)
    return longest, total


def python_literals(source: str) -> list[int] | None:
    """Lengths of the string/bytes literals of a Python file (docstrings excluded); None if it won't parse."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None
    docstrings: set[int] = set()
    literals: list[tuple[int, int]] = []
    scopes = ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
    for node in ast.walk(tree):  # one walk: docstring owners come before their docstrings
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str | bytes):
                literals.append((id(node), len(node.value)))
        elif isinstance(node, scopes) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                docstrings.add(id(first.value))
    return [n for i, n in literals if i not in docstrings]


class LiteralDensityFilter(DocumentFilter):
    name = "data_dense"

    def __init__(self, s: DataDenseSection):
        self.max_literal, self.max_fraction = s.max_literal_chars, s.max_literal_fraction
        self.max_numeric = s.max_numeric_fraction

    def applies(self, doc: Document) -> bool:
        return doc.lang not in MARKUP_OR_DATA

    def keep(self, doc: Document) -> Verdict:
        text = doc.content
        if not text:
            return True
        lengths = None
        if doc.lang == "python":
            longest, total = python_literal_bound(text)
            if longest <= self.max_literal and (len(text) <= 1000 or total <= self.max_fraction * len(text)):
                lengths = []  # no literal rule can fire: skip the parse
            else:
                lengths = python_literals(text)
        if lengths is None:
            lengths = [m.end() - m.start() - 2 for m in _STRING.finditer(text)]
        if lengths:
            longest = max(lengths)
            if longest > self.max_literal:
                return self.name, f"literal of {longest} chars"
            if len(text) > 1000 and sum(lengths) > self.max_fraction * len(text):
                return self.name, f"literals cover {sum(lengths) / len(text):.2f}"
        if len(text) > 2000:
            non_blank = len(_WS.sub("", text))
            numeric = sum(m.end() - m.start() for m in _NUMBER.finditer(text))
            if non_blank and numeric > self.max_numeric * non_blank:
                return self.name, f"numeric literals cover {numeric / non_blank:.2f}"
        return True


def line_template(line: str) -> str:
    line = _STRING.sub('"S"', line)
    line = _NUMBER.sub("N", line)
    return _WS.sub(" ", line).strip()


class RepetitionFilter(DocumentFilter):
    name = "repetitive"

    def __init__(self, s: DataDenseSection):
        self.s = s

    def applies(self, doc: Document) -> bool:
        return doc.lang not in MARKUP_OR_DATA

    def keep(self, doc: Document) -> Verdict:
        s = self.s
        # one regex pass over the lines joined by "\n" (no line holds one after splitlines), not one per line
        joined = "\n".join(doc.content.splitlines())
        lines = [ln.strip() for ln in _HWS.sub(" ", joined).split("\n")]
        lines = [ln for ln in lines
                 if ln not in _TRIVIAL and len(ln) > 3 and not ln.startswith(_COMMENT_START)]
        if len(lines) < s.min_lines_for_repetition:
            return True
        dup = 1.0 - len(set(lines)) / len(lines)
        if dup > s.max_duplicate_line_fraction:
            return self.name, f"{dup:.2f} duplicated lines"
        templates = Counter(ln.strip() for ln in
                            _HWS.sub(" ", _NUMBER.sub("N", _STRING.sub('"S"', "\n".join(lines)))).split("\n"))
        template, n = templates.most_common(1)[0]
        if n > s.max_template_repeats and n > 0.5 * len(lines):
            return self.name, f"template repeated {n}x: {template[:80]}"
        run, best, prev = 0, 0, None
        for m in _BRANCH_LINE.finditer(joined):
            t = line_template(m.group())
            run = run + 1 if t == prev else 1
            prev = t
            best = max(best, run)
        if best > s.max_branch_run:
            return self.name, f"{best} identical branches in a row"
        return True


def data_dense_filters(s: DataDenseSection, f: FilterSection) -> list[DocumentFilter]:
    return [LiteralDensityFilter(s), RepetitionFilter(s)]
