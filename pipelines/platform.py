"""Kubernetes settings of a KFP task, from the recipe's ``k8s`` section (kfp-kubernetes).

``apply_platform(task, step, cfg.k8s)`` is called on every task when the pipeline is compiled. It
sets CPU/memory requests and limits, accelerators, node selectors, tolerations, the MinIO/MLflow
credentials as environment variables from Secrets, and the service endpoints from a ConfigMap.
The embedded runner (``kfp.local``) ignores all of it, so the same pipeline runs in both places.
"""

from __future__ import annotations

from kfp import kubernetes
from kfp.dsl import PipelineTask

from coderforge.config import K8sPlacement, K8sSection

# The RayJob launcher creates the RayJob in the pod's namespace and makes the pod its owner.
from coderforge.k8s.rayjob import POD_NAME_ENV, POD_NAMESPACE_ENV, POD_UID_ENV


def apply_placement(task: PipelineTask, placement: K8sPlacement) -> PipelineTask:
    task.set_cpu_request(placement.cpu)
    task.set_cpu_limit(placement.cpu_limit or placement.cpu)
    task.set_memory_request(placement.memory)
    task.set_memory_limit(placement.memory_limit or placement.memory)
    if placement.gpu:
        task.set_accelerator_type(placement.gpu_resource)
        task.set_accelerator_limit(placement.gpu)
    for key, value in sorted(placement.node_selector.items()):
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for tol in placement.tolerations:
        kubernetes.add_toleration(task, key=tol.key, operator=tol.operator, value=tol.value, effect=tol.effect)
    return task


def apply_platform(task: PipelineTask, step: str, k8s: K8sSection) -> PipelineTask:
    """Give ``task`` (the KFP task of recipe step ``step``) its cluster settings; returns it."""
    apply_placement(task, k8s.placement(step))
    for secret in k8s.secrets:
        kubernetes.use_secret_as_env(task, secret_name=secret.name, secret_key_to_env=dict(secret.keys),
                                     optional=secret.optional)
    if k8s.endpoints_config_map:
        # every key of the ConfigMap (S3_ENDPOINT_URL, MLFLOW_TRACKING_URI, ...) becomes an env var
        kubernetes.use_config_map_as_env(task, config_map_name=k8s.endpoints_config_map, config_map_key_to_env={
            key: key for key in ENDPOINT_KEYS}, optional=True)
    for env_name, field_path in ((POD_NAMESPACE_ENV, "metadata.namespace"), (POD_NAME_ENV, "metadata.name"),
                                 (POD_UID_ENV, "metadata.uid")):
        kubernetes.use_field_path_as_env(task, env_name=env_name, field_path=field_path)
    kubernetes.add_pod_label(task, label_key="app.kubernetes.io/part-of", label_value="coderforge")
    kubernetes.add_pod_label(task, label_key="coderforge.dev/step", label_value=step)
    return task


# Keys of the chart's endpoints ConfigMap (helm/coderforge/templates/endpoints-configmap.yaml).
ENDPOINT_KEYS = ("S3_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_TRACKING_URI", "AWS_REGION",
                 "CODERFORGE_ARTIFACT_ROOT")
