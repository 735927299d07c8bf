"""MultiPL-E JSONL problems (Python, JavaScript, Java, C++; rows shaped like ``nuprl/MultiPL-E``'s) run in
the sandbox with planted completions: completion mode (base models) and instruct answers (SFT/DPO
models), correct ones pass, wrong ones fail, early exits fail, Java asserts are on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coderforge.evals.execution import MULTIPL_E_STOP, check_completions, load_jsonl_problems, summarize
from coderforge.evals.programs import JAVA_HARNESS, instruct_source, with_marker
from coderforge.sandbox import probe
from coderforge.sandbox.languages import available_languages

DATA = Path(__file__).parent / "data"
needs_sandbox = pytest.mark.skipif(not probe()[0], reason="namespaces unavailable here")

# (correct, wrong, early successful exit) completions in MultiPL-E's completion mode, per problem
COMPLETIONS = {
    "javascript": [
        ("  for (let i = 0; i < numbers.length; i++)\n    for (let j = i + 1; j < numbers.length; j++)\n"
         "      if (Math.abs(numbers[i] - numbers[j]) < threshold) return true;\n  return false;\n}",
         "  return false;\n}", "  process.exit(0);\n}"),
        ("  return number % 1.0;\n}", "  return number;\n}", "  process.exit(0);\n}")],
    "java": [
        ("        for (int i = 0; i < numbers.size(); i++)\n"
         "            for (int j = i + 1; j < numbers.size(); j++)\n"
         "                if (Math.abs(numbers.get(i) - numbers.get(j)) < threshold) return true;\n"
         "        return false;",
         "        return false;", "        System.exit(0);\n        return false;"),
        ("        return number % 1.0f;", "        return number;", "        System.exit(0);\n        return 0f;")],
    "cpp": [
        ("    for (size_t i = 0; i < numbers.size(); i++)\n        for (size_t j = i + 1; j < numbers.size(); j++)\n"
         "            if (std::abs(numbers[i] - numbers[j]) < threshold) return true;\n    return false;",
         "    return false;", "    exit(0);"),
        ("    return number - (int)number;", "    return number;", "    exit(0);")],
    "python": [("    return number % 1.0\n", "    return number\n", "    import sys; sys.exit(0)\n")],
}

# instruct answers: the whole function in a fence, with the prose, imports and demo mains models add
JS_ANSWER = ("Here is the function:\n\n```javascript\nexport function truncate_number(number) {\n"
             "  return number % 1.0;\n}\n```\nIt returns the decimal part.")
CPP_ANSWER = ("```cpp\n#include <vector>\n#include <cmath>\n\nfloat truncate_number(float number) {\n"
              "    return number - (int)number;\n}\n\nint main() {\n"
              "    return truncate_number(1.5f) > 0 ? 0 : 1;\n}\n```")
JAVA_CLASS_ANSWER = ("```java\nimport java.util.*;\n\nclass Problem {\n"
                     "    public static float truncateNumber(float number) {\n"
                     "        float whole = (float) Math.floor(number);\n        return number - whole;\n    }\n\n"
                     "    public static void main(String[] args) {\n        System.out.println(truncateNumber(3.5f));\n"
                     "    }\n}\n```")
JAVA_METHOD_ANSWER = "```java\npublic static float truncateNumber(float number) {\n    return number % 1.0f;\n}\n```"
PY_ANSWER = ("```python\ndef truncate_number(number: float) -> float:\n    return number % 1.0\n\n"
             "if __name__ == '__main__':\n    print(truncate_number(3.5))\n    raise SystemExit(3)\n```")


def test_loading_multipl_e_rows(tmp_path):
    java = load_jsonl_problems(DATA / "multipl_e_java.jsonl", language="java")
    assert [p.task_id for p in java] == ["HumanEval_0_has_close_elements", "HumanEval_2_truncate_number"]
    assert all(p.language == "java" and p.stop == ("\n    }\n",) for p in java)
    js = load_jsonl_problems(DATA / "multipl_e_javascript.jsonl")  # the row's "js" names the language
    assert js[0].language == "javascript" and js[0].extra["format"] == "multipl_e"
    assert load_jsonl_problems(DATA / "multipl_e_cpp.jsonl", limit=1)[0].stop == ("\n}",)
    # no stop_tokens: MultiPL-E's defaults; a language the sandbox does not run or a mislabelled file: refused
    row = {"name": "t", "prompt": "function f(){\n", "tests": "f();"}
    (tmp_path / "a.jsonl").write_text(json.dumps(row) + "\n")
    assert load_jsonl_problems(tmp_path / "a.jsonl", language="javascript")[0].stop == MULTIPL_E_STOP["javascript"]
    with pytest.raises(ValueError, match="a.jsonl:1: a 'js' problem in the java benchmark"):
        (tmp_path / "a.jsonl").write_text(json.dumps({**row, "language": "js"}) + "\n")
        load_jsonl_problems(tmp_path / "a.jsonl", language="java")
    with pytest.raises(ValueError, match="not one the sandbox runs"):
        (tmp_path / "a.jsonl").write_text(json.dumps({**row, "language": "rs"}) + "\n")
        load_jsonl_problems(tmp_path / "a.jsonl")


def test_program_layouts():
    cpp = load_jsonl_problems(DATA / "multipl_e_cpp.jsonl", language="cpp")[1]
    src = instruct_source("cpp", cpp.prompt, CPP_ANSWER.split("```cpp\n")[1].split("```")[0], cpp.test)
    assert src.count("int main(") == 1 and "#include<bits/stdc++.h>" in src  # the answer's main dropped
    marked = with_marker("cpp", src, "DONE")
    assert marked.rstrip().endswith('std::puts("DONE");\n}') or 'std::puts("DONE");' in marked.split("int main(")[1]
    # a trailing return in main: the marker goes before it
    assert with_marker("cpp", "int main() {\n    f();\n    return 0;\n}\n", "M").index("puts") < \
        with_marker("cpp", "int main() {\n    f();\n    return 0;\n}\n", "M").index("return 0")
    java = load_jsonl_problems(DATA / "multipl_e_java.jsonl", language="java")[1]
    program = with_marker("java", java.source("        return 0f;"), "DONE")
    assert program.index(f"public class {JAVA_HARNESS}") < program.index("class Problem")
    assert "org.javatuples" not in program and program.splitlines()[0].startswith("import java.util")
    assert "setDefaultAssertionStatus(true)" in program and 'Class.forName("Problem"' in program


@needs_sandbox
@pytest.mark.parametrize("language", ["python", "javascript", "java", "cpp"])
def test_completion_mode_planted(language):
    if language not in available_languages():
        pytest.skip(f"no {language} toolchain")
    problems = load_jsonl_problems(DATA / f"multipl_e_{language}.jsonl", language=language)
    comps = [list(c) for c in COMPLETIONS[language]]
    res = check_completions(problems, comps, timeout_s=20, memory_mb=512, workers=2)
    verdicts = [[(r["passed"], r["verdict"]) for r in rs] for rs in res]
    for rs in res:
        right, wrong, exits = rs
        assert right["passed"], (right["task_id"], right["verdict"], right["detail"])
        assert not wrong["passed"] and wrong["verdict"] in ("failed", "crashed"), verdicts
        assert not exits["passed"] and "completion marker missing" in exits["detail"], exits
        assert {r["language"] for r in rs} == {language}
    s = summarize(res, ks=(1, 2, 3))
    assert s["pass_at_1"] == pytest.approx(1 / 3) and s["pass_at_3"] == 1.0
    if language == "java":  # the JVM runs asserts only with -ea: the harness turns them on
        assert "java.lang.AssertionError" in res[0][1]["detail"] and "at Problem.main" in res[0][1]["detail"]
        assert "reflect" not in res[0][1]["detail"]


@needs_sandbox
def test_instruct_mode_planted():
    langs = [lang for lang in ("python", "javascript", "java", "cpp") if lang in available_languages()]
    problems, answers = [], []
    for lang in langs:
        p = [x for x in load_jsonl_problems(DATA / f"multipl_e_{lang}.jsonl", language=lang)
             if "truncate" in x.task_id][0]
        good = {"python": [PY_ANSWER], "javascript": [JS_ANSWER], "cpp": [CPP_ANSWER],
                "java": [JAVA_CLASS_ANSWER, JAVA_METHOD_ANSWER]}[lang]
        wrong = good[0].replace("% 1.0", "* 1.0").replace("- (int)number", "+ 0").replace("- whole", "+ whole")
        problems.append(p)
        answers.append([*good, wrong, "I cannot solve this."])
    res = check_completions(problems, answers, mode="instruct", timeout_s=20, memory_mb=512, workers=2)
    for lang, rs in zip(langs, res, strict=True):
        *good, wrong, prose = rs
        for r in good:
            assert r["passed"], (lang, r["code"], r["detail"])
        assert not wrong["passed"] and not prose["passed"], (lang, wrong["detail"], prose["detail"])
        assert all("code" in r for r in rs)
    py = res[langs.index("python")][0]
    assert "__main__" not in py["code"] or "SystemExit" not in py["code"].split("__main__")[0]


@needs_sandbox
def test_humaneval_instruct_answers_without_the_prompt_imports():
    from coderforge.evals.execution import humaneval_problems

    p = humaneval_problems(1)[0]  # from typing import List, has_close_elements
    body = p.canonical_solution
    answer = f"```python\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n{body}```"
    res = check_completions([p], [[answer, "```python\ndef has_close_elements(a, b):\n    return True\n```"]],
                            mode="instruct", timeout_s=10)
    assert res[0][0]["passed"], res[0][0]["detail"]
    assert res[0][0]["code"].startswith("def has_close_elements") and not res[0][1]["passed"]
