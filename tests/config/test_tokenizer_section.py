"""The tokenizer section's vocabulary key and `coderforge validate`'s derived values."""

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
    assert derived["stages"]["repo"]["long_context_inference"]["max_length"] == 131072
    assert derived["mixture"]["ratios"] == {"code": 0.7, "text": 0.2, "math": 0.1}
