"""The RayJob manifest: an ephemeral cluster that tears itself down, the image, resources and placement,
non-root pods that validate against the Kubernetes schema, credentials by Secret reference only, and
short stable names."""

from __future__ import annotations

import base64
import shlex

import kubernetes_validate
import pytest
import yaml

from coderforge.k8s import rayjob_manifest as rjm
from tests.k8s.rayjob_fixtures import RECIPE, manifest

K8S_VERSIONS = ("1.29.0", "1.33.0")


def test_manifest_teardown_image_resources():
    m = manifest(owner={"name": "pretrain-pod-xyz", "uid": "1234-abcd"})
    assert m["apiVersion"] == "ray.io/v1" and m["kind"] == "RayJob"
    spec = m["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] == 120 and spec["activeDeadlineSeconds"] == 3600
    assert spec["backoffLimit"] == 0 and spec["submissionMode"] == "K8sJobMode"
    assert shlex.split(spec["entrypoint"]) == ["python", "-m", "coderforge.k8s.ray_entry", "coderforge.cli",
                                                "step", "pretrain", "--recipe", "{recipe}"]
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == "2.60.0"
    head = cluster["headGroupSpec"]["template"]["spec"]
    (group,) = cluster["workerGroupSpecs"]
    worker = group["template"]["spec"]
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 3
    for pod in (head, worker):
        (c,) = pod["containers"]
        assert c["image"] == "registry.local/coderforge-train:abc"
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert pod["serviceAccountName"] == "coderforge-ray"
        env = {e["name"]: e for e in c["env"]}
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": "s3-creds", "key": "secretKey", "optional": False}
        assert c["envFrom"] == [{"configMapRef": {"name": "coderforge-endpoints", "optional": True}}]
        assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
    wres = worker["containers"][0]["resources"]
    assert wres["requests"] == {"cpu": "16", "memory": "120Gi", "nvidia.com/gpu": "8"}
    assert wres["limits"]["nvidia.com/gpu"] == "8"
    assert worker["nodeSelector"] == {"pool": "h100"}
    assert worker["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert head["containers"][0]["resources"]["requests"] == {"cpu": "2", "memory": "8Gi"}
    assert m["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "Pod", "name": "pretrain-pod-xyz",
                                                 "uid": "1234-abcd", "blockOwnerDeletion": False}]
    assert m["metadata"]["labels"]["coderforge.dev/step"] == "pretrain"


def test_recipe_travels_in_runtime_env_and_no_secret_values():
    m = manifest()
    env_vars = yaml.safe_load(m["spec"]["runtimeEnvYAML"])["env_vars"]
    assert base64.b64decode(env_vars[rjm.RECIPE_ENV]).decode() == RECIPE
    text = yaml.safe_dump(m)
    # credentials are referenced by Secret name and key only
    assert "secretKeyRef" in text and "value: testing" not in text


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_pod_templates_validate_against_kubernetes_schema(version):
    m = manifest(owner={"name": "p", "uid": "u"})
    cluster = m["spec"]["rayClusterSpec"]
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for i, template in enumerate(templates):
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate",
                                      "metadata": {"name": f"t{i}", "namespace": "team-a"},
                                      "template": template}, version, strict=True)
    # the RayJob's own metadata is ordinary ObjectMeta: validate it on a ConfigMap carrier
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": m["metadata"]},
                                 version, strict=True)


def test_rayjob_names_are_short_dns_labels_and_stable():
    a = rjm.rayjob_name("pretrain", RECIPE, "pod-1")
    assert a == rjm.rayjob_name("pretrain", RECIPE, "pod-1")
    assert a != rjm.rayjob_name("pretrain", RECIPE, "pod-2") != rjm.rayjob_name("pretrain", RECIPE + "x", "pod-1")
    long = rjm.rayjob_name("Stage_2 Long-Context YaRN extension", RECIPE)
    for n in (a, long):
        assert len(n) <= 30 and n[0].isalpha() and all(c.islower() or c.isdigit() or c == "-" for c in n)
