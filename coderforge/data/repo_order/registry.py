"""The languages whose imports are followed, and dispatch to them. A file's language comes from
``coderforge.data.languages``; files of languages without an entry here are not code for ordering.

Adding a language: a module beside this one with a
:class:`~coderforge.data.repo_order.base.LanguageImports` subclass (its ``languages``, ``query``,
``refs``, ``index``, ``resolve``), and its instance in ``HANDLERS``."""

from __future__ import annotations

from coderforge.data.languages import KNOWN_LANGUAGES, language_of
from coderforge.data.repo_order.base import Imports, LanguageImports, Repo
from coderforge.data.repo_order.c_family import CFamilyImports
from coderforge.data.repo_order.go import GoImports
from coderforge.data.repo_order.java import JavaImports
from coderforge.data.repo_order.javascript import JavaScriptImports
from coderforge.data.repo_order.python import PythonImports
from coderforge.data.repo_order.rust import RustImports

HANDLERS: tuple[LanguageImports, ...] = (
    PythonImports(),
    JavaImports(),
    JavaScriptImports(),
    CFamilyImports(),
    GoImports(),
    RustImports(),
)

BY_LANGUAGE: dict[str, LanguageImports] = {}
for _handler in HANDLERS:
    for _lang in _handler.languages:
        if _lang not in KNOWN_LANGUAGES or _lang in BY_LANGUAGE:
            raise ValueError(f"{type(_handler).__name__}: language {_lang!r} unknown or handled twice")
        BY_LANGUAGE[_lang] = _handler


def handled_language(path: str) -> str | None:
    """The file's language when its imports are followed, else None."""
    lang = language_of(path)
    return lang if lang in BY_LANGUAGE else None


def extract_imports(path: str, content: str | bytes) -> Imports | None:
    """The import references of one file, or None for files of a language without a handler."""
    lang = handled_language(path)
    if lang is None:
        return None
    data = content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content
    return Imports(lang, BY_LANGUAGE[lang].extract(path, data))


def resolve_imports(repo: Repo) -> dict[str, set[str]]:
    """Each code file → the code files of the repository it imports (itself excluded)."""
    indexes: dict[int, object] = {}
    deps: dict[str, set[str]] = {}
    for p in repo.paths:
        imp = repo.imports.get(p)
        if imp is None:
            continue
        handler = BY_LANGUAGE[imp.lang]
        if id(handler) not in indexes:
            indexes[id(handler)] = handler.index(repo)
        found = handler.resolve(p, imp.refs, indexes[id(handler)])
        deps[p] = {d for d in found if d in repo.imports and d != p}
    return deps
