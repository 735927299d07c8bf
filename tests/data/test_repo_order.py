"""Repository dependency ordering on real repositories: the JDK sources, the stdlib, npm; and on
small hand-written repositories in every supported language."""

from __future__ import annotations

import glob
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from coderforge.data import languages
from coderforge.data.repo_order import (
    HANDLERS,
    extract_imports,
    handled_language,
    order_files,
    pagerank,
    tarjan_scc,
)
from coderforge.tokens.cli import read_repository

STDLIB = Path(sysconfig.get_paths()["stdlib"])
NPM = Path("/usr/lib/node_modules/npm")


def jdk_src_zip() -> Path:
    """The JDK 17 src.zip named by the project, else any installed JDK's (the 17 link may dangle)."""
    named = "/usr/lib/jvm/java-17-openjdk-amd64/lib/src.zip"
    for cand in [named, *sorted(glob.glob("/usr/lib/jvm/*/lib/src.zip"))]:
        if Path(cand).is_file():
            return Path(cand)
    pytest.skip("no JDK src.zip on this machine")


def _jdk(prefixes: tuple[str, ...]) -> dict[str, bytes]:
    files = read_repository(jdk_src_zip())
    return {p: c for p, c in files.items() if p.startswith(prefixes)}


def _check_order(order) -> None:
    assert order.violations() == []
    pos = {p: i for i, p in enumerate(order.paths)}
    assert len(pos) == len(order.paths)
    for cyc in order.cycles:  # a cycle's files are contiguous
        idx = sorted(pos[p] for p in cyc)
        assert idx == list(range(idx[0], idx[0] + len(cyc)))


@pytest.fixture(scope="module")
def jdk_core():
    return _jdk(("java.base/java/util/", "java.base/java/lang/"))


def test_jdk_java_util_and_java_lang(jdk_core):
    order = order_files(jdk_core)
    _check_order(order)
    s = order.stats()
    assert s["files"] == len(jdk_core) and s["code_files"] == len(jdk_core)
    assert s["cycles"] >= 1 and s["largest_cycle"] > 50
    big = max(order.cycles, key=len)
    # java.lang and java.util really depend on each other
    assert "java.base/java/lang/String.java" in big and "java.base/java/util/Objects.java" in big
    assert any(p.startswith("java.base/java/util/") for p in big)
    # String imports java.util.* classes and java.util.ArrayList uses Object/String implicitly
    assert "java.base/java/util/Objects.java" in order.deps["java.base/java/lang/String.java"]
    assert "java.base/java/util/AbstractList.java" in order.deps["java.base/java/util/ArrayList.java"]
    # PageRank: the most depended-on files of the big cycle come first
    assert big.index("java.base/java/lang/String.java") < 10
    # stable across runs (and independent of input order)
    again = order_files(dict(reversed(list(jdk_core.items()))))
    assert again.paths == order.paths and again.cycles == order.cycles


@pytest.mark.slow
def test_whole_java_base(tmp_path):
    order = order_files(_jdk(("java.base/",)))
    _check_order(order)
    assert order.stats()["code_files"] > 3000


def _stdlib_files() -> dict[str, bytes]:
    files = {}
    for p in sorted(STDLIB.rglob("*.py")):
        rel = p.relative_to(STDLIB)
        if rel.parts[0] in ("site-packages", "test", "idlelib", "lib2to3") or "__pycache__" in rel.parts:
            continue
        files[rel.as_posix()] = p.read_bytes()
    return files


def test_python_stdlib():
    files = _stdlib_files()
    order = order_files(files)
    _check_order(order)
    deps = order.deps
    assert "json/decoder.py" in deps["json/__init__.py"]  # relative import: from .decoder import ...
    assert "json/scanner.py" in deps["json/decoder.py"]  # from json import scanner
    assert "email/_policybase.py" in deps["email/policy.py"]  # from email._policybase import ...
    pos = {p: i for i, p in enumerate(order.paths)}
    assert pos["json/scanner.py"] < pos["json/decoder.py"] < pos["json/__init__.py"]
    assert order_files(files).paths == order.paths


def test_package_as_repository_root():
    """A checkout of one package (``json/`` alone): ``from json import scanner`` still resolves."""
    files = read_repository(STDLIB / "json")
    order = order_files(files, name="json")
    _check_order(order)
    assert "scanner.py" in order.deps["decoder.py"]
    assert "__init__.py" in order.deps["tool.py"]  # import json
    pos = {p: i for i, p in enumerate(order.paths)}
    assert pos["scanner.py"] < pos["decoder.py"] < pos["__init__.py"] < pos["tool.py"]
    # without the name the import stays unresolved; nothing else is guessed (os, re are not files here)
    assert "scanner.py" not in order_files(files).deps["decoder.py"]
    cli = subprocess.run([sys.executable, "-m", "coderforge.tokens.cli", str(STDLIB / "json")],
                         capture_output=True, text=True, check=True)
    assert cli.stdout.split() == order.paths


def test_npm_javascript():
    files = read_repository(NPM)
    order = order_files(files)
    _check_order(order)
    assert order.paths[:2] == ["README.md", "package.json"]  # manifests first (documented rule)
    pos = {p: i for i, p in enumerate(order.paths)}
    assert pos["lib/cli.js"] < pos["bin/npm-cli.js"]  # bin/npm-cli.js: require('../lib/cli.js')
    assert "lib/cli.js" in order.deps["bin/npm-cli.js"]
    assert order.paths[-1] not in order.deps  # non-code files last


def test_every_language_and_a_cycle(tmp_path):
    files = {
        "py/pkg/__init__.py": "from .a import A\n",
        "py/pkg/a.py": "from . import b\nclass A: pass\n",
        "py/pkg/b.py": "import pkg.a\n",  # a <-> b: a cycle
        "c/main.c": '#include "util.h"\n#include <stdio.h>\nint main(){return 0;}\n',
        "c/util.h": "#include <inc/base.h>\n",
        "c/inc/base.h": "int base;\n",
        "web/app.ts": "import { x } from './lib/x';\nexport * from './lib/y.js';\n",
        "web/lib/x.ts": "export const x = require('./y');\n",
        "web/lib/y.ts": "export const y = 1;\n",
        "go/cmd/main.go": ('package main\nimport (\n "fmt"\n "example.com/m/util"\n)\n'
                           'func main(){fmt.Println(util.X)}\n'),
        "go/util/util.go": "package util\nvar X = 1\n",
        "rs/src/lib.rs": "mod net;\npub mod db;\nuse crate::db::Pool;\n",
        "rs/src/net.rs": "use super::db::Pool;\nmod tcp;\n",
        "rs/src/net/tcp.rs": "use crate::db;\n",
        "rs/src/db.rs": "pub struct Pool;\n",
        "java/src/a/Main.java": "package a;\nimport b.Helper;\nclass Main { Helper h; Local l; }\n",
        "java/src/a/Local.java": "package a;\nclass Local {}\n",
        "java/src/b/Helper.java": "package b;\npublic class Helper {}\n",
        "docs/guide.md": "# guide\n",
        "Makefile": "all:\n",
    }
    order = order_files(files)
    _check_order(order)
    d = order.deps
    assert d["py/pkg/__init__.py"] == {"py/pkg/a.py"}
    assert d["py/pkg/a.py"] == {"py/pkg/b.py"} and d["py/pkg/b.py"] == {"py/pkg/a.py"}
    assert d["c/main.c"] == {"c/util.h"} and d["c/util.h"] == {"c/inc/base.h"}
    assert d["web/app.ts"] == {"web/lib/x.ts", "web/lib/y.ts"} and d["web/lib/x.ts"] == {"web/lib/y.ts"}
    assert d["go/cmd/main.go"] == {"go/util/util.go"}
    assert d["rs/src/lib.rs"] == {"rs/src/net.rs", "rs/src/db.rs"}
    assert d["rs/src/net.rs"] == {"rs/src/db.rs", "rs/src/net/tcp.rs"}
    assert d["rs/src/net/tcp.rs"] == {"rs/src/db.rs"}
    assert d["java/src/a/Main.java"] == {"java/src/b/Helper.java", "java/src/a/Local.java"}
    assert (order.cycles == [["py/pkg/a.py", "py/pkg/b.py"]]
            or order.cycles == [["py/pkg/b.py", "py/pkg/a.py"]])
    assert order.paths[0] == "Makefile" and order.paths[-1] == "docs/guide.md"


def test_python_relative_import_levels():
    imp = extract_imports("a/b/c.py", "from ..x import y\nimport os.path as p\nfrom . import (q, r as s)\n")
    assert ("py", 2, "x", ("y",)) in imp.refs
    assert ("py", 0, "os.path", ()) in imp.refs
    assert ("py", 1, "", ("q", "r")) in imp.refs


def test_tarjan_and_pagerank_on_a_known_graph():
    deps = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"c"}, "e": set()}
    comps = tarjan_scc(sorted(deps), deps)
    assert sorted(map(tuple, comps)) == [("a", "b", "c"), ("d",), ("e",)]
    # star: everyone imports hub
    pr = pagerank(["hub", "x", "y"], {"x": {"hub"}, "y": {"hub"}, "hub": {"x"}})
    assert pr["hub"] > pr["x"] > pr["y"]  # x is imported by hub, y by nobody
    assert abs(sum(pr.values()) - 1) < 1e-9


def test_order_repo_cli_marks_cycles(tmp_path):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "a.py").write_text("from pkg import b\n")
    (repo / "pkg" / "b.py").write_text("from pkg import a\n")
    (repo / "pkg" / "c.py").write_text("from pkg import a\n")
    (repo / "README.md").write_text("# r\n")
    code = "import typer; from coderforge.tokens.cli import order_repo; typer.run(order_repo)"
    out = subprocess.run([sys.executable, "-c", code, str(repo)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "README.md"
    assert lines[1].startswith("pkg/") and lines[1].endswith("# cycle 0 (2 files)")
    assert lines[2].endswith("# cycle 0 (2 files)")
    assert lines[3] == "pkg/c.py"


def test_languages_come_from_the_language_table():
    """One extension map (``coderforge.data.languages``): every handled language is a name of it, handled
    once, and a file's language for ordering is the table's."""
    handled = [lang for h in HANDLERS for lang in h.languages]
    assert len(handled) == len(set(handled)) and set(handled) <= languages.KNOWN_LANGUAGES
    for path in ("a/b.py", "a/b.pyw", "x.h", "x.hpp", "x.tsx", "x.d.ts", "x.mjs", "main.go", "lib.rs",
                 "A.java"):
        assert handled_language(path) == languages.language_of(path) in handled, path
    assert handled_language("README.md") is None and handled_language("Makefile") is None
    assert extract_imports("docs/guide.md", "# guide") is None
    # headers are shared by C and C++: parsed with the C++ grammar (a class body does not hide an include)
    imp = extract_imports("inc/x.h", 'class A { public: int f(); };\n#include "y.h"\n')
    assert imp.lang == "c" and ("c", False, "y.h") in imp.refs
