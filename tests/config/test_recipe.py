import pytest

from coderforge.config import ConfigError, load_recipe, load_recipe_text

MINIMAL = """
data:
  sources:
    - uri: /tmp/somewhere
"""


def test_tiny_recipe_loads_with_stdlib_expanded(stdlib_dir):
    cfg = load_recipe("configs/tiny.yaml")
    assert cfg.data.sources[0].uri == str(stdlib_dir)
    assert cfg.pack.seq_len == 256
    assert cfg.train.num_workers == 2


def test_unknown_key_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(MINIMAL + "filter:\n  max_line_lenght: 10\n")
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    msg = str(err.value)
    assert str(path) in msg and "filter.max_line_lenght" in msg and "unknown key" in msg


def test_wrong_type_says_what_was_expected(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(MINIMAL + "train:\n  steps: many\n")
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    assert "train.steps" in str(err.value) and "integer" in str(err.value)


def test_missing_required_section():
    with pytest.raises(ConfigError) as err:
        load_recipe_text("train:\n  steps: 3\n", origin="x.yaml")
    assert "x.yaml" in str(err.value) and "data" in str(err.value) and "missing" in str(err.value)


def test_set_overrides_are_typed_and_validated():
    cfg = load_recipe_text(MINIMAL, overrides=["train.steps=7", "train.lr=1e-4", "run.name=abc"])
    assert cfg.train.steps == 7 and cfg.train.lr == pytest.approx(1e-4) and cfg.run.name == "abc"
    with pytest.raises(ConfigError, match="train.steps"):
        load_recipe_text(MINIMAL, overrides=["train.steps=-1"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_recipe_text(MINIMAL, overrides=["train.steps"])


def test_not_a_mapping_and_bad_yaml():
    with pytest.raises(ConfigError, match="mapping"):
        load_recipe_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe_text("data: [unclosed\n")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_json_round_trip_and_fingerprint():
    cfg = load_recipe_text(MINIMAL)
    again = load_recipe_text(cfg.to_json())
    assert again == cfg and again.fingerprint() == cfg.fingerprint()
    assert "\n" not in cfg.to_json()
    other = load_recipe_text(MINIMAL, overrides=["train.steps=3"])
    assert other.fingerprint() != cfg.fingerprint()


def test_workdir_variable(tmp_path):
    cfg = load_recipe_text("data:\n  sources:\n    - uri: ${workdir}/corpus\n", workdir=str(tmp_path))
    assert cfg.data.sources[0].uri == f"{tmp_path}/corpus"


def test_base64_recipe_survives_kfp_local_python3_rewrite():
    from coderforge.config import encode_recipe_b64

    cfg = load_recipe_text("data:\n  sources:\n    - uri: /usr/lib/python3.11\n")
    blob = encode_recipe_b64(cfg.to_json())
    assert "python3" not in blob
    assert load_recipe_text(blob).data.sources[0].uri == "/usr/lib/python3.11"


@pytest.mark.parametrize("path", sorted(__import__("glob").glob("configs/*.yaml")))
def test_every_shipped_recipe_validates(path):
    cfg = load_recipe(path)
    assert cfg.run.name and cfg.data.sources
