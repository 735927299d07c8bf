"""Python: ``import a.b`` and ``from [..]a import x, y`` (relative too), resolved to modules and
packages of the repository."""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from coderforge.data.repo_order.base import ImportRef, LanguageImports, Repo, text


class PythonImport(NamedTuple):
    kind: str  # "py"
    level: int  # leading dots of a relative import (0: absolute)
    module: str  # dotted module name ("" for ``from . import x``)
    names: tuple[str, ...]  # the imported names of ``from … import``; () for ``import module``


def _imported_name(node) -> str:
    target = node.child_by_field_name("name") if node.type == "aliased_import" else node
    return text(target)


@dataclass
class PythonIndex:
    repo: Repo
    root_package: str | None  # the repository root is itself this package
    exact: dict[tuple, str] = field(default_factory=dict)  # module key (tuple of parts) -> file
    suffix: dict[tuple, list[str]] = field(default_factory=lambda: defaultdict(list))  # every key suffix
    top: set[str] = field(default_factory=set)  # first parts of the keys


class PythonImports(LanguageImports):
    languages = ("python",)
    query = "(import_statement) @imp (import_from_statement) @from"

    def refs(self, caps: dict[str, list]) -> list[ImportRef]:
        out: list[ImportRef] = []
        for node in caps.get("imp", []):
            for name in node.children_by_field_name("name"):
                out.append(PythonImport("py", 0, _imported_name(name), ()))
        for node in caps.get("from", []):
            mod = node.child_by_field_name("module_name")
            level, module = 0, ""
            if mod is not None and mod.type == "relative_import":
                for ch in mod.children:
                    if ch.type == "import_prefix":
                        level = text(ch).count(".")
                    elif ch.type == "dotted_name":
                        module = text(ch)
            elif mod is not None:
                module = text(mod)
            names = tuple(_imported_name(name) for name in node.children_by_field_name("name"))
            out.append(PythonImport("py", level, module, names))
        return out

    def index(self, repo: Repo) -> PythonIndex:
        # The repository root is itself a Python package (``__init__.py`` at the top, e.g. a checkout
        # of ``json/``): absolute imports of it start with its own name, which its paths do not hold.
        root = repo.name if repo.name and "__init__.py" in repo.path_set else None
        idx = PythonIndex(repo, root)
        for p in repo.files(self.languages):
            parts = p.split("/")
            stem = posixpath.splitext(parts[-1])[0]
            key = tuple(parts[:-1]) if stem == "__init__" else tuple(parts[:-1]) + (stem,)
            if key:
                idx.exact.setdefault(key, p)
                for i in range(len(key)):
                    idx.suffix[key[i:]].append(p)
        idx.top = {k[0] for k in idx.exact}
        if root:
            idx.exact[()] = "__init__.py"  # the root package itself: ``import json`` inside json/
        return idx

    def resolve(self, importer: str, refs: Sequence[ImportRef], index: PythonIndex) -> set[str]:
        out: set[str] = set()
        for ref in refs:
            out.update(_resolve_one(index, importer, ref))
        return out


def _lookup(idx: PythonIndex, importer: str, key: tuple) -> str | None:
    if key in idx.exact:
        return idx.exact[key]
    return idx.repo.closest(importer, idx.suffix.get(key, []))


def _resolve_one(idx: PythonIndex, importer: str, ref: PythonImport) -> set[str]:
    mod = tuple(ref.module.split(".")) if ref.module else ()
    if not ref.level and mod and mod[0] == idx.root_package and mod[0] not in idx.top:
        return _in_package(idx, (), mod[1:], ref.names)  # ``from json import scanner`` inside json/
    if ref.level:
        parts = importer.split("/")[:-1]
        if ref.level - 1 > len(parts):
            return set()
        return _in_package(idx, tuple(parts[:len(parts) - (ref.level - 1)]), mod, ref.names)
    out = set()
    for n in ref.names or ("",):
        full = mod + (n,) if n else mod
        for k in range(len(full), 0, -1):
            hit = _lookup(idx, importer, full[:k])
            if hit:
                out.add(hit)
                break
    return out


def _in_package(idx: PythonIndex, base: tuple, mod: tuple, names: tuple) -> set[str]:
    """Files for ``from <base.mod> import names`` resolved exactly inside the repository (a name is a
    submodule when such a file exists, else it is defined in the package or module itself)."""
    out = set()
    for n in names or ("",):
        for key in ((base + mod + (n,)) if n else None, base + mod):
            if key is not None and key in idx.exact:
                out.add(idx.exact[key])
                break
    return out
