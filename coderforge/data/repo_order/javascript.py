"""JavaScript and TypeScript: ``import … from``, ``export … from``, ``require()`` and ``import()`` of
relative specifiers, resolved like Node and TypeScript do (extensions, ``index`` files)."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from typing import NamedTuple

from coderforge.data.languages import language_of
from coderforge.data.repo_order.base import ImportRef, LanguageImports, Repo, text, unquote

# what an extension-less specifier may stand for, in the order tried
RESOLVE_EXTS = (".js", ".mjs", ".cjs", ".jsx", ".ts", ".tsx", ".mts", ".cts", ".d.ts", ".json")


class JsImport(NamedTuple):
    kind: str  # "js"
    spec: str  # the module specifier, unquoted


class JavaScriptImports(LanguageImports):
    languages = ("javascript", "typescript")
    query = """(import_statement source: (string) @src) (export_statement source: (string) @src)
               (call_expression function: (_) @fn arguments: (arguments . (string) @arg))"""

    def grammar(self, path: str) -> str:
        """TypeScript files with JSX (``.tsx``) need the tsx dialect of the TypeScript grammar."""
        if path.lower().endswith(".tsx"):
            return "tsx"
        return "typescript" if language_of(path) == "typescript" else "javascript"

    def refs(self, caps: dict[str, list]) -> list[ImportRef]:
        out: list[ImportRef] = [JsImport("js", unquote(text(node))) for node in caps.get("src", [])]
        # pair each call's callee with its first string argument by position in the file
        fn_by_parent = {(f.parent.start_byte, f.parent.end_byte): text(f) for f in caps.get("fn", [])}
        for a in caps.get("arg", []):
            call = a.parent.parent
            if fn_by_parent.get((call.start_byte, call.end_byte)) in ("require", "import"):
                out.append(JsImport("js", unquote(text(a))))
        return out

    def index(self, repo: Repo) -> Repo:
        return repo

    def resolve(self, importer: str, refs: Sequence[ImportRef], index: Repo) -> set[str]:
        return {hit for r in refs if (hit := _resolve_spec(index.path_set, importer, r.spec))}


def _resolve_spec(path_set: set[str], importer: str, spec: str) -> str | None:
    if not spec.startswith((".", "/")):
        return None  # a package
    base = posixpath.normpath(posixpath.join(posixpath.dirname(importer), spec)).lstrip("/")
    if base in path_set:
        return base
    stem = base[:-3] if base.endswith(".js") else base  # TS sources imported as ".js"
    for cand in [stem + e for e in RESOLVE_EXTS] + [posixpath.join(base, "index" + e) for e in RESOLVE_EXTS]:
        if cand in path_set:
            return cand
    return None
