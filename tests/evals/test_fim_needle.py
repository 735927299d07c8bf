"""HumanEval-FIM single-line tasks (deterministic, exact-match scoring) and needle-in-a-haystack."""

from __future__ import annotations

import json

import pytest

from coderforge.evals.fim import build_fim_tasks, edit_similarity, evaluate_fim, first_line, score
from coderforge.evals.needle import build_task, evaluate_needle
from coderforge.generate import TransformersBackend


def test_fim_tasks_are_deterministic_and_reassemble_the_solution():
    a, b = build_fim_tasks(30), build_fim_tasks(30)
    assert [(t.prefix, t.suffix, t.middle) for t in a] == [(t.prefix, t.suffix, t.middle) for t in b]
    from coderforge.evals.execution import humaneval_problems

    for t, p in zip(a, humaneval_problems(30), strict=True):
        assert t.middle and "\n" not in t.middle
        full = p.prompt + p.canonical_solution
        assert (t.prefix + t.middle + t.suffix).replace(" ", "") == full.replace(" ", "")[: len(
            (t.prefix + t.middle + t.suffix).replace(" ", ""))]
        assert t.prompt().startswith("<|fim_prefix|>") and t.prompt().endswith("<|fim_middle|>")
    assert len({t.middle for t in a}) > 20  # lines differ across problems


def test_fim_scoring_rules():
    assert first_line("return x\n    y = 2") == "return x"
    assert first_line("\n    return x\n") == "return x"  # leading newline: the second line
    t = build_fim_tasks(1)[0]
    assert score(t, "  " + t.middle + "  \nmore")["exact_match"] is True
    assert score(t, t.middle[:-1])["exact_match"] is False
    assert edit_similarity("abcd", "abcd") == 100.0 and edit_similarity("", "ab") == 0.0
    assert edit_similarity("abcd", "abxd") == pytest.approx(75.0)


class _Oracle:
    """A backend that answers from the reference (to test the evaluation plumbing, not a model)."""

    name = "oracle"

    def __init__(self, tokenizer, answers):
        self.tokenizer, self.answers = tokenizer, answers

    def generate(self, prompts, config):
        return [[self.answers(p)] for p in prompts]


def test_fim_with_a_real_model_and_an_oracle(tiny_model_dir, tmp_path):
    backend = TransformersBackend(str(tiny_model_dir))
    m, arts = evaluate_fim(backend, 5, 16, tmp_path)
    assert m["fim_n"] == 5 and 0.0 <= m["fim_exact_match"] <= 1.0
    rows = [json.loads(x) for x in (tmp_path / "fim_results.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and arts == [str(tmp_path / "fim_results.jsonl")]
    refs = {t.prompt(): t.middle for t in build_fim_tasks(5)}
    m2, _ = evaluate_fim(_Oracle(backend.tokenizer, lambda p: refs[p] + "\n    junk"), 5, 16, tmp_path)
    assert m2["fim_exact_match"] == 1.0 and m2["fim_edit_similarity"] == 100.0


def test_needle_prompts_hit_the_requested_length_and_depth(tiny_model_dir, tmp_path):
    backend = TransformersBackend(str(tiny_model_dir))
    tok = backend.tokenizer
    shallow, deep = build_task(tok, 400, 0.0, seed=1), build_task(tok, 400, 1.0, seed=1)
    for t in (shallow, deep):
        assert t.prompt_tokens <= 400 * 1.1 and t.prompt_tokens >= 400 * 0.6
        assert t.prompt.endswith(f"assert {t.name}() == ")
    pos_shallow = shallow.prompt.index(f"def {shallow.name}")
    pos_deep = deep.prompt.index(f"def {deep.name}")
    assert pos_shallow < 10 and pos_deep > len(deep.prompt) * 0.8
    m, _ = evaluate_needle(backend, [200], [0.0, 1.0], tmp_path, seed=3)
    assert m["needle_n"] == 2 and "needle_found_len200_depth1" in m
    values = {}
    for d in (0.0, 1.0):
        t = build_task(tok, 200, d, seed=3)
        values[t.prompt] = str(t.value)
    oracle = _Oracle(tok, lambda p: values[p] + "\n")
    m2, _ = evaluate_needle(oracle, [200], [0.0, 1.0], tmp_path, seed=3)
    assert m2["needle_accuracy"] == 1.0
