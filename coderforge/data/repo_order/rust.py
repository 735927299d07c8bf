"""Rust: ``mod x;`` (a module in its own file) and ``use crate::…`` / ``use super::…`` /
``use self::…`` paths, resolved to ``x.rs`` or ``x/mod.rs`` files of the crate."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from typing import NamedTuple

from coderforge.data.repo_order.base import ImportRef, LanguageImports, Repo, text


class RustMod(NamedTuple):
    kind: str  # "rsmod"
    name: str  # ``mod name;`` (a module body in another file)


class RustUse(NamedTuple):
    kind: str  # "rsuse"
    path: str  # the ``use`` argument, whitespace removed


class RustImports(LanguageImports):
    languages = ("rust",)
    query = "(mod_item) @mod (use_declaration argument: (_) @use)"

    def refs(self, caps: dict[str, list]) -> list[ImportRef]:
        out: list[ImportRef] = []
        for node in caps.get("mod", []):
            if node.child_by_field_name("body") is None:
                name = node.child_by_field_name("name")
                if name is not None:
                    out.append(RustMod("rsmod", text(name)))
        out.extend(RustUse("rsuse", re.sub(r"\s+", "", text(node))) for node in caps.get("use", []))
        return out

    def index(self, repo: Repo) -> Repo:
        return repo

    def resolve(self, importer: str, refs: Sequence[ImportRef], index: Repo) -> set[str]:
        out = set()
        for r in refs:
            if r.kind == "rsmod":
                hit = _file(index, posixpath.join(_module_dir(importer), r.name))
            else:
                hit = _use(index, importer, r.path)
            if hit:
                out.add(hit)
        return out


def _module_dir(path: str) -> str:
    d, name = posixpath.split(path)
    if name in ("lib.rs", "main.rs", "mod.rs"):
        return d
    return posixpath.join(d, posixpath.splitext(name)[0])


def _file(repo: Repo, d: str) -> str | None:
    for cand in (d + ".rs", posixpath.join(d, "mod.rs")):
        cand = cand.lstrip("/")
        if cand in repo.path_set:
            return cand
    return None


def _crate_root(repo: Repo, importer: str) -> str:
    d = posixpath.dirname(importer)
    while True:
        for root in ("lib.rs", "main.rs"):
            if posixpath.join(d, root).lstrip("/") in repo.path_set:
                return d
        if not d or d == "/":
            return posixpath.dirname(importer)
        d = posixpath.dirname(d)


def _use(repo: Repo, importer: str, path: str) -> str | None:
    path = path.split("::{", 1)[0].split(" as ", 1)[0]
    parts = [p for p in path.split("::") if p]
    if not parts:
        return None
    if parts[0] == "crate":
        base, parts = _crate_root(repo, importer), parts[1:]
    elif parts[0] in ("self", "super"):
        base = _module_dir(importer)
        while parts and parts[0] in ("self", "super"):
            if parts[0] == "super":
                base = posixpath.dirname(base)
            parts = parts[1:]
    else:
        return None  # an external crate
    for k in range(len(parts), 0, -1):
        hit = _file(repo, posixpath.join(base, *parts[:k]))
        if hit:
            return hit
    return None
