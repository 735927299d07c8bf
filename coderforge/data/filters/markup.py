"""Language-specific rules for data and markup files (recipe.md §4.1).

StarCoder2: text/JSON/YAML/OWL/DOT with more than 512 lines dropped (``data_too_many_lines``);
HTML kept only when its visible text is at least 100 characters and 20 % of the file
(``html_visible_text``); plain text kept only for requirement/readme/notes/todo/description/
cmakelists names (``text_not_allowed``). DeepSeek-Coder, off by default: ``<?xml version=`` in the
first 100 characters, XSLT exempt (``xml_declaration``); JSON/YAML only between 50 and 5,000
characters (``json_yaml_size``).
"""

from __future__ import annotations

import html
import posixpath
import re

from coderforge.config import FilterSection
from coderforge.data.filters.base import DocumentFilter, Verdict
from coderforge.data.filters.heuristics import line_stats
from coderforge.records import Document


class DataLinesFilter(DocumentFilter):
    name = "data_too_many_lines"

    def __init__(self, max_lines: int, langs: list[str]):
        self.max_lines = max_lines
        self.languages = frozenset(langs)

    def keep(self, doc: Document) -> Verdict:
        n = line_stats(doc).n_lines
        return True if n <= self.max_lines else (self.name, str(n))


_SCRIPT_STYLE = re.compile(r"<(script|style|noscript|template)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


def visible_text(markup: str) -> str:
    text = _COMMENT.sub(" ", markup)
    text = _SCRIPT_STYLE.sub(" ", text)
    text = _TAG.sub(" ", text)
    return _SPACE.sub(" ", html.unescape(text)).strip()


class HtmlVisibleTextFilter(DocumentFilter):
    name = "html_visible_text"
    languages = frozenset({"html"})

    def __init__(self, min_chars: int, min_fraction: float):
        self.min_chars, self.min_fraction = min_chars, min_fraction

    def keep(self, doc: Document) -> Verdict:
        n = len(visible_text(doc.content))
        if n < self.min_chars or n < self.min_fraction * max(1, len(doc.content)):
            return self.name, f"{n} visible chars of {len(doc.content)}"
        return True


class TextNameFilter(DocumentFilter):
    name = "text_not_allowed"
    languages = frozenset({"text"})

    def __init__(self, allowed: list[str]):
        self.allowed = [a.lower() for a in allowed]

    def keep(self, doc: Document) -> Verdict:
        base = posixpath.basename(doc.path).lower()
        return any(a in base for a in self.allowed) or (self.name, base)


class XmlDeclarationFilter(DocumentFilter):
    name = "xml_declaration"

    def keep(self, doc: Document) -> Verdict:
        return doc.lang == "xslt" or "<?xml version=" not in doc.content[:100]


class JsonYamlSizeFilter(DocumentFilter):
    name = "json_yaml_size"
    languages = frozenset({"json", "yaml"})

    def __init__(self, min_chars: int, max_chars: int | None):
        self.min_chars, self.max_chars = min_chars, max_chars

    def keep(self, doc: Document) -> Verdict:
        n = len(doc.content)
        if n < self.min_chars or (self.max_chars is not None and n > self.max_chars):
            return self.name, str(n)
        return True


def markup_filters(f: FilterSection) -> list[DocumentFilter]:
    out: list[DocumentFilter] = [
        DataLinesFilter(f.data_max_lines, f.data_max_lines_langs),
        HtmlVisibleTextFilter(f.html_min_visible_chars, f.html_min_visible_fraction),
        TextNameFilter(f.text_allowed_names),
    ]
    if f.xml_declaration_drop:
        out.append(XmlDeclarationFilter())
    if f.json_yaml_min_chars > 0 or f.json_yaml_max_chars is not None:
        out.append(JsonYamlSizeFilter(f.json_yaml_min_chars, f.json_yaml_max_chars))
    return out
