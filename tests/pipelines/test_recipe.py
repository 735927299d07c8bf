import pytest
import yaml
from kfp import components

from coderforge.config import load_recipe
from coderforge.steps.table import steps_of
from pipelines.recipe import compile_recipe

RECIPE_STEPS = ("ingest", "filter", "dedup", "decontam", "tokenizer", "pack", "pretrain", "pack_repo",
                "pretrain_repo", "seeds", "synthesise", "verify", "sft", "dpo_pairs", "dpo", "evaluate")
DATA_STEPS = RECIPE_STEPS[:4]


def _task(step: str) -> str:
    """KFP's spelling of a step name in compiled IR (its only rule: underscores become dashes)."""
    return step.replace("_", "-")


def _tasks(path):
    (doc, *_rest) = list(yaml.safe_load_all(path.read_text()))
    return doc, set(doc["root"]["dag"]["tasks"])


def test_compiled_recipe_is_valid_ir_with_every_step(tmp_path):
    cfg = load_recipe("configs/tiny.yaml")
    out = compile_recipe(cfg, tmp_path / "recipe.yaml", for_cluster=False)
    loaded = components.load_component_from_file(str(out))
    assert loaded.name == "coderforge-recipe"
    doc, tasks = _tasks(out)
    assert {_task(s) for s in RECIPE_STEPS} | {"start-run", "finish-run"} == tasks
    assert steps_of("recipe", cfg) == RECIPE_STEPS
    default = doc["root"]["inputDefinitions"]["parameters"]["recipe"]["defaultValue"]
    assert yaml.safe_load(default)["train"]["steps"] == cfg.train.steps


def test_compiled_data_pipeline(tmp_path):
    cfg = load_recipe("configs/tiny.yaml")
    out = compile_recipe(cfg, tmp_path / "data.yaml", pipeline="data", for_cluster=False)
    _, tasks = _tasks(out)
    assert {_task(s) for s in DATA_STEPS} <= tasks and "pretrain" not in tasks
    assert {_task(s) for s in DATA_STEPS} | {"start-run", "finish-run"} == tasks


def test_repo_stage_can_be_switched_off(tmp_path):
    cfg = load_recipe("configs/tiny.yaml", overrides=["repo.enabled=false"])
    _, tasks = _tasks(compile_recipe(cfg, tmp_path / "r.yaml", for_cluster=False))
    assert "pretrain" in tasks and "pretrain-repo" not in tasks and "pack-repo" not in tasks


def test_cluster_compilation_carries_kubernetes_settings(tmp_path):
    cfg = load_recipe("configs/tiny.yaml", overrides=["k8s.rayjob.enabled=true"])
    out = compile_recipe(cfg, tmp_path / "k8s.yaml")
    docs = list(yaml.safe_load_all(out.read_text()))
    assert len(docs) == 2  # pipeline spec + Kubernetes platform spec
    text = out.read_text()
    assert "coderforge-s3" in text and "AWS_SECRET_ACCESS_KEY" in text
    assert "testing" not in text and "minioadmin" not in text


def test_optional_quality_and_mixture_steps(tmp_path):
    cfg = load_recipe("configs/tiny.yaml", overrides=["quality.enabled=true", "mixture.enabled=true"])
    _, tasks = _tasks(compile_recipe(cfg, tmp_path / "r.yaml", for_cluster=False))
    assert {"quality", "mixture"} <= tasks
    assert steps_of("recipe", cfg).index("mixture") < steps_of("recipe", cfg).index("pack")
    base = load_recipe("configs/tiny.yaml")
    assert "quality" not in steps_of("data", base) and "mixture" not in steps_of("recipe", base)


def test_posttrain_pipeline_from_a_given_model(tmp_path):
    """--pipeline posttrain: the post-training steps only, fed by recipe keys where no step makes an input."""
    cfg = load_recipe("configs/tiny.yaml", overrides=["posttrain.model=s3://models/base", "posttrain.docs=/data/docs"])
    doc, tasks = _tasks(compile_recipe(cfg, tmp_path / "p.yaml", pipeline="posttrain", for_cluster=False))
    posttrain = ("seeds", "synthesise", "verify", "sft", "dpo-pairs", "dpo", "evaluate")
    assert tasks == {*posttrain, "start-run", "finish-run"}
    assert "model_dir" not in doc["root"]["dag"]["tasks"]["synthesise"]["inputs"].get("artifacts", {})
    assert doc["root"]["dag"]["tasks"]["dpo"]["inputs"]["artifacts"]["model_dir"]["taskOutputArtifact"][
        "producerTask"] == "sft"
    bare = load_recipe("configs/tiny.yaml")
    with pytest.raises(ValueError, match="posttrain.docs"):
        compile_recipe(bare, tmp_path / "q.yaml", pipeline="posttrain", for_cluster=False)
