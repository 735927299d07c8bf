"""The evaluate step over base, SFT and DPO models (transformers backend, tiny random models built
here): stage-prefixed metrics, completion vs instruct mode, greedy pass@1 and sampled pass@k, the
per-language table, and ``coderforge compare`` of the stages of one run and of two runs of one recipe."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from typer.testing import CliRunner

from coderforge import tracking
from coderforge.config import load_recipe_text
from coderforge.evals.bench import ModelRun, execution_bench
from coderforge.evals.cli import app
from coderforge.evals.compare import format_table, stage_columns
from coderforge.evals.execution import humaneval_problems
from coderforge.evals.step import run_evaluate
from coderforge.steps.execute import execute_step
from coderforge.tracking import NullRun, StepRun
from tests.evals.conftest import build_tiny_model

RECIPE = ("data:\n  sources: [{uri: /tmp}]\neval:\n  backend: transformers\n  humaneval_problems: 2\n"
          "  max_new_tokens: 12\n  instruct_max_new_tokens: 16\n  temperature: 0.8\n  samples: 3\n  pass_k: [1, 2]\n"
          "  suite: [heldout, humaneval, multipl_e]\n"
          "  multipl_e_paths: {javascript: tests/evals/data/multipl_e_javascript.jsonl}\n  jsonl_problems: 1\n")


@pytest.fixture(scope="module")
def post_models(tmp_path_factory, tiny_model_dir):
    """An SFT and a DPO model: the base model's tokenizer with other weights."""
    root = tmp_path_factory.mktemp("post")
    sft = build_tiny_model(root / "sft", seed=5)
    dpo = root / "dpo"
    shutil.copytree(sft, dpo)
    build_tiny_model(root / "dpo-weights", seed=6)
    shutil.copy(root / "dpo-weights" / "model.safetensors", dpo / "model.safetensors")
    return sft, dpo


def test_base_sft_dpo_prefixed_metrics_modes_and_files(tiny_model_dir, tiny_data_dir, post_models, tmp_path,
                                                       mlflow_uri):
    sft, dpo = post_models
    out = tmp_path / "out"
    run = StepRun(mlflow_uri, None, "evaluate")
    res = run_evaluate(load_recipe_text(RECIPE), str(tiny_model_dir), str(out), run, data_dir=str(tiny_data_dir),
                       sft_model_dir=str(sft), dpo_model_dir=str(dpo))
    m = res.metrics
    for stage, mode in (("base", 0.0), ("sft", 1.0), ("dpo", 1.0)):
        assert m[f"{stage}.instruct_mode"] == mode
        for name in ("heldout_loss", "humaneval_pass_at_1", "humaneval_pass_at_2", "humaneval_sampled_pass_at_1",
                     "multipl_e_javascript_pass_at_1", "multipl_e_pass_at_1"):
            assert f"{stage}.{name}" in m, (stage, name)
        assert m[f"{stage}.humaneval_n"] == 2 and m[f"{stage}.humaneval_samples"] == 3
        assert m[f"{stage}.multipl_e_javascript_n"] == 1
    # the base model's metrics also unprefixed, as before; each model its own weights
    assert m["heldout_loss"] == m["base.heldout_loss"] and m["humaneval_pass_at_1"] == m["base.humaneval_pass_at_1"]
    assert "instruct_mode" not in m and not any(k.startswith("sft.") and k[4:] in m and k[4:] == "instruct_mode"
                                                for k in m)
    assert len({m["base.heldout_loss"], m["sft.heldout_loss"], m["dpo.heldout_loss"]}) == 3
    assert math.isclose(m["sft.heldout_ppl"], math.exp(m["sft.heldout_loss"]))

    # result files: base unprefixed, the others by stage; instruct rows keep the answer and its code
    base_rows = [json.loads(x) for x in (out / "humaneval_results.jsonl").read_text().splitlines()]
    sft_rows = [json.loads(x) for x in (out / "sft.humaneval_results.jsonl").read_text().splitlines()]
    sampled = [json.loads(x) for x in (out / "dpo.humaneval_sampled_results.jsonl").read_text().splitlines()]
    assert len(base_rows) == 2 and len(sft_rows) == 2 and len(sampled) == 2 * 3
    assert "code" not in base_rows[0] and all(r["completion"].startswith("```python\n") and "code" in r
                                              for r in sft_rows)
    assert {r["sample"] for r in sampled} == {0, 1, 2}
    assert (out / "dpo.multipl_e_javascript_results.jsonl").exists()
    langs = json.loads((out / "languages.json").read_text())
    assert {(r["stage"], r["benchmark"], r["language"]) for r in langs} == {
        (s, b, lang) for s in ("base", "sft", "dpo") for b, lang in (("humaneval", "python"),
                                                                    ("multipl_e_javascript", "javascript"))}
    summary = (out / "summary.md").read_text()
    assert "| metric | base (completion) | sft (instruct) | dpo (instruct) |" in summary
    assert "## pass@k by language" in summary and "| dpo | instruct | javascript | multipl_e_javascript |" in summary
    assert "## sft.humaneval: per-problem results" in summary
    assert [s["stage"] for s in res.info["stages"]] == ["base", "sft", "dpo"]
    tags = run.client.get_run(run.run_id).data.tags
    assert tags["coderforge.eval.base.mode"] == "completion" and tags["coderforge.eval.dpo.mode"] == "instruct"
    arts = {a.path for a in run.client.list_artifacts(run.run_id, "tables")}
    assert {"tables/sft.humaneval_results.json", "tables/languages.json"} <= arts


def test_without_heldout_data_or_post_training_models(tiny_model_dir, tmp_path):
    cfg = load_recipe_text(RECIPE.replace("  temperature: 0.8\n  samples: 3\n  pass_k: [1, 2]\n", ""))
    res = run_evaluate(cfg, str(tiny_model_dir), str(tmp_path / "o"), NullRun())
    assert "heldout" in res.info["skipped"] and "no data_dir" in res.info["skipped"]["heldout"]
    assert [s["stage"] for s in res.info["stages"]] == ["base"]
    assert "humaneval_pass_at_1" in res.metrics and "humaneval_pass_at_2" not in res.metrics
    assert not any(k.startswith(("sft.", "dpo.")) for k in res.metrics)


def test_sampling_settings_are_checked(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="greedy samples are identical"):
        run_evaluate(load_recipe_text(RECIPE.replace("temperature: 0.8", "temperature: 0")), str(tiny_model_dir),
                     str(tmp_path / "o"), NullRun())
    with pytest.raises(ValueError, match=r"pass_k \[5\] needs at least 5 samples"):
        run_evaluate(load_recipe_text(RECIPE.replace("pass_k: [1, 2]", "pass_k: [1, 5]")), str(tiny_model_dir),
                     str(tmp_path / "o"), NullRun())


class _Scripted:
    """A generation backend answering from a script (to test scoring, not a model): greedy calls get
    the correct body, sampled calls ``n`` answers of which the first ``right`` are correct."""

    name = "scripted"

    def __init__(self, solutions: dict[str, str], right: int):
        self.solutions, self.right, self.calls = solutions, right, []

    def generate(self, prompts, config):
        self.calls.append(config)
        out = []
        for p in prompts:
            good = self.solutions[p]
            if config.temperature <= 0:
                out.append([good] * config.n)
            else:
                out.append([good] * self.right + ["    return None\n"] * (config.n - self.right))
        return out


def test_pass_at_k_with_n_samples(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    problems = humaneval_problems(3)
    backend = _Scripted({p.prompt: p.canonical_solution for p in problems}, right=1)
    cfg = load_recipe_text(RECIPE.replace("samples: 3", "samples: 4").replace("pass_k: [1, 2]", "pass_k: [1, 2, 4]"))
    mr = ModelRun(cfg, "base", "completion", backend, AutoTokenizer.from_pretrained(tiny_model_dir), 4096, tmp_path,
                  NullRun())
    m, files = execution_bench(mr, "humaneval", problems)
    assert [c.temperature for c in backend.calls] == [0.0, 0.8] and backend.calls[1].n == 4
    assert m["humaneval_pass_at_1"] == 1.0  # greedy: the correct body
    assert m["humaneval_sampled_pass_at_1"] == pytest.approx(0.25)  # 1 of 4 samples right
    assert m["humaneval_pass_at_2"] == pytest.approx(0.5) and m["humaneval_pass_at_4"] == 1.0
    assert m["humaneval_samples"] == 4 and m["humaneval_verdict_passed"] == 3
    assert [f.rsplit("/", 1)[1] for f in files] == ["humaneval_results.jsonl", "humaneval_sampled_results.jsonl"]
    assert mr.languages == [{"stage": "base", "mode": "completion", "benchmark": "humaneval", "language": "python",
                             "n": 3, "pass_at_1": 1.0, "sampled_pass_at_1": 0.25, "pass_at_2": 0.5,
                             "pass_at_4": 1.0}]
    # a prompt that leaves no room for the answer in the context: not sent, fails as prompt_too_long
    mr.context_limit = 150
    m2, _ = execution_bench(mr, "humaneval", problems)
    assert m2["humaneval_verdict_prompt_too_long"] >= 1
    assert m2["humaneval_pass_at_1"] == (3 - m2["humaneval_verdict_prompt_too_long"]) / 3


def test_compare_stages_of_one_run_and_two_runs_of_one_recipe(tiny_model_dir, tiny_data_dir, post_models, tmp_path,
                                                             mlflow_uri):
    sft, dpo = post_models
    recipe = (RECIPE.replace("suite: [heldout, humaneval, multipl_e]", "suite: [heldout, humaneval]")
              .replace("  temperature: 0.8\n  samples: 3\n  pass_k: [1, 2]\n", "")
              + f"tracking:\n  uri: {json.dumps(mlflow_uri)}\n")
    cfg = load_recipe_text(recipe)
    parents = []
    for name in ("run-1", "run-2"):
        parent = tracking.start_parent_run(mlflow_uri, "coderforge", name, {},
                                           tags={"coderforge.recipe_fingerprint": cfg.fingerprint()})
        execute_step("evaluate", recipe, parent, str(tmp_path / name), model_dir=str(tiny_model_dir),
                     data_dir=str(tiny_data_dir), sft_model_dir=str(sft), dpo_model_dir=str(dpo))
        tracking.finish_run(mlflow_uri, parent)
        parents.append(parent)
    chart = tmp_path / "stages.png"
    res = CliRunner().invoke(app, ["compare", parents[0], "--stages", "--tracking-uri", mlflow_uri,
                                   "--chart", str(chart)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert "base (completion)" in lines[0] and "sft (instruct)" in lines[0] and "dpo (instruct)" in lines[0]
    child = [r for r in tracking.child_runs(mlflow_uri, parents[0]) if r.data.tags["coderforge.step"] == "evaluate"][0]
    losses = [child.data.metrics[f"{s}.heldout_loss"] for s in ("base", "sft", "dpo")]
    assert len(set(losses)) == 3  # three models, three held-out losses, each in its column
    loss = next(ln for ln in lines if ln.startswith("heldout_loss ")).split()[1:4]
    assert loss == [f"{v:.4g}" for v in losses]
    assert any(ln.startswith("humaneval_pass_at_1 ") for ln in lines)
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "heldout_loss" in lines[-1]
    # two runs of one recipe: six columns, and the note that the recipe is the same
    res = CliRunner().invoke(app, ["compare", *parents, "--stages", "--tracking-uri", mlflow_uri])
    assert res.exit_code == 0, res.output
    head = res.output.splitlines()[0]
    assert head.count("(completion)") == 2 and head.count("(instruct)") == 4
    assert "run-1" in head and "run-2" in head
    loss_row = next(ln for ln in res.output.splitlines() if ln.startswith("heldout_loss ")).split()
    assert loss_row[1:4] == loss_row[4:7]  # the same recipe and models: the same held-out losses
    assert f"recipe: the same in all runs (fingerprint {cfg.fingerprint()})" in res.output
    # without --stages: the runs side by side as before, stage metrics as prefixed rows
    res = CliRunner().invoke(app, ["compare", *parents, "--tracking-uri", mlflow_uri])
    assert res.exit_code == 0 and any(ln.startswith("sft.heldout_loss") for ln in res.output.splitlines())


def test_stage_columns_keep_runs_without_stages():
    labels, names, cols = stage_columns(["a", "b"], [{"x": 1.0, "base.x": 1.0, "base.instruct_mode": 0.0,
                                                      "sft.x": 2.0, "sft.instruct_mode": 1.0},
                                                     {"x": 3.0, "evaluate.y": 1.0}])
    assert labels == ["a base (completion)", "a sft (instruct)", "b"] and names == ["x"]
    assert [c["x"] for c in cols] == [1.0, 2.0, 3.0]
    table = format_table(labels, names, cols)
    assert table.splitlines()[-1].split() == ["x", "1", "2", "3", "+2"]
