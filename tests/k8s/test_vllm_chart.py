"""The chart's optional vLLM server (helm/coderforge/templates/vllm.yaml), rendered by Helm's library and
validated against the Kubernetes schemas: replicas (data parallelism), tensor parallel size and GPU limits,
server flags, probes, /dev/shm, the non-root security context with writable emptyDirs, GPU placement, the
Service the recipe's ``vllm.base_url`` names, settings taken from a recipe, and the init container that
copies the model from object storage, run here for real against a local S3 server (moto)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import helm_python as helm
import pytest
import yaml

from coderforge import storage
from coderforge.config.posttrain import VLLMSection
from coderforge.config.recipe import load_recipe_text
from coderforge.generate.vllm_server import VLLMServerConfig, server_command
from tests.k8s.test_chart import CHART, K8S_VERSIONS, NS, TINY, manifests, render, validate

MODEL_URI = "s3://coderforge/models/qwen2.5-coder-7b-instruct"
URL = f"http://cf-coderforge-vllm.{NS}.svc:8000"
VALUES = {"vllm": {
    "enabled": True, "model": {"uri": MODEL_URI, "sizeLimit": "40Gi"},
    "replicas": 3, "tensorParallelSize": 2, "maxModelLen": 8192, "dtype": "bfloat16",
    "gpuMemoryUtilization": 0.85, "servedModelName": "teacher", "extraArgs": ["--enable-prefix-caching"],
    "shmSize": "16Gi", "startupTimeoutSeconds": 2400,
    "nodeSelector": {"pool": "h100"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                    {"key": "dedicated", "operator": "Equal", "value": "inference", "effect": "NoSchedule"}],
    "resources": {"requests": {"cpu": "8", "memory": "64Gi"}, "limits": {"memory": "128Gi"}},
}}


def vllm_docs(docs: list[dict]) -> tuple[dict, dict]:
    (dep,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "cf-coderforge-vllm"]
    (svc,) = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "cf-coderforge-vllm"]
    return dep, svc


def flags(container: dict) -> dict[str, str]:
    out = {}
    for arg in container["args"]:
        key, _, value = arg.partition("=")
        out[key] = value
    return out


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    return manifests(VALUES)


def test_rendered_manifests_validate(rendered):
    dep, svc = vllm_docs(rendered)
    for d in rendered:
        validate(d)
    assert dep["metadata"]["namespace"] == svc["metadata"]["namespace"] == NS


def test_replicas_tensor_parallel_gpus_and_server_flags(rendered):
    dep, _ = vllm_docs(rendered)
    assert dep["spec"]["replicas"] == 3
    # a rolling update never asks for GPUs beyond replicas × tensor parallel
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "ghcr.io/coderforge/coderforge-vllm:0.1.0"
    # the command the step's local server manager runs (coderforge.generate.vllm_server)
    assert c["command"] == server_command("python", VLLMServerConfig(model="m"), 8000)[:3]
    f = flags(c)
    assert f["--tensor-parallel-size"] == "2"
    assert f["--max-model-len"] == "8192" and f["--dtype"] == "bfloat16"
    assert f["--gpu-memory-utilization"] == "0.85" and f["--served-model-name"] == "teacher"
    assert f["--model"] == "/models/model" and f["--port"] == "8000" and f["--host"] == "0.0.0.0"
    assert "--enable-prefix-caching" in c["args"]
    local = {a for a in server_command("python", VLLMServerConfig(model="m", tensor_parallel_size=2,
                                                                 gpu_memory_utilization=0.9), 1)
             if a.startswith("--")}
    assert set(f) - {"--enable-prefix-caching"} <= local  # the same flags as locally, nothing invented
    res = c["resources"]
    assert res["limits"]["nvidia.com/gpu"] == res["requests"]["nvidia.com/gpu"] == 2
    assert res["requests"]["cpu"] == "8" and res["requests"]["memory"] == "64Gi"
    assert res["limits"]["memory"] == "128Gi" and "cpu" not in res["limits"]


def test_probes_shm_placement_and_security_context(rendered):
    dep, _ = vllm_docs(rendered)
    spec = dep["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert c["ports"] == [{"name": "http", "containerPort": 8000}]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    start = c["startupProbe"]
    assert start["initialDelaySeconds"] + start["periodSeconds"] * start["failureThreshold"] >= 2400
    assert c["livenessProbe"]["timeoutSeconds"] >= 5
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    assert volumes["model"]["emptyDir"] == {"sizeLimit": "40Gi"}
    # read-only root filesystem: HOME, the caches and TMPDIR are writable emptyDirs
    env = {e["name"]: e.get("value") for e in c["env"]}
    for var in ("HOME", "XDG_CACHE_HOME", "TMPDIR"):
        assert any(env[var] == p or env[var].startswith(p + "/") for p in mounts if p != "/models"), var
    assert all("emptyDir" in v for v in spec["volumes"])
    assert next(m for m in c["volumeMounts"] if m["mountPath"] == "/models")["readOnly"] is True
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert spec["securityContext"] == values["podSecurityContext"]
    assert spec["securityContext"]["runAsUser"] == 10001
    for container in spec["containers"] + spec["initContainers"]:
        assert container["securityContext"] == values["containerSecurityContext"], container["name"]
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
    assert spec["nodeSelector"] == {"pool": "h100"}
    assert spec["tolerations"] == VALUES["vllm"]["tolerations"]


def test_service_selects_the_server_pods(rendered):
    dep, svc = vllm_docs(rendered)
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http"}]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert dep["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
    notes = render(VALUES)["coderforge/templates/NOTES.txt"]
    assert f'base_url: "{URL}"' in notes
    # the URL the notes print is one the recipe accepts as vllm.base_url
    assert load_recipe_text(TINY + f"vllm:\n  base_url: {URL}\n").vllm.base_url == URL


def _init_container(docs):
    dep, _ = vllm_docs(docs)
    (init,) = dep["spec"]["template"]["spec"]["initContainers"]
    return dep, init


@pytest.mark.parametrize("secret", ["", "team-s3"])
def test_init_container_downloads_with_credentials_from_the_secret(secret):
    values = dict(VALUES, credentials={"s3ExistingSecret": secret}) if secret else VALUES
    docs = manifests(values)
    dep, init = _init_container(docs)
    assert init["image"] == dep["spec"]["template"]["spec"]["containers"][0]["image"]
    assert init["command"] == ["python", "-c"] and init["args"][1:] == [MODEL_URI, "/models/model"]
    env = {e["name"]: e for e in init["env"]}
    secret_name = secret or "coderforge-s3"
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"] == {"secretKeyRef": {"name": secret_name, "key": "accessKey"}}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {"secretKeyRef": {"name": secret_name, "key": "secretKey"}}
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    assert (secret_name in secrets) == (not secret)
    if not secret:
        assert {"accessKey", "secretKey"} <= set(secrets[secret_name]["data"])
    # the endpoint (and region) come from the endpoints ConfigMap the chart renders
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "coderforge-endpoints"]
    for var in ("S3_ENDPOINT_URL", "AWS_REGION"):
        ref = env[var]["valueFrom"]["configMapKeyRef"]
        assert ref["name"] == "coderforge-endpoints" and ref["key"] in cm["data"]
    assert cm["data"]["S3_ENDPOINT_URL"] == f"http://cf-coderforge-minio.{NS}.svc:9000"
    # no credential appears as a literal anywhere in the pod
    pod_text = yaml.safe_dump(dep["spec"]["template"])
    for d in secrets.values():
        for value in d["data"].values():
            assert value not in pod_text
    for e in init["env"] + dep["spec"]["template"]["spec"]["containers"][0]["env"]:
        if any(k in e["name"] for k in ("SECRET", "ACCESS_KEY", "PASSWORD", "TOKEN")):
            assert "secretKeyRef" in e["valueFrom"], e
    mounts = {m["mountPath"]: m for m in init["volumeMounts"]}
    assert mounts["/models"]["name"] == "model" and not mounts["/models"].get("readOnly")
    assert init["resources"]["limits"]["memory"] and init["resources"]["requests"]["cpu"]


def _run_init(init: dict, uri: str, dest: Path, endpoint: str) -> subprocess.CompletedProcess:
    """The init container's program, with the environment the pod would get from the ConfigMap and Secret."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_", "MLFLOW_S3", "MINIO_"))}
    env.update(S3_ENDPOINT_URL=endpoint, AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", HOME=str(dest.parent))
    assert {e["name"] for e in init["env"]} == {"HOME", "S3_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID",
                                                 "AWS_SECRET_ACCESS_KEY"}
    cmd = [sys.executable, *init["command"][1:], init["args"][0], uri, str(dest)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def test_init_container_program_copies_a_model_directory_from_s3(s3_env, s3_server, tmp_path):
    files = {"config.json": b'{"model_type": "qwen2"}', "tokenizer.json": b"{}",
             "model-00001-of-00002.safetensors": os.urandom(3 * 1024 * 1024 + 17),
             "model-00002-of-00002.safetensors": os.urandom(1024), "sub/extra.txt": b"nested"}
    prefix = f"{s3_env}/models/teacher"
    for rel, data in files.items():
        storage.write_bytes(f"{prefix}/{rel}", data)
    storage.write_bytes(f"{s3_env}/models/teacher-other/config.json", b"{}")  # a sibling prefix is not copied
    values = {"vllm": dict(VALUES["vllm"], model={"uri": prefix + "/"})}
    _, init = _init_container(manifests(values))
    dest = tmp_path / "models" / "model"
    done = _run_init(init, init["args"][1], dest, s3_server)
    assert done.returncode == 0, done.stderr
    assert f"downloaded {len(files)} objects" in done.stdout
    got = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert got == files


def test_init_container_program_fails_clearly(s3_env, s3_server, tmp_path):
    _, init = _init_container(manifests(VALUES))
    done = _run_init(init, f"{s3_env}/models/absent", tmp_path / "m1", s3_server)
    assert done.returncode != 0 and f"no objects under {s3_env}/models/absent" in done.stderr
    storage.write_bytes(f"{s3_env}/models/notes/readme.md", b"not a model")
    done = _run_init(init, f"{s3_env}/models/notes", tmp_path / "m2", s3_server)
    assert done.returncode != 0 and "no config.json" in done.stderr


def test_disabled_renders_nothing_vllm():
    for values in ({}, {"vllm": {"enabled": False, "model": {"uri": MODEL_URI}}}):
        rendered = render(values)
        assert not rendered.get("coderforge/templates/vllm.yaml", "").strip()
        docs = manifests(values)
        assert not [d for d in docs if "vllm" in d["metadata"]["name"]
                    or d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "vllm"]
        assert "vllm" not in yaml.safe_dump_all(docs).lower()
        assert "vLLM" not in rendered["coderforge/templates/NOTES.txt"]


def test_chart_defaults_equal_the_recipe_defaults():
    v = yaml.safe_load((CHART / "values.yaml").read_text())["vllm"]
    d = VLLMSection()
    assert v["enabled"] is False
    assert (v["replicas"], v["tensorParallelSize"], v["maxModelLen"], v["dtype"], v["gpuMemoryUtilization"]) == (
        d.replicas, d.tensor_parallel_size, d.max_model_len, d.dtype, d.gpu_memory_utilization)


RECIPE = TINY + f"""synth:
  enabled: true
  teacher: s3://coderforge/models/teacher-from-recipe
vllm:
  base_url: {URL}
  tensor_parallel_size: 4
  replicas: 2
  max_model_len: 16384
  dtype: bfloat16
  gpu_memory_utilization: 0.92
"""


def test_settings_come_from_the_named_recipe():
    cfg = load_recipe_text(RECIPE)  # a real recipe
    values = {"recipes": {"synth": RECIPE}, "vllm": dict(VALUES["vllm"], recipe="synth")}
    dep, _ = vllm_docs(manifests(values))
    assert dep["spec"]["replicas"] == cfg.vllm.replicas == 2
    c = dep["spec"]["template"]["spec"]["containers"][0]
    f = flags(c)
    assert f["--tensor-parallel-size"] == str(cfg.vllm.tensor_parallel_size)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == cfg.vllm.tensor_parallel_size
    assert f["--max-model-len"] == "16384" and f["--dtype"] == "bfloat16" and f["--gpu-memory-utilization"] == "0.92"
    (init,) = dep["spec"]["template"]["spec"]["initContainers"]
    assert init["args"][1] == cfg.synth.teacher
    # keys the recipe leaves out fall back to the values
    partial = TINY + "vllm:\n  tensor_parallel_size: 8\n"
    dep, _ = vllm_docs(manifests({"recipes": {"p": partial}, "vllm": dict(VALUES["vllm"], recipe="p")}))
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert dep["spec"]["replicas"] == 3 and flags(c)["--tensor-parallel-size"] == "8"
    assert flags(c)["--max-model-len"] == "8192"
    assert dep["spec"]["template"]["spec"]["initContainers"][0]["args"][1] == MODEL_URI
    for d in manifests(values):
        validate(d, K8S_VERSIONS[-1:])


@pytest.mark.parametrize(("vllm", "message"), [
    ({"model": {"uri": ""}}, "needs vllm.model.uri"),
    ({"model": {"uri": "/data/models/teacher"}}, "must be an s3:// prefix"),
    ({"tensorParallelSize": 0}, "tensorParallelSize must be at least 1"),
    ({"replicas": -1}, "replicas must be at least 0"),
    ({"maxModelLen": 16}, "maxModelLen must be at least 64"),
    ({"dtype": "fp8"}, "vllm.dtype must be one of"),
    ({"gpuMemoryUtilization": 1.5}, r"gpuMemoryUtilization must be in \(0, 1\]"),
    ({"recipe": "missing"}, 'no recipe "missing"'),
])
def test_invalid_values_fail_rendering(vllm, message):
    with pytest.raises(helm.HelmError, match=message):
        render({"vllm": dict(VALUES["vllm"], **vllm)})


def test_lints_clean_with_vllm_enabled():
    result = helm.lint(str(CHART), values=VALUES, namespace=NS)
    assert not result["errors"]
    assert not [m for m in result["messages"] if m["severity"] >= 3], result
