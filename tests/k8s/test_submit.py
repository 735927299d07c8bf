"""coderforge submit: --dry-run output for the tiny recipe, and idempotent submission per recipe content
through the real kfp.Client against a local KFP REST stand-in."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from coderforge.config import load_recipe
from coderforge.k8s.cli import submit as submit_command
from coderforge.k8s.submit import prepare, run_name_for, submit
from tests.k8s.kfp_api import KfpApiStandIn

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs/tiny.yaml"


@pytest.fixture(scope="module")
def cli():
    app = typer.Typer()
    app.command("submit")(submit_command)
    app.command("noop")(lambda: None)  # keep `submit` a sub-command
    return app


def test_dry_run_prints_what_would_be_sent(cli, tmp_path):
    recipe = tmp_path / "tiny.yaml"
    text = TINY.read_text() + ("\nk8s:\n  steps:\n"
                               "    pretrain: {cpu: '8', memory: 64Gi, gpu: 1, node_selector: {pool: gpu}}\n")
    recipe.write_text(text)
    out_pkg = tmp_path / "compiled.yaml"
    res = CliRunner().invoke(cli, ["submit", str(recipe), "--dry-run", "--experiment", "tiny-exp",
                                   "--output", str(out_pkg)])
    assert res.exit_code == 0, res.output
    shown = json.loads(res.output)
    cfg = load_recipe(recipe)
    assert shown["dry_run"] is True and shown["experiment"] == "tiny-exp"
    assert shown["run_name"] == run_name_for(cfg) == f"tiny-{cfg.fingerprint()}"
    assert shown["pipeline_name"] == "coderforge-recipe" and out_pkg.is_file()
    tasks = shown["tasks"]
    pre = tasks["exec-pretrain"]
    assert pre["gpu"] == "1" and pre["gpu_type"] == "nvidia.com/gpu" and pre["node_selector"] == {"pool": "gpu"}
    assert pre["image"].split("/")[-1].startswith("coderforge-train:")
    assert tasks["exec-ingest"]["image"].split("/")[-1].startswith("coderforge-data:")
    for t in tasks.values():
        assert t["secrets"] == ["coderforge-mlflow", "coderforge-s3"] and t["cpu"] and t["memory"]
    # the recipe itself is summarised, not dumped; and nothing secret is in the output
    assert "chars of recipe JSON" in shown["parameters"]["recipe"]
    # the compiled package carries the Kubernetes settings and the recipe as the parameter default
    spec, platform = yaml.safe_load_all(out_pkg.read_text())
    assert "exec-pretrain" in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    default = spec["root"]["inputDefinitions"]["parameters"]["recipe"]["defaultValue"]
    assert json.loads(default)["run"]["name"] == "tiny"


def test_host_required_without_dry_run(cli, monkeypatch):
    monkeypatch.delenv("KFP_HOST", raising=False)
    res = CliRunner().invoke(cli, ["submit", str(TINY)])
    assert res.exit_code == 2 and "--host" in res.output


def test_submission_is_idempotent_per_recipe_content(tmp_path):
    cfg = load_recipe(TINY)
    with KfpApiStandIn() as api:
        sub = prepare(cfg, str(TINY), api.url, "coderforge", tmp_path / "p.yaml")
        first = submit(sub)
        again = submit(prepare(cfg, str(TINY), api.url, "coderforge", tmp_path / "p2.yaml"))
        assert first.created and not again.created and again.run_id == first.run_id
        assert len(api.runs) == 1 and len(api.experiments) == 1
        posted = [b for m, p, b in api.requests if m == "POST" and p.startswith("/apis/v2beta1/runs")]
        assert posted[0]["display_name"] == run_name_for(cfg)
        assert json.loads(posted[0]["runtime_config"]["parameters"]["recipe"])["run"]["name"] == "tiny"
        # a changed recipe value is new content: exactly one more run
        changed = load_recipe(TINY, overrides=["train.steps=7"])
        third = submit(prepare(changed, str(TINY), api.url, "coderforge", tmp_path / "p3.yaml"))
        assert third.created and third.run_id != first.run_id and len(api.runs) == 2
        # the same content in another experiment is a separate run
        other = submit(prepare(cfg, str(TINY), api.url, "other", tmp_path / "p4.yaml"))
        assert other.created and len(api.runs) == 3 and len(api.experiments) == 2


def test_cli_submit_twice_creates_one_run(cli, tmp_path):
    recipe = tmp_path / "tiny.yaml"
    shutil.copy(TINY, recipe)
    with KfpApiStandIn() as api:
        r1 = CliRunner().invoke(cli, ["submit", str(recipe), "--host", api.url])
        r2 = CliRunner().invoke(cli, ["submit", str(recipe), "--host", api.url])
    assert r1.exit_code == 0 and "created run" in r1.output, r1.output
    assert r2.exit_code == 0 and "already exists" in r2.output, r2.output
    assert len(api.runs) == 1


def test_gitops_workflow_submits_changed_recipes_once():
    wf = yaml.safe_load((ROOT / ".github/workflows/submit-recipes.yaml").read_text())
    on = wf[True] if True in wf else wf["on"]  # YAML 1.1 reads `on:` as True
    assert on["push"]["paths"] == ["configs/**.yaml", "configs/**.yml"]
    assert on["push"]["branches"] == ["main"]
    assert wf["concurrency"]["cancel-in-progress"] is False  # queued, never two submitters at once
    steps = wf["jobs"]["submit"]["steps"]
    script = "\n".join(s.get("run", "") for s in steps)
    assert "git diff --name-only --diff-filter=AM" in script and "coderforge submit" in script
    assert "secrets.KFP_HOST" in json.dumps(wf)
