"""Repository dependency ordering (Abacus/珠算, recipe.md §9.3): files in the order a reader needs them.

1. **Imports** are extracted with tree-sitter grammars (tree-sitter-language-pack), one module per
   language: Python ``import``/``from … import`` (relative too); Java ``import`` (single, wildcard,
   static) plus the simple type names a file uses, resolved against its own package, its wildcard
   imports and ``java.lang`` (Java files reference same-package classes without importing them);
   JavaScript / TypeScript ``import … from``, ``export … from``, ``require()``, ``import()``; C/C++
   ``#include``; Go ``import`` (package directories); Rust ``mod x;`` and ``use crate::/super::/self::``
   paths. A file's language comes from :mod:`coderforge.data.languages`.
2. Each import is **resolved to files of the same repository** (anything else is external and
   ignored); the edge ``B → A`` means "A imports B", so B must come first.
3. **Tarjan's algorithm** condenses strongly connected components (import cycles) to single nodes.
4. The condensation is ordered **topologically, dependencies first** (Kahn's algorithm); among the
   components that are ready at the same time, the one whose smallest path sorts first goes first.
5. Inside a cycle, files are ordered by **PageRank** on the cycle's subgraph with edges pointing
   from importer to imported (damping 0.85), so the most depended-on file comes first; ties by path.

**Non-code files** (anything without a language handler) are placed by a fixed rule: manifests
and build files (``README*``, ``package.json``, ``pyproject.toml``, ``setup.py``/``setup.cfg``,
``Cargo.toml``, ``go.mod``, ``pom.xml``, ``build.gradle*``, ``CMakeLists.txt``, ``Makefile``) first,
because they describe the project the code belongs to; then the code in dependency order; then every
other non-code file (docs, data, configuration) in path order.

Everything is deterministic: the same files give the same order on every run and machine.

Modules: :mod:`.order` (``order_files``, the three groups), :mod:`.graph` (Tarjan, topological order,
PageRank), :mod:`.base` (the :class:`LanguageImports` interface), :mod:`.registry` (the languages
handled: adding one is a module with a ``LanguageImports`` subclass and one entry in ``HANDLERS``),
and one module per language (:mod:`.python`, :mod:`.java`, :mod:`.javascript`, :mod:`.c_family`,
:mod:`.go`, :mod:`.rust`).
"""

from coderforge.data.repo_order.base import ImportRef, Imports, LanguageImports, Repo
from coderforge.data.repo_order.graph import Component, dependency_order, pagerank, tarjan_scc
from coderforge.data.repo_order.order import MANIFEST_NAMES, OrderedFile, RepoOrder, is_manifest, order_files
from coderforge.data.repo_order.registry import HANDLERS, extract_imports, handled_language, resolve_imports

__all__ = [
    "HANDLERS", "MANIFEST_NAMES", "Component", "ImportRef", "Imports", "LanguageImports", "OrderedFile",
    "Repo", "RepoOrder", "dependency_order", "extract_imports", "handled_language", "is_manifest",
    "order_files", "pagerank", "resolve_imports", "tarjan_scc",
]
