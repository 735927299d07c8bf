"""The seeds step on real code of this machine: the Python standard library (json, textwrap, fractions:
docstrings with doctests), npm's JavaScript (JSDoc with ``@example``), the JDK's ``java.util`` sources
(Javadoc with ``<pre>{@code}``) and C++ headers (Apache Arrow's ``///`` Doxygen from pyarrow, and
libstdc++'s ``/** */``); plus the extraction rules on small snippets."""

from __future__ import annotations

import ast
import zipfile
from collections import Counter
from pathlib import Path

import pyarrow
import pytest

from coderforge import records
from coderforge.config import load_recipe
from coderforge.data.languages import language_of
from coderforge.ledger import read_ledger, read_summary
from coderforge.posttrain import seeds as seeds_module
from coderforge.posttrain.samples import read_seeds, stable_id
from coderforge.posttrain.seed_extract import extract, mask_macros
from coderforge.posttrain.seeds import is_test_path, run_seeds
from coderforge.records import Document, document_id
from coderforge.tracking import NullRun
from tests.conftest import JDK_SRC_ZIP, NPM_DIR, STDLIB

ROOT = Path(__file__).resolve().parents[2]
ARROW = Path(pyarrow.__file__).parent / "include" / "arrow"
STL_ALGO = next(iter(sorted(Path("/usr/include/c++").glob("*/bits/stl_algo.h"), reverse=True)), None)
IPV6_JS = next(iter(sorted(NPM_DIR.rglob("ip-address/dist/ipv6.js"))), None)
JAVA_UTIL = ("Objects.java", "BitSet.java", "ArrayList.java")
LANGS = ("python", "javascript", "java", "cpp")


def _doc(source: str, repo: str, path: str, content: str, lang: str | None = None) -> Document:
    return Document(document_id(source, repo, path), repo, path, lang or language_of(path) or "", content, source)


def _broken_dedent() -> str:
    """``textwrap.dedent`` as the standard library writes it, with its signature's ``)`` removed."""
    src = (STDLIB / "textwrap.py").read_text()
    fn = next(n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == "dedent")
    return ast.get_source_segment(src, fn).replace("(text)", "(text", 1)


@pytest.fixture(scope="module")
def corpus() -> list[Document]:
    if JDK_SRC_ZIP is None or IPV6_JS is None or STL_ALGO is None:
        pytest.skip("needs the JDK sources, npm and libstdc++ headers of this machine")
    docs = [_doc("stdlib", p.split("/")[0].removesuffix(".py"), p, (STDLIB / p).read_text())
            for p in ("json/__init__.py", "json/decoder.py", "textwrap.py", "fractions.py")]
    test_file = sorted(STDLIB.glob("*/test*/test_*.py"))[0]
    docs.append(_doc("stdlib", "tests", test_file.relative_to(STDLIB).as_posix(), test_file.read_text()))
    docs.append(_doc("stdlib", "broken", "broken.py", _broken_dedent()))
    docs.append(_doc("npm", "ip-address", IPV6_JS.relative_to(NPM_DIR).as_posix(), IPV6_JS.read_text()))
    with zipfile.ZipFile(JDK_SRC_ZIP) as z:
        docs += [_doc("jdk", "java.base", f"java.base/java/util/{n}", z.read(f"java.base/java/util/{n}").decode())
                 for n in JAVA_UTIL]
    docs += [_doc("pyarrow", "arrow", p, (ARROW / p).read_text()) for p in ("type_traits.h", "util/bit_util.h")]
    docs.append(_doc("gcc", "libstdc++", "bits/stl_algo.h", STL_ALGO.read_text()))
    docs.append(_doc("stdlib", "license", "LICENSE.txt", (STDLIB / "LICENSE.txt").read_text()))
    docs.append(_doc("bin", "ls", "ls.cc", Path("/bin/ls").read_bytes()[:20000].decode("latin-1"), "c++"))
    return docs


def _cfg(*overrides: str):
    return load_recipe(ROOT / "configs" / "tiny.yaml", overrides=list(overrides))


def _run(tmp_path: Path, docs: list[Document], *overrides: str, shard_size: int = 2000, name: str = "seeds"):
    records.write_documents(str(tmp_path / f"docs-{name}"), docs, shard_size=shard_size)
    out = tmp_path / name
    result = run_seeds(_cfg(*overrides), str(tmp_path / f"docs-{name}"), str(out), NullRun())
    return result, list(read_seeds(str(out))), {r["path"]: r for r in read_ledger(str(out))}, out


def test_seeds_in_all_four_languages_with_docstrings_doctests_and_provenance(corpus, tmp_path):
    result, seeds, ledger, out = _run(tmp_path, corpus, "synth.max_seeds_per_language=100000")
    by = {(s.path, s.name): s for s in seeds}
    dumps = by[("json/__init__.py", "dumps")]
    doc = next(d for d in corpus if d.path == "json/__init__.py")
    assert (dumps.language, dumps.kind, dumps.repo, dumps.doc_id) == ("python", "function", "json", doc.id)
    assert dumps.id == stable_id(doc.id, "dumps", "function") and dumps.code.startswith("def dumps(obj, *,")
    assert dumps.docstring.startswith("Serialize ``obj`` to a JSON formatted ``str``.") and not dumps.doctest
    assert '>>> textwrap.shorten("Hello  world!", width=12)\n\'Hello world!\'' in by[("textwrap.py", "shorten")].doctest
    assert ">>> Fraction('3.141592653589793').limit_denominator(10)\nFraction(22, 7)" in \
        by[("fractions.py", "Fraction.limit_denominator")].doctest
    assert by[("json/decoder.py", "JSONDecodeError")].kind == "class"
    assert ("fractions.py", "Fraction") not in by  # longer than synth.max_seed_chars
    ipv6 = IPV6_JS.relative_to(NPM_DIR).as_posix()
    from_big = by[(ipv6, "Address6.fromBigInt")]
    assert from_big.language == "javascript" and from_big.code.startswith("/**")
    assert "Address6.fromBigInt(" in from_big.doctest and "@example" not in from_big.doctest
    nonnull = by[("java.base/java/util/Objects.java", "Objects.requireNonNull")]
    assert nonnull.language == "java" and "Checks that the specified object reference is not" in nonnull.docstring
    assert "Objects.requireNonNull(bar" in nonnull.doctest and "{@code" not in nonnull.doctest
    is_integer = by[("type_traits.h", "is_integer")]
    assert is_integer.language == "cpp" and is_integer.docstring.startswith("\\brief Check for an integer type")
    assert is_integer.code.startswith("/// \\brief") and "constexpr bool is_integer(" in is_integer.code
    all_of = by[("bits/stl_algo.h", "all_of")]
    assert "Checks that a predicate is true for all the elements" in all_of.docstring and "/**" not in all_of.docstring
    names = {s.name for s in seeds}
    assert "BitSet.wordIndex" not in names and "__find_if_not" not in names  # private
    assert not any(part.startswith("_") for n in names for part in n.replace("::", ".").split("."))
    assert all(len(s.docstring) >= 20 and len(s.code) <= 4000 for s in seeds)
    assert len({s.id for s in seeds}) == len(seeds)

    m = result.metrics
    assert all(m[f"seeds.{lang}"] > 0 for lang in LANGS) and m["seeds"] == sum(m[f"seeds.{lg}"] for lg in LANGS)
    assert m["seeds"] == len(seeds) and m["seeds.with_doctest"] == sum(bool(s.doctest) for s in seeds) > 10
    assert m["documents.python"] == 6 and m["documents.java"] == 3 and m["documents.cpp"] == 4
    assert result.ledger.inputs == len(corpus) == read_summary(str(out))["in"]
    assert result.ledger.kept + result.ledger.dropped + result.ledger.quarantined == len(corpus)
    assert ledger["LICENSE.txt"]["reason"] == "language_not_sandboxed"
    assert ledger[next(d.path for d in corpus if d.repo == "tests")]["reason"] == "test_file"
    assert ledger["broken.py"]["reason"] == "syntax_error" and "parse_errors=" in ledger["broken.py"]["detail"]
    assert ledger["ls.cc"]["status"] == "dropped"
    kept = {r["id"] for r in ledger.values() if r["status"] == "kept"}
    assert kept == {s.doc_id for s in seeds}


def test_caps_and_a_choice_that_does_not_depend_on_sharding(corpus, tmp_path):
    """Two seeds per language; the same ones from one shard in this process and from 3-document shards
    mined by two worker processes."""
    one, seeds_one, ledger, _ = _run(tmp_path, corpus, "synth.max_seeds_per_language=2", name="one")
    many, seeds_many, _, _ = _run(tmp_path, corpus, "synth.max_seeds_per_language=2", "executor.num_cpus=2",
                                  shard_size=3, name="many")
    assert Counter(s.language for s in seeds_one) == {lang: 2 for lang in LANGS}
    assert [s.id for s in seeds_one] == [s.id for s in seeds_many]
    assert one.ledger.as_dict()["reasons"] == many.ledger.as_dict()["reasons"]
    assert one.ledger.as_dict()["reasons"]["seed_cap_reached"] >= 4 and one.ledger.kept <= 8
    capped = [r for r in ledger.values() if r["reason"] == "seed_cap_reached"]
    assert all(r["detail"].startswith("candidates=") for r in capped)
    other, seeds_other, _, _ = _run(tmp_path, corpus, "synth.max_seeds_per_language=2", "synth.seed=7", name="other")
    assert {s.id for s in seeds_other} != {s.id for s in seeds_one} and other.ledger.inputs == len(corpus)


def test_size_limits_and_language_selection(corpus, tmp_path):
    result, seeds, ledger, _ = _run(tmp_path, corpus, "synth.min_docstring_chars=100000", name="long")
    assert seeds == [] and result.ledger.kept == 0
    assert ledger["json/__init__.py"]["reason"] == "no_seed_within_limits"
    _, seeds, _, _ = _run(tmp_path, corpus, "synth.max_seed_chars=400", name="short")
    assert seeds and all(len(s.code) <= 400 for s in seeds)
    result, seeds, ledger, _ = _run(tmp_path, corpus, "synth.languages=[python]", name="py")
    assert {s.language for s in seeds} == {"python"}
    assert ledger["bits/stl_algo.h"]["reason"] == "language_not_selected" and ledger["bits/stl_algo.h"]["detail"] == "c"
    assert ledger["LICENSE.txt"]["reason"] == "language_not_sandboxed" and result.ledger.inputs == len(corpus)


def test_a_crash_in_extraction_quarantines_the_document(corpus, tmp_path, monkeypatch):
    real = seeds_module.extract

    def flaky(lang, path, source):
        if path == "textwrap.py":
            raise RecursionError("maximum recursion depth exceeded")
        return real(lang, path, source)

    monkeypatch.setattr(seeds_module, "extract", flaky)
    result, seeds, ledger, _ = _run(tmp_path, corpus, name="crash")
    assert ledger["textwrap.py"]["status"] == "quarantined" and "RecursionError" in ledger["textwrap.py"]["detail"]
    assert result.ledger.quarantined == 1 and result.ledger.inputs == len(corpus)
    assert seeds and not any(s.path == "textwrap.py" for s in seeds)


def test_no_documents(tmp_path):
    result, seeds, ledger, out = _run(tmp_path, [], name="empty")
    assert seeds == [] and ledger == {} and result.ledger.inputs == 0 and result.metrics["seeds"] == 0
    assert records.list_shards(str(out))


def _symbols(lang: str, path: str, source: str) -> dict[str, tuple[str, str, str]]:
    return {s.name: (s.kind, s.skip, s.doctest) for s in extract(lang, path, source).symbols}


def test_rules_javascript():
    src = '''
/** Adds two numbers and returns their sum.
 * @example
 * add(1, 2) // 3
 */
exports.add = function (a, b) { return a + b; };
/**
 * Hidden helper documented as private.
 * @private
 */
function hidden() {}
/** Subtracts b from a, a documented prototype method. */
Calc.prototype.sub = function (a, b) { return a - b; };
// a plain comment is not documentation
function plain() {}
/** A documented class with methods. */
class Box { /** Builds the box from nothing. */ constructor() {} /** Opens the box at once. */ #open() {} }
'''
    found = _symbols("javascript", "lib/calc.js", src)
    assert found["add"] == ("function", "", "add(1, 2) // 3") and found["Calc.sub"][:2] == ("function", "")
    assert "plain" not in found and found["Box"][:2] == ("class", "")
    assert found["Box.constructor"][1] == "special" and found["Box.#open"][1] == "private"
    assert found["hidden"][1] == "private"
    ts = """/** A queue of numbers kept in order. */
export class Queue<T> {
  /** Adds an item at the end of the queue. */
  push(x: T): void { this.items.push(x); }
  /** Internal helper that should be skipped. */
  private grow(): void {}
}
/** Parses an integer strictly, throwing on garbage. */
export const parseStrict = (s: string): number => Number(s);
"""
    for path in ("queue.ts", "queue.tsx"):
        found = _symbols("typescript", path, ts)
        assert {k: v[:2] for k, v in found.items()} == {"Queue": ("class", ""), "Queue.push": ("function", ""),
                                                        "Queue.grow": ("function", "private"),
                                                        "parseStrict": ("function", "")}


def test_rules_python_and_cpp():
    py = "\n".join([
        "import functools", "", "@functools.cache", "def fib(n):", '    """Fibonacci.', "", "    >>> fib(10)", "    55",
        '    """', "    return n if n < 2 else fib(n - 1) + fib(n - 2)", "", "def old(x):", '    """Python 2 code."""',
        '    print "x"', "", "def test_fib():", '    """A test."""', "", "def testmod():", '    """Not a test."""', ""])
    found = {s.name: s for s in extract("python", "fib.py", py).symbols}
    assert found["fib"].code.startswith("@functools.cache\ndef fib(n):") and found["fib"].doctest == ">>> fib(10)\n55"
    assert found["old"].skip == "syntax" and found["test_fib"].skip == "test" and found["testmod"].skip == ""
    cpp = '''namespace arrow {
/// \\brief A point in the plane.
class ARROW_EXPORT Point {
 public:
  /// \\brief Its distance to the origin, squared.
  double Norm2() const { return x_ * x_ + y_ * y_; }
  double x_; ///< not documentation of what follows
  int Next() const { return 1; }
  /// Equality of two points.
  bool operator==(const Point& o) const { return x_ == o.x_; }
 private:
  /// A private helper, never a seed.
  void Reset() { x_ = 0; }
};
namespace internal {
/** Internal detail. */
inline int Helper() { return 0; }
}  // namespace internal
}  // namespace arrow
'''
    assert mask_macros(cpp.encode()).count(b"ARROW_EXPORT") == 0 and len(mask_macros(cpp.encode())) == len(cpp)
    found = _symbols("c++", "point.h", cpp)
    assert found["Point"][:2] == ("class", "") and found["Point::Norm2"][:2] == ("function", "")
    assert "Point::Next" not in found and found["Point::operator=="][1] == "special"
    assert found["Point::Reset"][1] == "private" and found["Helper"][1] == "private"


def test_test_paths():
    assert all(map(is_test_path, ["pkg/tests/util.py", "test_x.py", "x_test.go", "FooTest.java", "a.spec.ts"]))
    assert not any(map(is_test_path, ["java.base/java/security/spec/X.java", "unittest/main.py", "Latest.java"]))


def test_seeds_with_examples_are_chosen_first(corpus, tmp_path):
    """Python and Java here have more documented symbols with examples than the cap: with
    prefer_doctests every chosen seed carries its examples; without it the hash order mixes them."""
    _, preferred, _, _ = _run(tmp_path, corpus, "synth.max_seeds_per_language=2", name="pref")
    _, plain, _, _ = _run(tmp_path, corpus, "synth.max_seeds_per_language=2", "synth.prefer_doctests=false",
                          name="plain")
    for lang in ("python", "java"):
        assert all(s.doctest for s in preferred if s.language == lang), lang
    assert sum(bool(s.doctest) for s in preferred) > sum(bool(s.doctest) for s in plain)
