"""Data-dense and repetitive code (Abacus §9.2 step 2; thresholds are recipe.md's INFERRED stand-in).

* ``data_dense``: a string/bytes literal longer than ``max_literal_chars`` (docstrings excluded),
  literals covering more than ``max_literal_fraction`` of the file, or numeric literals making up
  more than ``max_numeric_fraction`` of the non-blank characters (huge numeric tables). Python
  literals come from ``ast``; other languages use a quoted-string regex.
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
                      "})", "},", "try:", "finally:", "begin", "end;", "'''", '"""', "<br>", "</div>", "<div>"})
_COMMENT_START = ("*", "//", "#", "/*", "--", ";", "%", "'", "<!--", "@param", "@return", "@throws")
_BRANCH = re.compile(r"^\s*(?:elif\b|else\s+if\b|\}\s*else\s+if\b|case\b|when\b|elsif\b|elseif\b)")


def python_literals(source: str) -> list[int] | None:
    """Lengths of the string/bytes literals of a Python file (docstrings excluded); None if it won't parse."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                docstrings.add(id(first.value))
    return [len(n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str | bytes) and id(n) not in docstrings]


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
        lengths = python_literals(text) if doc.lang == "python" else None
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
        raw = doc.content.splitlines()
        lines = [_WS.sub(" ", ln).strip() for ln in raw]
        lines = [ln for ln in lines if ln not in _TRIVIAL and len(ln) > 3 and not ln.startswith(_COMMENT_START)]
        if len(lines) < s.min_lines_for_repetition:
            return True
        dup = 1.0 - len(set(lines)) / len(lines)
        if dup > s.max_duplicate_line_fraction:
            return self.name, f"{dup:.2f} duplicated lines"
        templates = Counter(line_template(ln) for ln in lines)
        template, n = templates.most_common(1)[0]
        if n > s.max_template_repeats and n > 0.5 * len(lines):
            return self.name, f"template repeated {n}x: {template[:80]}"
        run, best, prev = 0, 0, None
        for ln in raw:
            if _BRANCH.match(ln):
                t = line_template(ln)
                run = run + 1 if t == prev else 1
                prev = t
                best = max(best, run)
        if best > s.max_branch_run:
            return self.name, f"{best} identical branches in a row"
        return True


def data_dense_filters(s: DataDenseSection, f: FilterSection) -> list[DocumentFilter]:
    return [LiteralDensityFilter(s), RepetitionFilter(s)]
