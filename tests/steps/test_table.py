"""The step table is the one declaration of a step: functions, components, wiring, parameters."""

from __future__ import annotations

import inspect

import pytest

from coderforge.config import load_recipe
from coderforge.steps import table
from coderforge.steps.table import STEPS, Input, Step, get_step, step_key, step_params, steps_of, wiring
from components.steps import component


@pytest.fixture(scope="module")
def tiny():
    return load_recipe("configs/tiny.yaml")


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.name)
def test_function_takes_the_declared_arguments(step):
    params = inspect.signature(step.load()).parameters
    assert {"cfg", "out_dir", "run", *step.input_args} <= set(params), (step.name, list(params))
    for key, value in step.fixed:
        assert step.load().keywords[key] == value


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.name)
def test_component_has_the_steps_name_inputs_and_output(step):
    spec = component(step.name).component_spec
    assert spec.name == step.name.replace("_", "-")
    assert set(spec.inputs) == {"recipe", "parent_run_id", *step.input_args}
    assert step.output in spec.outputs and "Output" in spec.outputs
    for inp in step.inputs:
        assert spec.inputs[inp.arg].type.startswith(f"system.{inp.kind}@")


def test_optional_steps_change_the_wiring(tiny):
    base = wiring("recipe", tiny)
    assert base["pack"]["docs_dir"] == "decontam" and "mixture" not in base and "quality" not in base
    on = wiring("recipe", tiny.model_copy(update={"mixture": tiny.mixture.model_copy(update={"enabled": True}),
                                                  "quality": tiny.quality.model_copy(update={"enabled": True})}))
    assert on["pack"]["docs_dir"] == "mixture" and on["pack_repo"]["docs_dir"] == "quality"
    assert on["tokenizer"]["docs_dir"] == "quality"
    no_repo = tiny.model_copy(update={"repo": tiny.repo.model_copy(update={"enabled": False})})
    assert wiring("recipe", no_repo)["evaluate"]["model_dir"] == "pretrain"
    assert wiring("recipe", tiny)["evaluate"]["model_dir"] == "pretrain_repo"
    assert steps_of("data", tiny) == ("ingest", "filter", "dedup", "decontam")


def test_logged_parameters_are_the_sections_a_step_reads(tiny):
    params = step_params(tiny, "pack_repo")
    assert {k.split(".")[0] for k in params} == {"repo", "pack", "data", "fim"}
    assert "train.steps" not in params
    changed = load_recipe("configs/tiny.yaml", overrides=["train.steps=3"])
    assert step_key(changed, "dedup") == step_key(tiny, "dedup")
    assert step_key(changed, "pretrain") != step_key(tiny, "pretrain")


def test_the_table_refuses_inconsistent_wiring(monkeypatch):
    bad = (*STEPS, Step("late", "coderforge.tokens.packing:run_pack", "x", output="o",
                        inputs=(Input("docs_dir", "Model", ("decontam",)),)))
    monkeypatch.setattr(table, "STEPS", bad)
    monkeypatch.setattr(table, "STEP_BY_NAME", {s.name: s for s in bad})
    with pytest.raises(ValueError, match="disagree on kind"):
        table._check_table()
    with pytest.raises(KeyError, match="unknown step 'nope'"):
        get_step("nope")
    with pytest.raises(ValueError, match="unknown pipeline"):
        steps_of("nope", None)


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.name)
def test_each_steps_tests_sit_where_its_module_says(step):
    """From a step's name to its tests in one hop: coderforge/<area>/<module>.py → tests/<area>/test_<module>.py."""
    from pathlib import Path

    parts = step.function.split(":")[0].split(".")[1:]
    path = Path(__file__).resolve().parents[1].joinpath(*parts[:-1], f"test_{parts[-1]}.py")
    assert path.exists(), path
