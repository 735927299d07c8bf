"""Syntax filter (Abacus §9.2 step 1): drop files that do not parse.

* Python: ``ast.parse`` (the tool Abacus names). A file that fails to parse is checked for Python 2
  constructs (``print "x"``, ``exec "code"``, ``except E, e:``, ``raise E, "msg"``, backticks,
  ``<>``, ``0777`` octals, ``ur""`` literals); those are dropped as ``python2`` (tree-sitter parses
  them without error nodes, see stack-notes.md), the rest as ``syntax_error`` with the message.
* Other languages: tree-sitter grammars from ``tree-sitter-language-pack``; the share of bytes under
  ``ERROR`` nodes (plus one byte per ``MISSING`` node) above ``syntax.max_error_fraction`` →
  ``syntax_error``.
"""

from __future__ import annotations

import ast
import re
import warnings

from coderforge.config import SyntaxSection
from coderforge.data.filters.base import DocumentFilter, Verdict
from coderforge.records import Document

# our language names → tree-sitter-language-pack grammar names
GRAMMARS: dict[str, str] = {
    "java": "java", "javascript": "javascript", "typescript": "typescript", "c": "c", "c++": "cpp",
    "go": "go", "rust": "rust", "c#": "csharp", "php": "php", "ruby": "ruby", "shell": "bash", "cuda": "cuda",
    "kotlin": "kotlin", "scala": "scala", "swift": "swift", "lua": "lua", "css": "css", "haskell": "haskell",
    "ocaml": "ocaml", "elixir": "elixir", "erlang": "erlang", "julia": "julia", "dart": "dart", "zig": "zig",
}

_PY2 = [
    (re.compile(r"^[ \t]*print[ \t]+(?![\s(=.,;)\[]|$)[^\n]*", re.MULTILINE), "print statement"),
    (re.compile(r"^[ \t]*print[ \t]*$", re.MULTILINE), "bare print statement"),
    (re.compile(r"^[ \t]*exec[ \t]+[\"'\w][^\n(]*$", re.MULTILINE), "exec statement"),
    (re.compile(r"^[ \t]*except[ \t]+[\w.]+[ \t]*,[ \t]*\w+[ \t]*:", re.MULTILINE), "except E, e"),
    (re.compile(r"^[ \t]*raise[ \t]+[\w.]+[ \t]*,[ \t]*[^\n]+$", re.MULTILINE), "raise E, msg"),
    (re.compile(r"`[^`\n]+`"), "backtick repr"),
    (re.compile(r"\w[ \t]*<>[ \t]*\w"), "<> operator"),
    (re.compile(r"(?<![\w.])0[0-7]+\b(?![.eEjJ])"), "old octal literal"),
    (re.compile(r"(?<![\w])[uU][rR][\"']"), "ur string prefix"),
    (re.compile(r"\b\d+[lL]\b"), "long literal"),
]


def python2_evidence(source: str) -> str | None:
    for pattern, what in _PY2:
        if pattern.search(source):
            return what
    return None


def python_syntax(source: str) -> tuple[str, str] | None:
    """``None`` when ``source`` parses as Python 3, else ``(reason, detail)``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ast.parse(source)
            return None
        except SyntaxError as exc:
            err = f"line {exc.lineno}: {exc.msg}"
        except (ValueError, RecursionError, MemoryError) as exc:  # NUL bytes, pathological nesting
            return "syntax_error", f"{type(exc).__name__}: {exc}"
    py2 = python2_evidence(source)
    if py2:
        return "python2", f"{py2}; {err}"
    return "syntax_error", err


class PythonSyntaxFilter(DocumentFilter):
    name = "syntax_error"
    languages = frozenset({"python"})

    def __init__(self, drop_python2: bool = True):
        self.drop_python2 = drop_python2

    def keep(self, doc: Document) -> Verdict:
        if doc.path.endswith((".pyx", ".pxd")):  # Cython is not Python syntax
            return True
        out = python_syntax(doc.content)
        if out is None or (out[0] == "python2" and not self.drop_python2):
            return True
        return out


_parsers: dict[str, object] = {}


def parser_for(grammar: str):
    if grammar not in _parsers:
        from tree_sitter_language_pack import get_parser

        _parsers[grammar] = get_parser(grammar)
    return _parsers[grammar]


def error_bytes(root) -> tuple[int, int]:
    """(bytes under ERROR nodes, MISSING nodes) of a tree; ERROR subtrees are not descended."""
    bad, missing = 0, 0
    stack = [root]
    while stack:
        node = stack.pop()
        if not node.has_error and not node.is_missing:
            continue
        if node.is_error:
            bad += node.end_byte - node.start_byte
            continue
        if node.is_missing:
            missing += 1
            continue
        stack.extend(node.children)
    return bad, missing


def tree_sitter_error_fraction(source: str, grammar: str) -> float:
    data = source.encode("utf-8", "surrogatepass")
    tree = parser_for(grammar).parse(data)
    if not tree.root_node.has_error:
        return 0.0
    bad, missing = error_bytes(tree.root_node)
    return min(1.0, (bad + missing) / max(1, len(data)))


class TreeSitterSyntaxFilter(DocumentFilter):
    name = "syntax_error"

    def __init__(self, languages: list[str], max_error_fraction: float):
        self.languages = frozenset(lang for lang in languages if lang in GRAMMARS)
        self.max_error_fraction = max_error_fraction

    def keep(self, doc: Document) -> Verdict:
        grammar = GRAMMARS[doc.lang]
        if doc.lang == "typescript" and doc.path.endswith(".tsx"):
            grammar = "tsx"
        frac = tree_sitter_error_fraction(doc.content, grammar)
        if frac > self.max_error_fraction and grammar == "c" and doc.path.endswith(".h"):
            grammar = "cpp"  # .h is shared by C and C++: accept whichever grammar parses it
            frac = min(frac, tree_sitter_error_fraction(doc.content, grammar))
        if frac > self.max_error_fraction:
            return self.name, f"{grammar}: {frac:.4f} of bytes in error nodes"
        return True


def syntax_filters(s: SyntaxSection) -> list[DocumentFilter]:
    out: list[DocumentFilter] = []
    if "python" in s.languages:
        out.append(PythonSyntaxFilter(s.drop_python2))
    others = [lang for lang in s.languages if lang != "python"]
    unknown = [lang for lang in others if lang not in GRAMMARS]
    if unknown:
        raise ValueError(f"filter.syntax.languages: no grammar for {unknown}; known: {sorted(GRAMMARS)}")
    if others:
        out.append(TreeSitterSyntaxFilter(others, s.max_error_fraction))
    return out
