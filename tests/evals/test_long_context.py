"""Long context as Qwen does it (recipe.md §5.1, issue 14): the repo-level model is saved without RoPE
scaling (``max_position_embeddings`` = the trained length), and YaRN is an explicit choice at load and
serve time (``eval.long_context``, ``vllm.long_context``): it changes the model's config for that backend
only, the needle beyond the trained length runs with it, and every short-context result is the same
whether it is on or off."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from coderforge.config import load_recipe_text
from coderforge.evals.step import run_evaluate
from coderforge.generate.vllm_server import server_command, server_config
from coderforge.tracking import NullRun
from tests.evals.conftest import build_tiny_model, write_heldout

TRAINED = 256
YARN_ATTENTION = 0.1 * math.log(4.0) + 1.0


def _flag(cmd: list[str], name: str) -> str | None:
    return cmd[cmd.index(name) + 1] if name in cmd else None


@pytest.fixture(scope="module")
def short_model(tmp_path_factory) -> Path:
    """A tiny random model saved the way the repo stage saves it: trained length 256, no rope scaling."""
    d = build_tiny_model(tmp_path_factory.mktemp("short-model"))
    conf = json.loads((d / "config.json").read_text())
    conf.update(rope_parameters={"rope_type": "default", "rope_theta": 10_000.0}, max_position_embeddings=TRAINED)
    (d / "config.json").write_text(json.dumps(conf, indent=2))
    write_heldout(d.parent / "data" / "heldout", d)
    return d


def test_repo_stage_saves_the_model_as_qwen_ships_it(tmp_path):
    from transformers import AutoModelForCausalLM

    from coderforge.train.pretrain import finish_model

    d = build_tiny_model(tmp_path / "m")
    conf = json.loads((d / "config.json").read_text())  # what training leaves: RoPE 1M, max positions 128
    conf.update(rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0}, max_position_embeddings=128)
    (d / "config.json").write_text(json.dumps(conf))
    finish_model(d, "repo", 1_000_000.0, 128, None)
    saved = json.loads((d / "config.json").read_text())
    assert saved.get("rope_scaling") is None and "rope_theta" not in saved
    assert saved["rope_parameters"] == {"rope_type": "default", "rope_theta": 1_000_000.0}
    assert saved["max_position_embeddings"] == 128  # the trained length, not 4x
    model = AutoModelForCausalLM.from_pretrained(d)
    assert model.model.rotary_emb.rope_type == "default" and model.model.rotary_emb.attention_scaling == 1.0


def test_yarn_overrides_from_the_saved_config():
    from coderforge.train.model import yarn_overrides

    conf = {"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}, "max_position_embeddings": 32768}
    assert yarn_overrides(conf) == {"max_position_embeddings": 131072, "rope_parameters": {
        "rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0, "original_max_position_embeddings": 32768}}
    assert yarn_overrides({"rope_theta": 1e4, "max_position_embeddings": 4096}, 2.0, 1024)[
        "max_position_embeddings"] == 2048
    with pytest.raises(ValueError, match="already scales RoPE"):  # a model saved with YaRN by the old code
        yarn_overrides({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0,
                                            "original_max_position_embeddings": 32768}})
    with pytest.raises(ValueError, match="no RoPE base"):
        yarn_overrides({"max_position_embeddings": 32768})


def test_long_context_changes_the_loaded_config_only(short_model):
    import torch

    from coderforge.config import LongContextSection
    from coderforge.evals.serving import load_model

    on_disk = (short_model / "config.json").read_bytes()
    plain, off = load_model(short_model), load_model(short_model, LongContextSection())
    yarn = load_model(short_model, LongContextSection(enabled=True))
    assert plain.model.rotary_emb.rope_type == off.model.rotary_emb.rope_type == "default"
    assert plain.config.max_position_embeddings == TRAINED
    assert yarn.model.rotary_emb.rope_type == "yarn"
    assert yarn.model.rotary_emb.attention_scaling == pytest.approx(YARN_ATTENTION)
    assert yarn.config.max_position_embeddings == 4 * TRAINED
    assert (short_model / "config.json").read_bytes() == on_disk
    x = torch.randint(0, 500, (1, 40))
    with torch.no_grad():
        assert torch.equal(plain(input_ids=x).logits, off(input_ids=x).logits)
        assert not torch.allclose(plain(input_ids=x).logits, yarn(input_ids=x).logits)


def test_yarn_betas_for_models_trained_short(short_model):
    """YaRN's ramp bounds are recipe values: at a short trained length its defaults (32/1 rotations)
    interpolate nearly every RoPE dimension, so a recipe can lower them; they reach the loaded model (and
    vLLM's overrides), and a ramp whose fast bound is not above the slow one is refused."""
    import torch

    from coderforge.config import ConfigError, LongContextSection
    from coderforge.evals.serving import load_model
    from coderforge.generate.vllm_server import long_context_overrides

    default = load_model(short_model, LongContextSection(enabled=True))
    scaled = LongContextSection(enabled=True, beta_fast=0.68, beta_slow=0.068)
    tuned = load_model(short_model, scaled)
    assert tuned.config.rope_parameters["beta_fast"] == 0.68 and "beta_fast" not in default.config.rope_parameters
    assert not torch.allclose(default.model.rotary_emb.inv_freq, tuned.model.rotary_emb.inv_freq)
    over = long_context_overrides(str(short_model), scaled)
    assert (over["rope_parameters"]["beta_fast"], over["rope_parameters"]["beta_slow"]) == (0.68, 0.068)
    with pytest.raises(ValueError, match="beta_fast"):
        LongContextSection(enabled=True, beta_fast=1.0, beta_slow=2.0)
    with pytest.raises(ConfigError, match="beta_fast"):
        load_recipe_text("data: {sources: [{uri: /x}]}\neval: {long_context: {enabled: true, beta_fast: 0.5}}")


def _vllm(extra: str = ""):
    return load_recipe_text("data:\n  sources: [{uri: /tmp}]\nvllm:\n  dtype: float32\n  max_model_len: 4096\n"
                            + extra).vllm


def test_vllm_server_gets_yarn_through_hf_overrides_only_when_asked(short_model):
    off = server_command("python", server_config(_vllm(), str(short_model), "m", None, attach=False), 8000)
    assert "--hf-overrides" not in off and _flag(off, "--max-model-len") == str(TRAINED)
    v = _vllm("  long_context: {enabled: true, yarn_factor: 4.0}\n")
    cmd = server_command("python", server_config(v, str(short_model), "m", None, attach=False), 8000)
    assert json.loads(_flag(cmd, "--hf-overrides")) == {
        "rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                            "original_max_position_embeddings": TRAINED},
        "max_position_embeddings": 4 * TRAINED}
    assert _flag(cmd, "--max-model-len") == str(4 * TRAINED)  # vLLM serves up to factor x the trained length
    # an attached server (the chart's Deployment) sets its own flags: nothing is read from the model path
    attached = server_config(_vllm("  base_url: http://vllm:8000\n  long_context: {enabled: true}\n"),
                             "s3://bucket/model", "m", None)
    assert attached.hf_overrides is None and attached.base_url == "http://vllm:8000"
    with pytest.raises(ValueError, match="cannot read"):
        server_config(v, "/nonexistent/model", "m", None, attach=False)


def test_evaluate_step_servers_ignore_vllm_long_context_unless_the_step_asks(short_model):
    from coderforge.config import LongContextSection
    from coderforge.evals.serving import server_config as eval_server_config

    cfg = load_recipe_text("data:\n  sources: [{uri: /tmp}]\nvllm:\n  long_context: {enabled: true}\n")
    assert eval_server_config(cfg, short_model, "base", None).hf_overrides is None
    on = eval_server_config(cfg, short_model, "base", None, LongContextSection(enabled=True, yarn_factor=2.0))
    assert on.hf_overrides["rope_parameters"]["factor"] == 2.0 and on.hf_overrides["max_position_embeddings"] == 512


RECIPE = ("data:\n  sources: [{uri: /tmp}]\neval:\n  backend: transformers\n  suite: [heldout, fim, needle]\n"
          "  fim_problems: 3\n  max_new_tokens: 8\n  needle_lengths: [120, 256, 900]\n  needle_depths: [0.0, 1.0]\n")


def test_needle_beyond_the_trained_length_runs_with_yarn_and_nothing_else_changes(short_model, tmp_path):
    data = str(short_model.parent / "data")
    off = run_evaluate(load_recipe_text(RECIPE), str(short_model), str(tmp_path / "off"), NullRun(), data_dir=data)
    on_recipe = RECIPE + "  long_context: {enabled: true, yarn_factor: 4.0}\n"
    on = run_evaluate(load_recipe_text(on_recipe), str(short_model), str(tmp_path / "on"), NullRun(), data_dir=data)
    m0, m1 = off.metrics, on.metrics
    short = [k for k in m0 if k.startswith(("heldout_", "fim_")) or "len120" in k or "len256" in k]
    assert short and {k: m0[k] for k in short} == {k: m1[k] for k in short}
    for name in ("fim_results.jsonl",):
        assert (tmp_path / "off" / name).read_text() == (tmp_path / "on" / name).read_text()
    # off: the 900-token needle does not fit the model's 256 positions and is not sent; one of exactly the
    # trained length (prompt and answer) is
    assert m0["needle_n"] == 6 and m0["needle_prompt_too_long"] == 2 and not any("yarn" in k for k in m0)
    # on: it runs on a YaRN backend of its own (1024 positions); 120 and 256 stay on the plain model
    assert m1["needle_n"] == 4 and m1["needle_yarn_n"] == 2 and "needle_yarn_prompt_too_long" not in m1
    rows = [json.loads(x) for x in (tmp_path / "on" / "needle_yarn_results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(TRAINED < r["prompt_tokens"] <= 900 and not r["prompt_too_long"] for r in rows)
    assert json.loads((short_model / "config.json").read_text())["max_position_embeddings"] == TRAINED


def test_needle_lengths_split_at_the_trained_length(short_model):
    from coderforge.config import LongContextSection
    from coderforge.evals.needle import split_lengths

    lengths = [100, 256, 257, 1000]
    assert split_lengths(lengths, short_model, LongContextSection()) == (lengths, [])
    assert split_lengths(lengths, short_model, LongContextSection(enabled=True)) == ([100, 256], [257, 1000])
    assert split_lengths(lengths, short_model, LongContextSection(
        enabled=True, original_max_position_embeddings=128)) == ([100], [256, 257, 1000])


def test_the_qwen_recipe_runs_the_needle_at_4x_with_yarn_and_the_rest_without():
    from coderforge.config import load_recipe
    from tests.config import seeds

    qwen = load_recipe(Path(__file__).resolve().parents[2] / "configs" / "qwen2.5-coder-0.5b.yaml")
    lc = qwen.eval.long_context
    assert lc.enabled and lc.yarn_factor == seeds.YARN_FACTOR and lc.original_max_position_embeddings is None
    assert qwen.repo.seq_len == seeds.YARN_ORIGINAL and seeds.YARN_LENGTH in qwen.eval.needle_lengths
    assert qwen.vllm.max_model_len >= seeds.YARN_LENGTH and not qwen.vllm.long_context.enabled
    assert "humaneval" in qwen.eval.suite and "fim" in qwen.eval.suite  # these run on the model as saved
