"""The tokenizer section's vocabulary key and `coderforge validate`'s derived values (control-token ids,
shapes, stages, and YaRN at evaluation and serving as the recipe sets it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from coderforge.cli import app
from coderforge.config import ConfigError, load_recipe_text

MINIMAL = "data:\n  sources:\n    - uri: /tmp/somewhere\n"
REPO = Path(__file__).resolve().parents[2]


def test_the_old_vocab_size_key_is_refused_with_what_to_write():
    with pytest.raises(ConfigError) as err:
        load_recipe_text(MINIMAL + "tokenizer:\n  vocab_size: 151643\n", origin="r.yaml")
    msg = str(err.value)
    assert "r.yaml" in msg and "tokenizer" in msg and "vocab_size" in msg
    assert "total_vocab_size" in msg and "151665" in msg
    with pytest.raises(ConfigError, match="total_vocab_size"):
        load_recipe_text(MINIMAL, overrides=["tokenizer.vocab_size=4096"])


def test_total_vocab_size_counts_the_control_tokens():
    cfg = load_recipe_text(MINIMAL + "tokenizer:\n  total_vocab_size: 1000\n")
    assert cfg.tokenizer.total_vocab_size == 1000
    with pytest.raises(ConfigError, match="tokenizer.total_vocab_size"):
        load_recipe_text(MINIMAL + "tokenizer:\n  total_vocab_size: 270\n")  # 256 bytes + 22 control > 270


def test_validate_prints_the_seeds_values_of_the_05b_recipe():
    res = CliRunner().invoke(app, ["validate", str(REPO / "configs" / "qwen2.5-coder-0.5b.yaml")])
    assert res.exit_code == 0, res.output
    recipe = yaml.safe_load(res.output)  # still a recipe: the derived values are comments
    assert recipe["tokenizer"]["total_vocab_size"] == 151665
    assert load_recipe_text(res.output).tokenizer.total_vocab_size == 151665
    comment = "\n".join(line[2:] for line in res.output.splitlines()
                        if line.startswith("# ") and not line.startswith("# What"))
    derived = yaml.safe_load(comment)["derived"]
    ids = derived["tokenizer"]["control_token_ids"]
    assert ids["<|endoftext|>"] == 151643 and ids["<|fim_prefix|>"] == 151659 and ids["<|file_sep|>"] == 151664
    assert derived["tokenizer"]["len_tokenizer"] == 151665
    m = derived["model"]
    assert (m["layers"], m["hidden"], m["heads"], m["kv_heads"], m["head_dim"], m["intermediate"]) == \
        (24, 896, 14, 2, 64, 4864)
    assert derived["stages"]["repo"]["rope_theta"] == 1_000_000.0
    assert derived["long_context"]["eval"]["max_position_embeddings"] == 131072
    assert derived["long_context"]["serving"] == {"enabled": False, "max_position_embeddings": 32768}
    assert derived["mixture"]["ratios"] == {"code": 0.7, "text": 0.2, "math": 0.1}


LONG = MINIMAL + """repo: {seq_len: 4096}
eval:
  long_context: {enabled: true, yarn_factor: 2.0, beta_fast: 0.68, beta_slow: 0.068}
vllm:
  long_context: {enabled: true, yarn_factor: 8.0, original_max_position_embeddings: 1024}
"""


def _printed_derived(recipe: Path, *sets: str) -> dict:
    args = ["validate", str(recipe)] + [a for s in sets for a in ("--set", s)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    comment = "\n".join(line[2:] for line in res.output.splitlines()
                        if line.startswith("# ") and not line.startswith("# What"))
    return yaml.safe_load(comment)["derived"]


def test_validate_reports_yarn_as_the_recipe_sets_it_for_evaluation_and_serving(tmp_path):
    """The YaRN ``coderforge validate`` prints is the recipe's eval.long_context / vllm.long_context, with
    the positions and ramp bounds the code's own overrides (``yarn_overrides``) give a model saved at the
    trained length (the repo stage's, or the file stage's without it)."""
    from coderforge.train.model import yarn_overrides

    path = tmp_path / "long.yaml"
    path.write_text(LONG)
    lc = _printed_derived(path)["long_context"]
    assert lc["trained_length"] == 4096
    assert lc["eval"] == {"enabled": True, "yarn_factor": 2.0, "original_max_position_embeddings": 4096,
                          "max_position_embeddings": 8192, "beta_fast": 0.68, "beta_slow": 0.068}
    assert lc["serving"] == {"enabled": True, "yarn_factor": 8.0, "original_max_position_embeddings": 1024,
                             "max_position_embeddings": 8192, "beta_fast": 32.0, "beta_slow": 1.0}
    saved = {"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}, "max_position_embeddings": 4096}
    cfg = load_recipe_text(LONG)
    for side, section in (("eval", cfg.eval.long_context), ("serving", cfg.vllm.long_context)):
        over = yarn_overrides(saved, section.yarn_factor, section.original_max_position_embeddings,
                              section.beta_fast, section.beta_slow)
        rope = over["rope_parameters"]
        assert lc[side]["max_position_embeddings"] == over["max_position_embeddings"], side
        assert lc[side]["original_max_position_embeddings"] == rope["original_max_position_embeddings"], side
        assert (lc[side]["beta_fast"], lc[side]["beta_slow"]) == (rope.get("beta_fast", 32.0),
                                                                  rope.get("beta_slow", 1.0)), side
    # off on both sides: the model as saved; without the repo stage the trained length is the file stage's
    off = _printed_derived(path, "eval.long_context.enabled=false", "vllm.long_context.enabled=false",
                           "repo.enabled=false", "pack.seq_len=2048", "model.max_position_embeddings=2048")
    assert off["long_context"] == {"trained_length": 2048,
                                   "eval": {"enabled": False, "max_position_embeddings": 2048},
                                   "serving": {"enabled": False, "max_position_embeddings": 2048}}
    # serving an outside teacher: with the length set it applies to the teacher too; unset, YaRN scales from
    # the teacher's own length, which the recipe cannot know (the run's own models: the trained length)
    assert "synth.teacher" not in _printed_derived(path, "synth.teacher=s3://models/t")["long_context"]["serving"]
    from coderforge.derived import derived_values

    own = derived_values(load_recipe_text(LONG.replace(", original_max_position_embeddings: 1024", "")
                                          + "synth: {teacher: s3://models/t}\n"))["long_context"]["serving"]
    assert own["original_max_position_embeddings"] == 4096 and own["max_position_embeddings"] == 32768
    assert "8 x the max_position_embeddings of s3://models/t" in own["synth.teacher"]
