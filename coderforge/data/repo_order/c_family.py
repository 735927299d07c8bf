"""C and C++: ``#include "…"`` (next to the including file first) and ``#include <…>``, resolved to the
repository's files whose path ends with the included one (the closest such file)."""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from coderforge.data.repo_order.base import ImportRef, LanguageImports, Repo, text, unquote


class Include(NamedTuple):
    kind: str  # "c"
    system: bool  # ``<…>`` rather than ``"…"``
    path: str


@dataclass
class IncludeIndex:
    repo: Repo
    by_suffix: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # path suffix -> files


class CFamilyImports(LanguageImports):
    languages = ("c", "c++")
    query = "(preproc_include path: (_) @inc)"

    def grammar(self, path: str) -> str:
        """Only ``.c`` sources are parsed as C: headers (``.h``, filed under c) are shared with C++ code,
        and the C++ grammar reads the ``#include`` lines of both."""
        return "c" if path.lower().endswith(".c") else "cpp"

    def refs(self, caps: dict[str, list]) -> list[ImportRef]:
        return [Include("c", node.type == "system_lib_string", unquote(text(node)))
                for node in caps.get("inc", [])]

    def index(self, repo: Repo) -> IncludeIndex:
        idx = IncludeIndex(repo)
        for p in repo.paths:  # every file: headers need not have a code extension
            parts = p.split("/")
            for i in range(len(parts)):
                idx.by_suffix["/".join(parts[i:])].append(p)
        return idx

    def resolve(self, importer: str, refs: Sequence[ImportRef], index: IncludeIndex) -> set[str]:
        out = set()
        for r in refs:
            inc = posixpath.normpath(r.path)
            local = posixpath.normpath(posixpath.join(posixpath.dirname(importer), inc))
            if not r.system and local in index.repo.path_set:
                out.add(local)
                continue
            hit = index.repo.closest(importer, index.by_suffix.get(inc, []))
            if hit:
                out.add(hit)
        return out
