"""pipelines.platform.apply_platform: the compiled pipeline carries resources, GPUs, node selectors,
tolerations, secrets-as-env and the endpoints ConfigMap, per step as the recipe says."""

# no `from __future__ import annotations`: KFP reads the component annotations at decoration time

import yaml
from kfp import compiler, dsl

from coderforge.config import K8sSection, RecipeConfig
from pipelines.platform import POD_NAMESPACE_ENV, apply_platform


@dsl.component(base_image="python:3.11-slim")
def echo(text: str) -> str:
    return text


K8S = K8sSection.model_validate({
    "defaults": {"cpu": "500m", "memory": "2Gi"},
    "steps": {
        "pretrain": {
            "cpu": "8", "memory": "64Gi", "memory_limit": "80Gi", "gpu": 2,
            "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        }
    },
    "secrets": [
        {"name": "my-s3", "keys": {"ak": "AWS_ACCESS_KEY_ID", "sk": "AWS_SECRET_ACCESS_KEY"}},
        {"name": "my-mlflow", "keys": {"token": "MLFLOW_TRACKING_TOKEN"}, "optional": True},
    ],
})


def compile_two_steps(tmp_path, k8s=K8S):
    @dsl.pipeline(name="platform-test")
    def pipe(recipe: str = "x"):
        ingest = apply_platform(echo(text=recipe), "ingest", k8s)
        ingest.set_display_name("ingest")
        apply_platform(echo(text=ingest.output), "pretrain", k8s).set_display_name("pretrain")

    out = tmp_path / "p.yaml"
    compiler.Compiler().compile(pipe, str(out))
    spec, platform = yaml.safe_load_all(out.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_resources_and_gpus(tmp_path):
    spec, _ = compile_two_steps(tmp_path)
    ex = spec["deploymentSpec"]["executors"]
    ingest, pretrain = ex["exec-echo"]["container"]["resources"], ex["exec-echo-2"]["container"]["resources"]
    assert ingest["resourceCpuRequest"] == "500m" and ingest["resourceCpuLimit"] == "500m"
    assert ingest["resourceMemoryRequest"] == "2Gi" and "accelerator" not in ingest
    assert pretrain["resourceMemoryRequest"] == "64Gi" and pretrain["resourceMemoryLimit"] == "80Gi"
    assert pretrain["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert pretrain["accelerator"]["resourceCount"] == "2"


def test_secrets_configmap_selectors_tolerations(tmp_path):
    _, k8s = compile_two_steps(tmp_path)
    for name in ("exec-echo", "exec-echo-2"):
        ex = k8s[name]
        secrets = {s["secretName"]: s for s in ex["secretAsEnv"]}
        assert set(secrets) == {"my-s3", "my-mlflow"}
        assert {k["secretKey"]: k["envVar"] for k in secrets["my-s3"]["keyToEnv"]} == {
            "ak": "AWS_ACCESS_KEY_ID", "sk": "AWS_SECRET_ACCESS_KEY"}
        assert secrets["my-s3"]["optional"] is False and secrets["my-mlflow"]["optional"] is True
        assert ex["configMapAsEnv"][0]["configMapName"] == "coderforge-endpoints"
        assert {"fieldPath": "metadata.namespace", "name": POD_NAMESPACE_ENV} in ex["fieldPathAsEnv"]
    assert "nodeSelector" not in k8s["exec-echo"] and "tolerations" not in k8s["exec-echo"]
    assert k8s["exec-echo-2"]["nodeSelector"]["labels"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert k8s["exec-echo-2"]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists",
                                                  "effect": "NoSchedule"}]
    assert k8s["exec-echo-2"]["podMetadata"]["labels"]["coderforge.dev/step"] == "pretrain"


def test_no_secret_values_in_compiled_pipeline(tmp_path):
    """Only secret *names* and keys travel in the pipeline; the default recipe names the chart's Secrets."""
    cfg = RecipeConfig.model_validate({"data": {"sources": [{"uri": "x"}]}})
    _, k8s = compile_two_steps(tmp_path, cfg.k8s)
    names = {s["secretName"] for s in k8s["exec-echo"]["secretAsEnv"]}
    assert names == {"coderforge-s3", "coderforge-mlflow"}
    text = (tmp_path / "p.yaml").read_text()
    assert "AWS_SECRET_ACCESS_KEY" in text and "password:" not in text.lower()


def test_recipe_without_k8s_section_loads_with_defaults():
    cfg = RecipeConfig.model_validate({"data": {"sources": [{"uri": "x"}]}})
    assert cfg.k8s.rayjob.enabled is False
    assert cfg.k8s.placement("anything") == cfg.k8s.defaults
