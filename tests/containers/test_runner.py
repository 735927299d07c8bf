"""The docker runner's fixes, without Docker: recipe paths resolved where the step runs, the pipeline root
as the steps' work directory (MLflow store, Ray results inside it) handed to the image's uid, /dev/shm as
large as Ray's object store wants, per-step settings generic over the step table."""

from __future__ import annotations

import json
import os
import sysconfig
from pathlib import Path

import pytest

from coderforge.config import load_recipe, load_recipe_text
from coderforge.images import runner
from coderforge.images.privileges import DOCKER_SANDBOX, NAMESPACE_CALLS, needs_sandbox
from coderforge.k8s.images import image_for
from coderforge.steps.table import STEPS
from coderforge.workspace import tracking_uri_of

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs/tiny.yaml"


def test_stdlib_is_expanded_by_the_step_not_by_the_driver(tmp_path):
    """The driver keeps ${stdlib}; the recipe text a step receives expands it to *its* interpreter's
    standard library (in a container: the image's), not the driver's."""
    cfg = load_recipe(TINY, workdir=str(tmp_path), defer=runner.DEFERRED)
    assert cfg.data.sources[0].uri == "${stdlib}"
    stepped = load_recipe_text(cfg.to_json(), origin="step")
    assert stepped.data.sources[0].uri == sysconfig.get_paths()["stdlib"]
    assert load_recipe(TINY, workdir=str(tmp_path)).data.sources[0].uri == sysconfig.get_paths()["stdlib"]


def test_steps_work_inside_the_pipeline_root(tmp_path, monkeypatch):
    """The steps' recipe puts their work directory, and so the MLflow SQLite store, its artifacts and Ray's
    results, inside the pipeline root (the one directory kfp.local mounts); recipe inputs on the host
    (${recipe_dir}/data/...) are mounted read-only, the host work directory is not."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_recipe(TINY, workdir=str(tmp_path / "w"), defer=runner.DEFERRED)
    step_cfg = runner.step_config(cfg, tmp_path / "w")
    lay = runner.layout(step_cfg, tmp_path / "w")
    assert lay.pipeline_root == tmp_path / "w/pipeline_root"
    assert tracking_uri_of(step_cfg) == f"sqlite:///{lay.pipeline_root / 'mlflow.db'}"
    assert cfg.run.workdir == str(tmp_path / "w")  # the driver's own recipe is unchanged
    mounts = lay.volumes()
    assert mounts[str(lay.pipeline_root)]["mode"] == "rw" and mounts[str(lay.logs)]["mode"] == "rw"
    problems = str((ROOT / "configs/data/tiny-problems.jsonl").resolve())
    if any(p.path.endswith("tiny-problems.jsonl") for p in cfg.synth.problems):
        assert mounts[problems] == {"bind": problems, "mode": "ro"}
    assert str(tmp_path / "w") not in mounts


def test_a_recipe_path_over_the_images_system_directories_is_refused(tmp_path):
    cfg = load_recipe(TINY, workdir=str(tmp_path), defer=runner.DEFERRED)
    cfg.data.sources[0].uri = "/usr/lib"
    with pytest.raises(runner.DockerRunError, match="/usr/lib.*stdlib"):
        runner.layout(runner.step_config(cfg, tmp_path), tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="handing files to another uid needs root")
def test_shared_directories_are_handed_to_the_image_uid(tmp_path):
    """What the driver created (the MLflow parent run's store) becomes writable by uid 10001."""
    lay = runner.DockerLayout(tmp_path, tmp_path / "pipeline_root", tmp_path / "logs", tmp_path / "status")
    lay.pipeline_root.mkdir()
    (lay.pipeline_root / "mlflow.db").write_text("x")
    runner.make_writable(lay)
    for path in (lay.pipeline_root, lay.pipeline_root / "mlflow.db", lay.logs, lay.status):
        assert path.stat().st_uid == runner.IMAGE_UID, path
    assert runner.container_user() is None  # as root: the containers keep the image's uid


def test_shared_memory_holds_rays_object_store():
    """Ray keeps its object store in /dev/shm only when /dev/shm holds all of it (its default share of
    memory); Docker's default is 64 MiB."""
    from ray._private import ray_constants

    memory = 24 << 30
    wanted = memory * ray_constants.DEFAULT_OBJECT_STORE_MEMORY_PROPORTION
    assert runner.ray_shm_bytes(memory) >= wanted
    assert runner.ray_shm_bytes(memory) < memory / 2


def test_every_step_gets_its_image_shm_and_exactly_its_privileges(tmp_path, monkeypatch):
    """Generic over the step table: each step's container runs the CPU build of the image the compiled
    pipeline names, records it for MLflow, has Ray's /dev/shm, and only sandbox steps get the sandbox's
    privileges."""
    from components.steps import component

    monkeypatch.setenv("CODERFORGE_LOG_DIR", str(tmp_path / "logs"))
    lay = runner.DockerLayout(tmp_path, tmp_path / "pipeline_root", tmp_path / "logs", tmp_path / "status")
    sc = runner.StepContainers(lay, {"dev.coderforge.session": "s1"})
    sandboxed = set()
    for step in STEPS:
        spec = component(step.name).component_spec.implementation.container
        assert runner.step_of_command(list(spec.command) + list(spec.args)) == step.name
        args = sc.run_args(step.name, spec.image)
        kind = {"light": "data", "ray": "train", "gpu": "vllm", "vllm": "vllm"}[step.resources]
        assert args["environment"]["CODERFORGE_IMAGE"] == image_for(kind, variant="cpu")
        assert args["environment"]["CODERFORGE_PIPELINE_IMAGE"] == spec.image
        assert args["environment"]["CODERFORGE_LOG_DIR"] == str(tmp_path / "logs")
        assert args["shm_size"] == runner.ray_shm_bytes()
        assert args["labels"]["dev.coderforge.session"] == "s1"
        if "security_opt" in args:
            sandboxed.add(step.name)
            assert args["unmask_proc"] is True and "cap_add" not in args and "privileged" not in args
            profile = json.loads(next(o for o in args["security_opt"] if o.startswith("seccomp="))[8:])
            denied = set(profile["syscalls"][0]["names"])
            assert not denied & set(NAMESPACE_CALLS) and {"ptrace", "bpf", "kexec_load"} <= denied
        assert needs_sandbox(step.name) == (step.name in sandboxed)
    assert {"verify", "dpo_pairs", "evaluate"} <= sandboxed
    assert DOCKER_SANDBOX.run_args()["unmask_proc"] is True


def test_needed_images_follow_the_step_table(tmp_path):
    cfg = load_recipe(TINY, workdir=str(tmp_path), defer=runner.DEFERRED)
    refs = runner.needed_images(cfg, "recipe")
    assert refs[0] == image_for("data")
    assert image_for("train", variant="cpu") in refs and image_for("vllm", variant="cpu") in refs
    assert runner.needed_images(cfg, "data") == [image_for("data")]
