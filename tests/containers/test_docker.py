"""With Docker (marked ``docker``; ``.ci/docker`` runs them after building the images): the sandbox inside
the data image, under exactly the privileges the Helm chart sets, isolates as ``coderforge sandbox check``
does on the host, and no strictly smaller privilege set isolates; the engine removes its containers
when the block fails."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from coderforge.images.engine import engine, running_daemon
from coderforge.images.privileges import CANDIDATE_BY_NAME, DOCKER_SANDBOX, check_in_container, measure
from coderforge.k8s.images import image_for
from tests.containers.test_privileges import chart_sandbox_values, privileges_of_chart

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def eng():
    try:
        host = running_daemon()
    except Exception as exc:  # noqa: BLE001 - a DOCKER_HOST that does not answer
        pytest.skip(f"no Docker daemon: {exc}")
    if host is None:
        pytest.skip("no Docker daemon answers (DOCKER_HOST, /var/run/docker.sock or coderforge's private one); "
                    ".ci/docker starts one and builds the images")
    with engine(start=False) as e:
        yield e


@pytest.fixture(scope="module")
def data_image(eng):
    import docker

    ref = image_for("data")
    client = eng.client()
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        pytest.skip(f"{ref} is not built: run `coderforge images build --only data`")
    finally:
        client.close()
    return ref


def host_check() -> dict:
    proc = subprocess.run([sys.executable, "-m", "coderforge.cli", "sandbox", "check"], capture_output=True,
                          text=True, timeout=300)
    return json.loads(proc.stdout)


def test_sandbox_in_the_container_isolates_as_on_the_host_with_the_charts_privileges(eng, data_image):
    host = host_check()
    if not host["isolated"]:
        pytest.skip(f"the host itself cannot isolate: {host['reason']}")
    chart = privileges_of_chart(chart_sandbox_values())
    inside = check_in_container(eng.client(), data_image, chart, eng.labels)
    assert inside["exit"] == 0, inside
    for key in ("isolated", "network_blocked", "seccomp"):
        assert inside[key] == host[key], (key, inside[key], host[key])
    assert inside["mode"].startswith("rootless")  # uid 10001: the sandbox's user namespace
    priv = inside["privileges"]
    assert priv["uid"] == 10001 and priv["capabilities"]["effective"] == []
    assert priv["seccomp"] == "filter" and priv["proc_masked"] == []  # our profile; /proc unmasked
    assert "python" in inside["languages"]


# One program per sandbox language, printing 42; run with ``coderforge.sandbox.core.run_program`` inside the
# image (the toolchains are the images' SANDBOX_TOOLCHAINS) under the chart's privileges.
_LANGUAGE_PROBE = r"""
import json
from coderforge.sandbox.core import run_program
progs = {
    "python": "print(6 * 7)",
    "javascript": "console.log(6 * 7);",
    "cpp": "#include <iostream>\nint main() { std::cout << 6 * 7 << std::endl; return 0; }",
    "java": "public class Main { public static void main(String[] a) { System.out.println(6 * 7); } }",
}
out = {}
for lang, code in progs.items():
    v = run_program(code, lang=lang, timeout_s=60, memory_mb=2048)
    out[lang] = {"verdict": v.verdict, "stdout": v.stdout.strip(), "isolated": v.isolated,
                 "detail": (v.detail or v.stderr)[-300:]}
print(json.dumps(out))
"""


@pytest.mark.parametrize("kind", ["data", "vllm"])
def test_every_sandbox_language_runs_isolated_in_the_images_that_run_untrusted_code(eng, kind):
    """``verify`` (data image) and ``evaluate``/``dpo_pairs`` (vLLM image) run model-written Python,
    JavaScript, Java and C++ (MultiPL-E): each image carries the toolchains, and each program runs isolated
    under the chart's privileges."""
    import docker

    from coderforge.images.containers import run_container

    ref = image_for(kind, variant="cpu")
    client = eng.client()
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        pytest.skip(f"{ref} is not built: run `coderforge images build --only {kind}`")
    chart = privileges_of_chart(chart_sandbox_values())
    code, out, err = run_container(client, ref, ["python", "-c", _LANGUAGE_PROBE], labels=eng.labels,
                                   timeout_s=600, **chart.run_args())
    assert code == 0, (out + err)[-2000:]
    results = json.loads(out.strip().splitlines()[-1])
    for lang, r in results.items():
        assert r["verdict"] == "passed" and r["stdout"] == "42" and r["isolated"], (lang, r)


def test_no_smaller_privilege_set_isolates(eng, data_image):
    smaller = [CANDIDATE_BY_NAME[n] for n in ("none", "unmasked-proc", "sandbox-seccomp")]
    rows = {r["name"]: r for r in measure(eng.client(), data_image, eng.labels, (*smaller, DOCKER_SANDBOX))}
    assert rows[DOCKER_SANDBOX.name]["isolated"], rows[DOCKER_SANDBOX.name]
    for p in smaller:
        assert not rows[p.name]["isolated"], rows[p.name]
    assert "unshare" in rows["none"]["reason"] and "unshare" in rows["unmasked-proc"]["reason"]
    assert "/proc" in rows["sandbox-seccomp"]["reason"]
    inside = check_in_container(eng.client(), data_image, CANDIDATE_BY_NAME["sandbox-seccomp"], eng.labels)
    assert inside["exit"] == 2 and any("procMount: Unmasked" in h for h in inside["missing"])


def test_containers_of_a_failed_block_are_removed(eng, data_image):
    client = eng.client()
    with pytest.raises(RuntimeError, match="boom"), engine(start=False) as inner:
        c = client.containers.run(data_image, ["sleep", "600"], detach=True, labels=inner.labels)
        raise RuntimeError("boom")
    assert not client.containers.list(all=True, filters={"id": c.id})


def _cli(args: list[str], cwd) -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run([sys.executable, "-m", "coderforge.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_data_pipeline_in_containers_equals_the_subprocess_run(eng, data_image, tmp_path):
    """Same corpus (a host directory, mounted read-only), same ledgers and summary rows with either runner;
    every step's MLflow run records its image; the MLflow store lies in the pipeline root; no container of
    the run is left."""
    import shutil
    import sysconfig
    from pathlib import Path

    from mlflow.tracking import MlflowClient

    corpus = tmp_path / "corpus"
    for pkg in ("json", "tomllib", "wsgiref"):
        shutil.copytree(Path(sysconfig.get_paths()["stdlib"]) / pkg, corpus / pkg,
                        ignore=shutil.ignore_patterns("__pycache__"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"run: {{name: dock}}\ndata:\n  sources:\n    - {{uri: {corpus}, kind: dir, name: c}}\n"
                      "tracking: {experiment: dock}\n")
    root = Path(__file__).resolve().parents[2]
    summaries = {}
    for runner in ("subprocess", "docker"):
        work = tmp_path / runner
        _cli(["run", str(recipe), "--pipeline", "data", "--workdir", str(work), "--runner", runner], cwd=root)
        summaries[runner] = json.loads((work / "summary.json").read_text())
    sub, dock = summaries["subprocess"], summaries["docker"]
    assert list(dock["steps"]) == list(sub["steps"]) == ["ingest", "filter", "dedup", "decontam"]
    for step, row in sub["steps"].items():
        assert {k: dock["steps"][step][k] for k in ("in", "kept", "dropped", "quarantined")} == \
            {k: row[k] for k in ("in", "kept", "dropped", "quarantined")}, step
    uri = dock["mlflow"]["tracking_uri"]
    assert uri == f"sqlite:///{tmp_path / 'docker/pipeline_root/mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("dock").experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(children) == 4
    for r in children:
        assert r.data.tags["coderforge.image"].startswith(image_for("data") + "@sha256:"), r.data.tags
    parent = next(r for r in runs if not r.data.tags.get("mlflow.parentRunId"))
    assert parent.data.tags["coderforge.runner"] == "docker"
    left = eng.client().containers.list(all=True, filters={"label": "dev.coderforge.step"})
    assert not left, [c.name for c in left]


def test_an_interrupted_docker_run_leaves_no_container(eng, data_image, tmp_path):
    """SIGTERM while a step's container runs: the command ends and removes its containers (and stops a
    daemon it started)."""
    import os
    import signal
    import time
    from pathlib import Path

    recipe = tmp_path / "r.yaml"
    recipe.write_text("run: {name: intr}\ndata:\n  sources:\n    - uri: ${stdlib}\n      kind: dir\n")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen([sys.executable, "-m", "coderforge.cli", "run", str(recipe), "--pipeline", "data",
                             "--runner", "docker", "--workdir", str(tmp_path / "w")], env=env,
                            cwd=Path(__file__).resolve().parents[2], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    client = eng.client()
    label = {"label": "dev.coderforge.step"}
    deadline = time.monotonic() + 600
    try:
        while not client.containers.list(filters=label):
            assert proc.poll() is None and time.monotonic() < deadline, "no step container started"
            time.sleep(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(120)
    assert code != 0
    assert not client.containers.list(all=True, filters=label)
