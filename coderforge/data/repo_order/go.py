"""Go: ``import "path/to/pkg"`` names a package directory; it resolves to the non-test files of the
repository directory whose path the import path ends with."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import NamedTuple

from coderforge.data.repo_order.base import ImportRef, LanguageImports, Repo, text, unquote


class GoImport(NamedTuple):
    kind: str  # "go"
    path: str  # the import path


class GoImports(LanguageImports):
    languages = ("go",)
    query = "(import_spec path: (_) @path)"

    def refs(self, caps: dict[str, list]) -> list[ImportRef]:
        return [GoImport("go", unquote(text(node))) for node in caps.get("path", [])]

    def index(self, repo: Repo) -> dict[str, list[str]]:
        """Directory path suffix -> the Go files in it (tests excluded)."""
        dirs: dict[str, list[str]] = defaultdict(list)
        for p in repo.files(self.languages):
            if p.endswith("_test.go"):
                continue
            dparts = p.split("/")[:-1]
            for i in range(len(dparts)):  # every suffix of the directory: import paths end with it
                dirs["/".join(dparts[i:])].append(p)
        return dirs

    def resolve(self, importer: str, refs: Sequence[ImportRef], index: dict[str, list[str]]) -> set[str]:
        out: set[str] = set()
        for r in refs:
            parts = r.path.split("/")
            for i in range(len(parts)):
                d = "/".join(parts[i:])
                if d in index:
                    out.update(index[d])
                    break
        return out
