"""HumanEval through the sandbox: every canonical solution passes, every broken one fails; pass@k;
MBPP / HumanEval+ style JSONL."""

from __future__ import annotations

import json
import math
from itertools import combinations

import pytest

from coderforge.evals.execution import (
    check_completions,
    humaneval_problems,
    load_jsonl_problems,
    pass_at_k,
    summarize,
)
from coderforge.sandbox import probe

needs_sandbox = pytest.mark.skipif(not probe()[0], reason="namespaces unavailable here")


@needs_sandbox
def test_all_164_canonical_solutions_pass_and_broken_ones_fail():
    problems = humaneval_problems()
    assert len(problems) == 164
    canonical = [[p.canonical_solution] for p in problems]
    res = check_completions(problems, canonical, timeout_s=10)
    failing = [(r[0]["task_id"], r[0]["verdict"], r[0]["detail"]) for r in res if not r[0]["passed"]]
    assert failing == []
    assert summarize(res)["pass_at_1"] == 1.0
    # deliberately broken: wrong value, an exception, an early successful exit (must not count as a pass)
    broken = [["    return None\n"] if i % 3 == 0 else
              ["    raise RuntimeError('broken on purpose')\n"] if i % 3 == 1 else
              ["    import sys\n    sys.exit(0)\n"] for i in range(len(problems))]
    res = check_completions(problems, broken, timeout_s=10)
    wrongly_passing = [r[0]["task_id"] for r in res if r[0]["passed"]]
    assert wrongly_passing == []
    assert summarize(res)["pass_at_1"] == 0.0
    assert any("completion marker missing" in r[0]["detail"] for r in res)
    assert any("broken on purpose" in r[0]["detail"] for r in res)


@needs_sandbox
def test_a_looping_completion_times_out():
    p = humaneval_problems(1)
    res = check_completions(p, [["    while True:\n        pass\n"]], timeout_s=1)
    assert res[0][0]["verdict"] == "timeout"


def _brute_pass_at_k(n: int, c: int, k: int) -> float:
    samples = [1] * c + [0] * (n - c)
    subsets = list(combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n,c,k", [(5, 0, 1), (5, 1, 1), (5, 2, 2), (10, 3, 5), (10, 9, 3), (6, 6, 2), (7, 1, 7)])
def test_pass_at_k_matches_enumeration(n, c, k):
    assert math.isclose(pass_at_k(n, c, k), _brute_pass_at_k(n, c, k), rel_tol=1e-12)


def test_pass_at_k_rejects_k_above_n():
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_summarize_averages_over_problems():
    res = [[{"passed": True}, {"passed": False}], [{"passed": False}, {"passed": False}]]
    m = summarize(res, ks=(1, 2, 5))
    assert m["pass_at_1"] == pytest.approx(0.25) and m["pass_at_2"] == pytest.approx(0.5)
    assert "pass_at_5" not in m  # not enough samples


@needs_sandbox
def test_mbpp_and_evalplus_jsonl(tmp_path):
    mbpp = tmp_path / "mbpp.jsonl"
    mbpp.write_text("\n".join(json.dumps(r) for r in [
        {"task_id": 2, "text": "Write a function to find the shared elements.", "code": "",
         "test_list": ["assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))"],
         "test_setup_code": "", "challenge_test_list": []},
        {"task_id": 3, "text": "Identify non-prime numbers.", "code": "",
         "test_list": ["assert is_not_prime(2) == False", "assert is_not_prime(10) == True"],
         "test_imports": ["import math"]},
    ]) + "\n")
    plus = tmp_path / "heplus.jsonl"
    he0 = humaneval_problems(1)[0]
    plus.write_text(json.dumps({"task_id": "HumanEval/0", "prompt": he0.prompt, "entry_point": he0.entry_point,
                                "canonical_solution": he0.canonical_solution,
                                "test": he0.test + "\n    assert candidate([0.0, 0.5], 0.6) == True\n"}) + "\n")
    probs = load_jsonl_problems(mbpp) + load_jsonl_problems(plus)
    assert [p.task_id for p in probs] == ["Mbpp/2", "Mbpp/3", "HumanEval/0"]
    assert "similar_elements" in probs[0].prompt
    good = [["def similar_elements(a, b):\n    return tuple(set(a) & set(b))\n"],
            ["import math\ndef is_not_prime(n):\n"
             "    return any(n % i == 0 for i in range(2, int(math.sqrt(n)) + 1))\n"],
            [he0.canonical_solution]]
    res = check_completions(probs, good)
    assert [r[0]["passed"] for r in res] == [True, True, True], res
    bad = [["def similar_elements(a, b):\n    return ()\n"], ["def is_not_prime(n):\n    return True\n"],
           ["    return False\n"]]
    assert not any(r[0]["passed"] for r in check_completions(probs, bad))


def test_jsonl_with_unknown_shape_names_the_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"task_id": 1, "question": "?"}\n')
    with pytest.raises(ValueError, match=r"x.jsonl:1"):
        load_jsonl_problems(p)
