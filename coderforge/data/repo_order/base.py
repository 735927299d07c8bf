"""What every language's import handling implements (:class:`LanguageImports`), and what they share:
the repository as resolvers see it (:class:`Repo`), tree-sitter parsing and small text helpers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

ImportRef = tuple
"""One reference a file makes, before resolution: a language module's own ``NamedTuple`` whose first
field, ``kind``, names what it is (``"py"``, ``"java"``, ``"rsmod"`` …); a language may have several."""


@dataclass
class Imports:
    """What one file refers to, before resolution."""

    lang: str  # the file's language, a name of ``coderforge.data.languages``
    refs: list[ImportRef] = field(default_factory=list)


@dataclass
class Repo:
    """One repository as the resolvers see it."""

    paths: list[str]  # every file (code or not), sorted
    imports: dict[str, Imports]  # the code files: path -> its references
    name: str | None = None  # the repository's name (last path component), when known
    path_set: set[str] = field(init=False)

    def __post_init__(self) -> None:
        self.path_set = set(self.paths)

    def files(self, languages: Iterable[str]) -> list[str]:
        """The code files of these languages, in path order."""
        wanted = set(languages)
        return [p for p in self.paths if p in self.imports and self.imports[p].lang in wanted]

    @staticmethod
    def closest(importer: str, candidates: list[str]) -> str | None:
        """The candidate sharing most leading directories with ``importer`` (then shortest, then by path)."""
        if not candidates:
            return None
        return min(candidates, key=lambda c: (-common_prefix_len(importer, c), len(c), c))


class LanguageImports(ABC):
    """Import handling of one language (or one family sharing resolution rules, e.g. C and C++).

    A subclass names the languages it handles (names of ``coderforge.data.languages``, which alone maps
    file names to languages), the tree-sitter query its extraction reads, and implements
    :meth:`refs` (captures → references), :meth:`index` (what resolution needs to know of a repository,
    built once per repository) and :meth:`resolve` (one file's references → files of the repository).
    Register an instance in :mod:`coderforge.data.repo_order.registry`.
    """

    languages: tuple[str, ...] = ()
    query: str = ""

    def grammar(self, path: str) -> str:
        """The tree-sitter-language-pack grammar that parses ``path`` (default: the one language's name)."""
        return self.languages[0]

    def extract(self, path: str, data: bytes) -> list[ImportRef]:
        """The import references of one file of this language."""
        return self.refs(captures(self.grammar(path), self.query, data))

    @abstractmethod
    def refs(self, caps: dict[str, list]) -> list[ImportRef]:
        """References from the query's captures (capture name → nodes)."""

    @abstractmethod
    def index(self, repo: Repo) -> Any:
        """What :meth:`resolve` needs to know of the repository."""

    @abstractmethod
    def resolve(self, importer: str, refs: Sequence[ImportRef], index: Any) -> set[str]:
        """The repository's files that ``importer``'s references name; anything else is external."""


@lru_cache(maxsize=None)
def _parser_and_query(grammar: str, query: str):
    import tree_sitter_language_pack as tslp
    from tree_sitter import Query

    return tslp.get_parser(grammar), Query(tslp.get_language(grammar), query)


def captures(grammar: str, query: str, data: bytes) -> dict[str, list]:
    """Parse ``data`` with the grammar and run the query: capture name → nodes."""
    from tree_sitter import QueryCursor

    parser, q = _parser_and_query(grammar, query)
    tree = parser.parse(data)
    return QueryCursor(q).captures(tree.root_node)


def text(node) -> str:
    return node.text.decode("utf-8", "replace")


def unquote(s: str) -> str:
    s = s.strip()
    if len(s) >= 2 and s[0] in "\"'`<" and s[-1] in "\"'`>":
        return s[1:-1]
    return s


def common_prefix_len(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a.split("/"), b.split("/"), strict=False):
        if x != y:
            break
        n += 1
    return n
