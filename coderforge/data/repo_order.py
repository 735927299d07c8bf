"""Repository dependency ordering (Abacus/珠算, recipe.md §9.3): files in the order a reader needs them.

1. **Imports** are extracted with tree-sitter grammars (tree-sitter-language-pack):
   Python ``import``/``from … import`` (relative too); Java ``import`` (single, wildcard, static) plus
   the simple type names a file uses, resolved against its own package, its wildcard imports and
   ``java.lang`` (Java files reference same-package classes without importing them); JavaScript /
   TypeScript ``import … from``, ``export … from``, ``require()``, ``import()``; C/C++ ``#include``;
   Go ``import`` (package directories); Rust ``mod x;`` and ``use crate::/super::/self::`` paths.
2. Each import is **resolved to files of the same repository** (anything else is external and
   ignored); the edge ``B → A`` means "A imports B", so B must come first.
3. **Tarjan's algorithm** condenses strongly connected components (import cycles) to single nodes.
4. The condensation is ordered **topologically, dependencies first** (Kahn's algorithm); among the
   components that are ready at the same time, the one whose smallest path sorts first goes first.
5. Inside a cycle, files are ordered by **PageRank** on the cycle's subgraph with edges pointing
   from importer to imported (damping 0.85), so the most depended-on file comes first; ties by path.

**Non-code files** (anything without a supported grammar) are placed by a fixed rule: manifests
and build files (``README*``, ``package.json``, ``pyproject.toml``, ``setup.py``/``setup.cfg``,
``Cargo.toml``, ``go.mod``, ``pom.xml``, ``build.gradle*``, ``CMakeLists.txt``, ``Makefile``) first,
because they describe the project the code belongs to; then the code in dependency order; then every
other non-code file (docs, data, configuration) in path order.

Everything is deterministic: the same files give the same order on every run and machine.
"""

from __future__ import annotations

import heapq
import posixpath
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

EXT_LANG = {
    ".py": "python", ".pyi": "python",
    ".java": "java",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript", ".tsx": "tsx",
    ".c": "c", ".h": "cpp", ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp",
    ".hxx": "cpp", ".ipp": "cpp", ".inl": "cpp",
    ".go": "go",
    ".rs": "rust",
}
MANIFEST_NAMES = {
    "package.json", "pyproject.toml", "setup.py", "setup.cfg", "cargo.toml", "go.mod", "pom.xml",
    "build.gradle", "build.gradle.kts", "settings.gradle", "cmakelists.txt", "makefile", "gnumakefile",
}
JS_EXTS = (".js", ".mjs", ".cjs", ".jsx", ".ts", ".tsx", ".mts", ".cts", ".d.ts", ".json")

_QUERIES = {
    "python": "(import_statement) @imp (import_from_statement) @from",
    "java": """(package_declaration (_) @pkg) (import_declaration) @imp (type_identifier) @use
               (method_invocation object: (identifier) @use) (field_access object: (identifier) @use)
               (marker_annotation name: (identifier) @use) (annotation name: (identifier) @use)""",
    "javascript": """(import_statement source: (string) @src) (export_statement source: (string) @src)
                     (call_expression function: (_) @fn arguments: (arguments . (string) @arg))""",
    "c": "(preproc_include path: (_) @inc)",
    "cpp": "(preproc_include path: (_) @inc)",
    "go": "(import_spec path: (_) @path)",
    "rust": "(mod_item) @mod (use_declaration argument: (_) @use)",
}
_QUERIES["typescript"] = _QUERIES["tsx"] = _QUERIES["javascript"]


def language_of(path: str) -> str | None:
    name = posixpath.basename(path).lower()
    if name.endswith(".d.ts"):
        return "typescript"
    return EXT_LANG.get(posixpath.splitext(name)[1])


def is_manifest(path: str) -> bool:
    name = posixpath.basename(path).lower()
    return name in MANIFEST_NAMES or name.startswith("readme")


@lru_cache(maxsize=None)
def _parser_and_query(lang: str):
    import tree_sitter_language_pack as tslp
    from tree_sitter import Query

    language = tslp.get_language(lang)
    return tslp.get_parser(lang), Query(language, _QUERIES[lang])


def _captures(lang: str, content: bytes) -> dict[str, list]:
    from tree_sitter import QueryCursor

    parser, query = _parser_and_query(lang)
    tree = parser.parse(content)
    return QueryCursor(query).captures(tree.root_node)


def _text(node) -> str:
    return node.text.decode("utf-8", "replace")


def _unquote(s: str) -> str:
    s = s.strip()
    if len(s) >= 2 and s[0] in "\"'`<" and s[-1] in "\"'`>":
        return s[1:-1]
    return s


# --- import extraction ---------------------------------------------------------------------------

@dataclass
class Imports:
    """What one file refers to, before resolution (language-specific references)."""

    lang: str
    refs: list[tuple] = field(default_factory=list)
    package: str = ""  # Java package
    uses: set[str] = field(default_factory=set)  # Java simple names used


def extract_imports(path: str, content: str | bytes) -> Imports | None:
    """The import references of one file, or None for files without a supported grammar."""
    lang = language_of(path)
    if lang is None:
        return None
    data = content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content
    caps = _captures(lang, data)
    out = Imports(lang)
    if lang == "python":
        for node in caps.get("imp", []):
            for name in node.children_by_field_name("name"):
                target = name.child_by_field_name("name") if name.type == "aliased_import" else name
                out.refs.append(("py", 0, _text(target), ()))
        for node in caps.get("from", []):
            mod = node.child_by_field_name("module_name")
            level, module = 0, ""
            if mod is not None and mod.type == "relative_import":
                for ch in mod.children:
                    if ch.type == "import_prefix":
                        level = _text(ch).count(".")
                    elif ch.type == "dotted_name":
                        module = _text(ch)
            elif mod is not None:
                module = _text(mod)
            names = []
            for name in node.children_by_field_name("name"):
                target = name.child_by_field_name("name") if name.type == "aliased_import" else name
                names.append(_text(target))
            out.refs.append(("py", level, module, tuple(names)))
    elif lang == "java":
        pkgs = caps.get("pkg", [])
        out.package = _text(pkgs[0]) if pkgs else ""
        for node in caps.get("imp", []):
            body = _text(node).strip().removeprefix("import").strip().rstrip(";").strip()
            static = body.startswith("static ")
            body = body.removeprefix("static").strip().replace(" ", "")
            out.refs.append(("java", body, static))
        out.uses = {_text(n) for n in caps.get("use", [])}
    elif lang in ("javascript", "typescript", "tsx"):
        for node in caps.get("src", []):
            out.refs.append(("js", _unquote(_text(node))))
        fns = caps.get("fn", [])
        args = caps.get("arg", [])
        # pair each call's callee with its first string argument by position in the file
        fn_by_parent = {(f.parent.start_byte, f.parent.end_byte): _text(f) for f in fns}
        for a in args:
            call = a.parent.parent
            if fn_by_parent.get((call.start_byte, call.end_byte)) in ("require", "import"):
                out.refs.append(("js", _unquote(_text(a))))
    elif lang in ("c", "cpp"):
        for node in caps.get("inc", []):
            out.refs.append(("c", node.type == "system_lib_string", _unquote(_text(node))))
    elif lang == "go":
        for node in caps.get("path", []):
            out.refs.append(("go", _unquote(_text(node))))
    elif lang == "rust":
        for node in caps.get("mod", []):
            if node.child_by_field_name("body") is None:
                name = node.child_by_field_name("name")
                if name is not None:
                    out.refs.append(("rsmod", _text(name)))
        for node in caps.get("use", []):
            out.refs.append(("rsuse", re.sub(r"\s+", "", _text(node))))
    return out


# --- resolution ----------------------------------------------------------------------------------

def _common_prefix_len(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a.split("/"), b.split("/"), strict=False):
        if x != y:
            break
        n += 1
    return n


class Resolver:
    """Maps import references to files of one repository."""

    def __init__(self, paths: Iterable[str], imports: dict[str, Imports], package: str | None = None):
        self.paths = sorted(set(paths))
        # The repository root is itself a Python package (``__init__.py`` at the top, e.g. a checkout
        # of ``json/``): absolute imports of it start with its own name, which its paths do not hold.
        self.root_package = package if package and "__init__.py" in self.paths else None
        self.path_set = set(self.paths)
        self.imports = imports
        # Python: module key (tuple of parts) -> files; every suffix of the key is indexed too
        self.py_exact: dict[tuple, str] = {}
        self.py_suffix: dict[tuple, list[str]] = defaultdict(list)
        # Java: fully-qualified class -> file; package -> {simple name -> file}
        self.java_fq: dict[str, str] = {}
        self.java_pkg: dict[str, dict[str, str]] = defaultdict(dict)
        # path suffixes for C/C++ includes; directories of Go files
        self.by_suffix: dict[str, list[str]] = defaultdict(list)
        self.go_dirs: dict[str, list[str]] = defaultdict(list)
        for p in self.paths:
            lang = language_of(p)
            parts = p.split("/")
            for i in range(len(parts)):
                self.by_suffix["/".join(parts[i:])].append(p)
            if lang == "python":
                stem = posixpath.splitext(parts[-1])[0]
                key = tuple(parts[:-1]) if stem == "__init__" else tuple(parts[:-1]) + (stem,)
                if key:
                    self.py_exact.setdefault(key, p)
                    for i in range(len(key)):
                        self.py_suffix[key[i:]].append(p)
            elif lang == "java":
                imp = imports.get(p)
                pkg = imp.package if imp and imp.package else ".".join(parts[:-1])
                cls = posixpath.splitext(parts[-1])[0]
                self.java_fq.setdefault(f"{pkg}.{cls}" if pkg else cls, p)
                self.java_pkg[pkg].setdefault(cls, p)
            elif lang == "go" and not p.endswith("_test.go"):
                dparts = parts[:-1]
                for i in range(len(dparts)):  # every suffix of the directory: import paths end with it
                    self.go_dirs["/".join(dparts[i:])].append(p)
        self.py_top = {k[0] for k in self.py_exact}
        if self.root_package:
            self.py_exact[()] = "__init__.py"  # the root package itself: ``import json`` inside json/

    @staticmethod
    def _closest(importer: str, candidates: list[str]) -> str | None:
        if not candidates:
            return None
        return min(candidates, key=lambda c: (-_common_prefix_len(importer, c), len(c), c))

    def resolve(self, importer: str) -> set[str]:
        imp = self.imports.get(importer)
        if imp is None:
            return set()
        out: set[str] = set()
        for ref in imp.refs:
            kind = ref[0]
            if kind == "py":
                out.update(self._python(importer, *ref[1:]))
            elif kind == "java":
                target = self._java_import(ref[1], ref[2])
                if target:
                    out.add(target)
            elif kind == "js":
                target = self._js(importer, ref[1])
                if target:
                    out.add(target)
            elif kind == "c":
                target = self._include(importer, ref[1], ref[2])
                if target:
                    out.add(target)
            elif kind == "go":
                out.update(self._go(ref[1]))
            elif kind == "rsmod":
                target = self._rust_mod(importer, ref[1])
                if target:
                    out.add(target)
            elif kind == "rsuse":
                target = self._rust_use(importer, ref[1])
                if target:
                    out.add(target)
        if imp.lang == "java":
            out.update(self._java_uses(importer, imp))
        out.discard(importer)
        return out

    # Python
    def _py_lookup(self, importer: str, key: tuple) -> str | None:
        if key in self.py_exact:
            return self.py_exact[key]
        return self._closest(importer, self.py_suffix.get(key, []))

    def _python(self, importer: str, level: int, module: str, names: tuple) -> set[str]:
        mod = tuple(module.split(".")) if module else ()
        if not level and mod and mod[0] == self.root_package and mod[0] not in self.py_top:
            return self._py_in_package((), mod[1:], names)  # ``from json import scanner`` inside json/
        if level:
            parts = importer.split("/")[:-1]
            if level - 1 > len(parts):
                return set()
            return self._py_in_package(tuple(parts[:len(parts) - (level - 1)]), mod, names)
        out = set()
        for n in names or ("",):
            full = mod + (n,) if n else mod
            for k in range(len(full), 0, -1):
                hit = self._py_lookup(importer, full[:k])
                if hit:
                    out.add(hit)
                    break
        return out

    def _py_in_package(self, base: tuple, mod: tuple, names: tuple) -> set[str]:
        """Files for ``from <base.mod> import names`` resolved exactly inside the repository (a name is a
        submodule when such a file exists, else it is defined in the package or module itself)."""
        out = set()
        for n in names or ("",):
            for key in ((base + mod + (n,)) if n else None, base + mod):
                if key is not None and key in self.py_exact:
                    out.add(self.py_exact[key])
                    break
        return out

    # Java
    def _java_import(self, name: str, static: bool) -> str | None:
        if name.endswith(".*"):
            return None  # wildcard: handled through the simple names a file uses
        parts = name.split(".")
        for k in range(len(parts), 0, -1):
            hit = self.java_fq.get(".".join(parts[:k]))
            if hit:
                return hit
        return None

    def _java_uses(self, importer: str, imp: Imports) -> set[str]:
        visible: dict[str, str] = {}
        for pkg in ["java.lang"] + [r[1][:-2] for r in imp.refs if r[0] == "java" and r[1].endswith(".*")]:
            for cls, p in self.java_pkg.get(pkg, {}).items():
                visible.setdefault(cls, p)
        visible.update(self.java_pkg.get(imp.package, {}))  # same package shadows on-demand imports
        for r in imp.refs:  # single-type imports shadow everything
            if r[0] == "java" and not r[1].endswith(".*"):
                hit = self._java_import(r[1], r[2])
                if hit:
                    visible[r[1].rsplit(".", 1)[-1]] = hit
        return {visible[u] for u in imp.uses if u in visible}

    # JavaScript / TypeScript
    def _js(self, importer: str, spec: str) -> str | None:
        if not spec.startswith((".", "/")):
            return None
        base = posixpath.normpath(posixpath.join(posixpath.dirname(importer), spec)).lstrip("/")
        if base in self.path_set:
            return base
        stem = base[:-3] if base.endswith(".js") else base  # TS sources imported as ".js"
        for cand in [stem + e for e in JS_EXTS] + [posixpath.join(base, "index" + e) for e in JS_EXTS]:
            if cand in self.path_set:
                return cand
        return None

    # C / C++
    def _include(self, importer: str, system: bool, inc: str) -> str | None:
        inc = posixpath.normpath(inc)
        if not system:
            local = posixpath.normpath(posixpath.join(posixpath.dirname(importer), inc))
            if local in self.path_set:
                return local
        return self._closest(importer, self.by_suffix.get(inc, []))

    # Go
    def _go(self, path: str) -> list[str]:
        parts = path.split("/")
        for i in range(len(parts)):
            d = "/".join(parts[i:])
            if d in self.go_dirs:
                return self.go_dirs[d]
        return []

    # Rust
    @staticmethod
    def _rust_module_dir(path: str) -> str:
        d, name = posixpath.split(path)
        if name in ("lib.rs", "main.rs", "mod.rs"):
            return d
        return posixpath.join(d, posixpath.splitext(name)[0])

    def _rust_file(self, d: str) -> str | None:
        for cand in (d + ".rs", posixpath.join(d, "mod.rs")):
            cand = cand.lstrip("/")
            if cand in self.path_set:
                return cand
        return None

    def _rust_mod(self, importer: str, name: str) -> str | None:
        return self._rust_file(posixpath.join(self._rust_module_dir(importer), name))

    def _rust_crate_root(self, importer: str) -> str:
        d = posixpath.dirname(importer)
        while True:
            for root in ("lib.rs", "main.rs"):
                if posixpath.join(d, root).lstrip("/") in self.path_set:
                    return d
            if not d or d == "/":
                return posixpath.dirname(importer)
            d = posixpath.dirname(d)

    def _rust_use(self, importer: str, path: str) -> str | None:
        path = path.split("::{", 1)[0].split(" as ", 1)[0]
        parts = [p for p in path.split("::") if p]
        if not parts:
            return None
        if parts[0] == "crate":
            base, parts = self._rust_crate_root(importer), parts[1:]
        elif parts[0] in ("self", "super"):
            base = self._rust_module_dir(importer)
            while parts and parts[0] in ("self", "super"):
                if parts[0] == "super":
                    base = posixpath.dirname(base)
                parts = parts[1:]
        else:
            return None  # an external crate
        for k in range(len(parts), 0, -1):
            hit = self._rust_file(posixpath.join(base, *parts[:k]))
            if hit:
                return hit
        return None


# --- graph algorithms ----------------------------------------------------------------------------

def tarjan_scc(nodes: list[str], deps: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components (iterative Tarjan), each sorted by path, in discovery order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    comps: list[list[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(deps.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(deps.get(w, ())))))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                comps.append(sorted(comp))
    return comps


def pagerank(nodes: list[str], deps: dict[str, set[str]], damping: float = 0.85, iters: int = 100,
             tol: float = 1e-12) -> dict[str, float]:
    """PageRank with edges importer → imported, restricted to ``nodes``."""
    n = len(nodes)
    members = set(nodes)
    out = {v: sorted(d for d in deps.get(v, ()) if d in members) for v in nodes}
    rank = dict.fromkeys(nodes, 1.0 / n)
    for _ in range(iters):
        dangling = sum(rank[v] for v in nodes if not out[v])
        new = dict.fromkeys(nodes, (1.0 - damping) / n + damping * dangling / n)
        for v in nodes:
            if out[v]:
                share = damping * rank[v] / len(out[v])
                for w in out[v]:
                    new[w] += share
        delta = sum(abs(new[v] - rank[v]) for v in nodes)
        rank = new
        if delta < tol:
            break
    return rank


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
        if language_of(p) is not None:
            imports[p] = extract_imports(p, files[p])
    package = name.rstrip("/").rsplit("/", 1)[-1] if name else None
    if package and package.endswith(".zip"):
        package = package[:-4]
    resolver = Resolver(paths, imports, package)
    code = [p for p in paths if p in imports]
    deps = {p: {d for d in resolver.resolve(p) if d in imports} for p in code}  # code → code only
    comps = tarjan_scc(code, deps)
    comp_of = {p: i for i, c in enumerate(comps) for p in c}
    # condensation: component -> components it depends on
    cdeps: dict[int, set[int]] = defaultdict(set)
    dependents: dict[int, set[int]] = defaultdict(set)
    for a, ds in deps.items():
        for b in ds:
            ca, cb = comp_of[a], comp_of[b]
            if ca != cb:
                cdeps[ca].add(cb)
                dependents[cb].add(ca)
    remaining = {i: len(cdeps[i]) for i in range(len(comps))}
    ready = [(comps[i][0], i) for i, n in remaining.items() if n == 0]
    heapq.heapify(ready)
    ordered: list[OrderedFile] = []
    cycles: list[list[str]] = []
    while ready:
        _, i = heapq.heappop(ready)
        comp = comps[i]
        if len(comp) > 1:
            pr = pagerank(comp, deps)
            members = sorted(comp, key=lambda p: (-round(pr[p], 12), p))
            cycles.append(members)
            ordered.extend(OrderedFile(p, "code", i, len(comp), pr[p]) for p in members)
        else:
            ordered.append(OrderedFile(comp[0], "code", i))
        for j in sorted(dependents[i]):
            remaining[j] -= 1
            if remaining[j] == 0:
                heapq.heappush(ready, (comps[j][0], j))
    if len(ordered) != len(code):
        raise RuntimeError("dependency ordering lost files: the condensation was not acyclic")
    # component ids in output order (cycle members share one)
    comp_id, seen = 0, {}
    for f in ordered:
        key = comp_of[f.path]
        if key not in seen:
            seen[key] = comp_id
            comp_id += 1
        f.component = seen[key]
    manifests = [OrderedFile(p, "manifest") for p in paths if p not in imports and is_manifest(p)]
    others = [OrderedFile(p, "other") for p in paths if p not in imports and not is_manifest(p)]
    return RepoOrder(manifests + ordered + others, deps, cycles)
