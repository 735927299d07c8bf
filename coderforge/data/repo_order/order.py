"""``order_files``: a repository's files in training order — manifests, then code in dependency order,
then every other file."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from coderforge.data.repo_order.base import Imports, Repo
from coderforge.data.repo_order.graph import dependency_order
from coderforge.data.repo_order.registry import extract_imports, resolve_imports

MANIFEST_NAMES = {
    "package.json", "pyproject.toml", "setup.py", "setup.cfg", "cargo.toml", "go.mod", "pom.xml",
    "build.gradle", "build.gradle.kts", "settings.gradle", "cmakelists.txt", "makefile", "gnumakefile",
}


def is_manifest(path: str) -> bool:
    name = posixpath.basename(path).lower()
    return name in MANIFEST_NAMES or name.startswith("readme")


@dataclass
class OrderedFile:
    path: str
    group: str  # "manifest", "code", "other"
    component: int = -1  # index of the file's strongly connected component (code files)
    cycle_size: int = 1  # files in that component (> 1: an import cycle)
    rank: float = 0.0  # PageRank inside the cycle

    @property
    def in_cycle(self) -> bool:
        return self.cycle_size > 1


@dataclass
class RepoOrder:
    files: list[OrderedFile]
    deps: dict[str, set[str]]  # file -> files of the repo it imports
    cycles: list[list[str]]  # components with more than one file, in output order

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files]

    def stats(self) -> dict:
        code = [f for f in self.files if f.group == "code"]
        return {
            "files": len(self.files),
            "code_files": len(code),
            "edges": sum(len(v) for v in self.deps.values()),
            "cycles": len(self.cycles),
            "largest_cycle": max((len(c) for c in self.cycles), default=0),
            "files_in_cycles": sum(len(c) for c in self.cycles),
        }

    def violations(self) -> list[tuple[str, str]]:
        """(importer, imported) pairs where the imported file comes later, outside a shared cycle."""
        pos = {f.path: i for i, f in enumerate(self.files)}
        comp = {f.path: f.component for f in self.files}
        return [(a, b) for a, ds in self.deps.items() for b in ds
                if pos[b] > pos[a] and comp[a] != comp[b]]


def order_files(files: dict[str, str | bytes], name: str | None = None) -> RepoOrder:
    """The training order of one repository's files (``path → content``; paths relative, '/').

    ``name``: the repository's name (its last path component is used), so that when the root is itself
    a Python package, absolute imports spelled with that name (``from json import scanner`` inside
    ``json/``) resolve to its files."""
    paths = sorted(files)
    imports: dict[str, Imports] = {}
    for p in paths:
        imp = extract_imports(p, files[p])
        if imp is not None:
            imports[p] = imp
    package = name.rstrip("/").rsplit("/", 1)[-1] if name else None
    if package and package.endswith(".zip"):
        package = package[:-4]
    deps = resolve_imports(Repo(paths, imports, package))  # code → code only
    code = [p for p in paths if p in imports]
    ordered: list[OrderedFile] = []
    cycles: list[list[str]] = []
    for k, comp in enumerate(dependency_order(code, deps)):
        if len(comp.members) > 1:
            cycles.append(comp.members)
        size = len(comp.members)
        ordered.extend(OrderedFile(p, "code", k, size, comp.ranks.get(p, 0.0)) for p in comp.members)
    manifests = [OrderedFile(p, "manifest") for p in paths if p not in imports and is_manifest(p)]
    others = [OrderedFile(p, "other") for p in paths if p not in imports and not is_manifest(p)]
    return RepoOrder(manifests + ordered + others, deps, cycles)
