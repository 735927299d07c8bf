"""The ``ray.io/v1`` ``RayJob`` manifest of a heavy step (a plain dict, no I/O).

An ephemeral RayCluster (``shutdownAfterJobFinishes``, ``ttlSecondsAfterFinished``,
``activeDeadlineSeconds``) running the training image as a non-root user, the step's entrypoint,
credentials from Secrets, and an ownerReference to the pipeline step's pod when its name/uid are known
(so the Kubernetes garbage collector removes the RayJob if the pod is deleted before the step could
clean up). ``coderforge.k8s.rayjob`` creates, follows and deletes it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
from typing import Any

import yaml

from coderforge.config import K8sPlacement, K8sSection

GROUP, VERSION, PLURAL, KIND = "ray.io", "v1", "rayjobs", "RayJob"
RAY_UID = 10001  # the images' non-root user (images/*.Dockerfile)
RECIPE_ENV = "CODERFORGE_RECIPE_B64"
POD_NAMESPACE_ENV, POD_NAME_ENV, POD_UID_ENV = "CODERFORGE_POD_NAMESPACE", "CODERFORGE_POD_NAME", "CODERFORGE_POD_UID"


def rayjob_name(step: str, recipe_text: str, salt: str = "") -> str:
    """A DNS-1035 name short enough for the RayCluster/Service names KubeRay derives from it."""
    digest = hashlib.sha256(f"{recipe_text}\0{salt}".encode()).hexdigest()[:10]
    clean = "".join(c if c.isalnum() else "-" for c in step.lower()).strip("-")[:14] or "step"
    return f"cf-{clean}-{digest}"


def pod_owner_from_env() -> dict[str, str] | None:
    name, uid = os.environ.get(POD_NAME_ENV), os.environ.get(POD_UID_ENV)
    return {"name": name, "uid": uid} if name and uid else None


def _resources(p: K8sPlacement) -> dict[str, Any]:
    requests = {"cpu": p.cpu, "memory": p.memory}
    limits = {"cpu": p.cpu_limit or p.cpu, "memory": p.memory_limit or p.memory}
    if p.gpu:
        requests[p.gpu_resource] = str(p.gpu)
        limits[p.gpu_resource] = str(p.gpu)
    return {"requests": requests, "limits": limits}


def _env(k8s: K8sSection) -> tuple[list[dict], list[dict]]:
    env = [{"name": "RAY_USAGE_STATS_ENABLED", "value": "0"}]
    for secret in k8s.secrets:
        for key, var in sorted(secret.keys.items()):
            env.append({"name": var, "valueFrom": {"secretKeyRef": {
                "name": secret.name, "key": key, "optional": secret.optional}}})
    env_from = []
    if k8s.endpoints_config_map:
        env_from.append({"configMapRef": {"name": k8s.endpoints_config_map, "optional": True}})
    return env, env_from


def _pod_template(image: str, p: K8sPlacement, k8s: K8sSection, container: str, ports: list[dict],
                  labels: dict[str, str], service_account: str | None) -> dict[str, Any]:
    env, env_from = _env(k8s)
    c: dict[str, Any] = {
        "name": container,
        "image": image,
        "resources": _resources(p),
        "env": env,
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": RAY_UID, "runAsGroup": RAY_UID,
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
        },
        # Ray's object store lives in /dev/shm; the container default (64 MiB) is far too small.
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
    }
    if env_from:
        c["envFrom"] = env_from
    if ports:
        c["ports"] = ports
    spec: dict[str, Any] = {
        "containers": [c],
        "securityContext": {"runAsNonRoot": True, "runAsUser": RAY_UID, "runAsGroup": RAY_UID,
                            "fsGroup": RAY_UID, "seccompProfile": {"type": "RuntimeDefault"}},
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}],
    }
    if service_account:
        spec["serviceAccountName"] = service_account
    if p.node_selector:
        spec["nodeSelector"] = dict(p.node_selector)
    if p.tolerations:
        spec["tolerations"] = [t.model_dump(exclude_none=True) for t in p.tolerations]
    return {"metadata": {"labels": dict(labels)}, "spec": spec}


def build_rayjob(*, name: str, namespace: str, step: str, recipe_text: str, k8s: K8sSection,
                 module: str, args: list[str], image: str | None = None,
                 owner: dict[str, str] | None = None, ray_version: str | None = None) -> dict[str, Any]:
    """The RayJob that runs ``python -m coderforge.k8s.ray_entry <module> <args>`` on an ephemeral cluster.

    ``args`` may contain ``{recipe}``: ``ray_entry`` replaces it with the path of the recipe file it
    writes from ``CODERFORGE_RECIPE_B64`` (runtime env), so the recipe needs no volume.
    ``owner``: ``{"name", "uid"}`` of the pipeline pod, made the RayJob's owner (garbage collection).
    """
    from coderforge.k8s.images import image_for

    rj = k8s.rayjob
    image = image or k8s.images.train or image_for("train")
    if ray_version is None:
        from importlib import metadata

        ray_version = metadata.version("ray")
    labels = {"app.kubernetes.io/managed-by": "coderforge", "app.kubernetes.io/part-of": "coderforge",
              "coderforge.dev/step": step, "coderforge.dev/rayjob": name}
    entrypoint = shlex.join(["python", "-m", "coderforge.k8s.ray_entry", module, *args])
    runtime_env = {"env_vars": {RECIPE_ENV: base64.b64encode(recipe_text.encode()).decode(),
                                "RAY_USAGE_STATS_ENABLED": "0"}}
    head_ports = [{"containerPort": 6379, "name": "gcs"}, {"containerPort": 8265, "name": "dashboard"},
                  {"containerPort": 10001, "name": "client"}]
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if owner:
        metadata["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": owner["name"],
                                        "uid": owner["uid"], "blockOwnerDeletion": False}]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": metadata,
        "spec": {
            "entrypoint": entrypoint,
            "runtimeEnvYAML": yaml.safe_dump(runtime_env, sort_keys=True),
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": rj.ttl_seconds_after_finished,
            "activeDeadlineSeconds": rj.active_deadline_seconds,
            "backoffLimit": 0,
            "submissionMode": "K8sJobMode",
            "rayClusterSpec": {
                "rayVersion": ray_version,
                "headGroupSpec": {
                    "rayStartParams": {"dashboard-host": "0.0.0.0", "num-gpus": str(rj.head.gpu)},
                    "template": _pod_template(image, rj.head, k8s, "ray-head", head_ports, labels,
                                              rj.service_account),
                },
                "workerGroupSpecs": [{
                    "groupName": "workers",
                    "replicas": rj.workers, "minReplicas": rj.workers, "maxReplicas": rj.workers,
                    "rayStartParams": {},
                    "template": _pod_template(image, rj.worker, k8s, "ray-worker", [], labels,
                                              rj.service_account),
                }],
            },
        },
    }
