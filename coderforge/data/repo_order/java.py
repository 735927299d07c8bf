"""Java: ``import`` (single, wildcard, static) plus the simple type names a file uses, resolved against
its own package, its wildcard imports and ``java.lang`` (Java files reference same-package classes
without importing them)."""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from coderforge.data.repo_order.base import ImportRef, LanguageImports, Repo, text


class JavaPackage(NamedTuple):
    kind: str  # "package"
    name: str  # the file's ``package`` declaration


class JavaImport(NamedTuple):
    kind: str  # "java"
    name: str  # ``a.b.C``, ``a.b.*``, ``a.b.C.member`` (static)
    static: bool


class JavaUse(NamedTuple):
    kind: str  # "use"
    name: str  # a simple name the file uses (type, qualifier, annotation)


@dataclass
class JavaIndex:
    fq: dict[str, str] = field(default_factory=dict)  # fully-qualified class -> file
    # package -> {simple class name -> file}
    pkg: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))


def _package(refs: Sequence[ImportRef]) -> str:
    return next((r.name for r in refs if r.kind == "package"), "")


class JavaImports(LanguageImports):
    languages = ("java",)
    query = """(package_declaration (_) @pkg) (import_declaration) @imp (type_identifier) @use
               (method_invocation object: (identifier) @use) (field_access object: (identifier) @use)
               (marker_annotation name: (identifier) @use) (annotation name: (identifier) @use)"""

    def refs(self, caps: dict[str, list]) -> list[ImportRef]:
        pkgs = caps.get("pkg", [])
        out: list[ImportRef] = [JavaPackage("package", text(pkgs[0]))] if pkgs else []
        for node in caps.get("imp", []):
            body = text(node).strip().removeprefix("import").strip().rstrip(";").strip()
            static = body.startswith("static ")
            body = body.removeprefix("static").strip().replace(" ", "")
            out.append(JavaImport("java", body, static))
        out.extend(JavaUse("use", name) for name in sorted({text(n) for n in caps.get("use", [])}))
        return out

    def index(self, repo: Repo) -> JavaIndex:
        idx = JavaIndex()
        for p in repo.files(self.languages):
            parts = p.split("/")
            pkg = _package(repo.imports[p].refs) or ".".join(parts[:-1])
            cls = posixpath.splitext(parts[-1])[0]
            idx.fq.setdefault(f"{pkg}.{cls}" if pkg else cls, p)
            idx.pkg[pkg].setdefault(cls, p)
        return idx

    def resolve(self, importer: str, refs: Sequence[ImportRef], index: JavaIndex) -> set[str]:
        imports = [r for r in refs if r.kind == "java"]
        out = {hit for r in imports if (hit := _import(index, r.name))}
        visible: dict[str, str] = {}
        for pkg in ["java.lang"] + [r.name[:-2] for r in imports if r.name.endswith(".*")]:
            for cls, p in index.pkg.get(pkg, {}).items():
                visible.setdefault(cls, p)
        visible.update(index.pkg.get(_package(refs), {}))  # same package shadows on-demand imports
        for r in imports:  # single-type imports shadow everything
            if not r.name.endswith(".*"):
                hit = _import(index, r.name)
                if hit:
                    visible[r.name.rsplit(".", 1)[-1]] = hit
        out.update(visible[r.name] for r in refs if r.kind == "use" and r.name in visible)
        return out


def _import(idx: JavaIndex, name: str) -> str | None:
    if name.endswith(".*"):
        return None  # wildcard: handled through the simple names a file uses
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        hit = idx.fq.get(".".join(parts[:k]))
        if hit:
            return hit
    return None
