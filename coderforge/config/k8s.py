"""Recipe sections for Kubernetes: placement, secrets, images and KubeRay RayJobs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from coderforge.config.base import Section


class K8sToleration(Section):
    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class K8sPlacement(Section):
    """Requests/limits and scheduling of one pod (a KFP step, or a Ray head/worker). Quantities use
    Kubernetes notation ("500m", "4Gi"); limits default to the requests."""

    cpu: str = "1"
    memory: str = "4Gi"
    cpu_limit: str | None = None
    memory_limit: str | None = None
    gpu: int = Field(0, ge=0)
    gpu_resource: str = Field("nvidia.com/gpu", description="extended resource name of the accelerator")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[K8sToleration] = Field(default_factory=list)


class K8sSecretEnv(Section):
    """A Kubernetes Secret exposed to a pod as environment variables (secret key -> env var)."""

    name: str
    keys: dict[str, str] = Field(..., min_length=1)
    optional: bool = False


class K8sImages(Section):
    """Image overrides; empty means ``coderforge.k8s.images.image_for(kind)``."""

    data: str | None = None
    train: str | None = None
    vllm: str | None = None


class RayJobSection(Section):
    """KubeRay RayJob launched by heavy steps (pretrain) when ``enabled``; else local Ray."""

    enabled: bool = False
    steps: list[str] = Field(default_factory=lambda: ["pretrain", "pretrain_repo"])
    namespace: str | None = Field(None, description="default: the pipeline pod's own namespace")
    service_account: str | None = Field(None, description="service account of the Ray pods")
    head: K8sPlacement = Field(default_factory=lambda: K8sPlacement(cpu="2", memory="8Gi"))
    worker: K8sPlacement = Field(default_factory=lambda: K8sPlacement(cpu="8", memory="64Gi", gpu=1))
    workers: int = Field(1, ge=1, description="worker replicas")
    ttl_seconds_after_finished: int = Field(300, ge=0)
    active_deadline_seconds: int = Field(7 * 24 * 3600, ge=60, description="KubeRay-side hard limit")
    start_timeout_s: float = Field(1800.0, gt=0, description="cluster must be running within this")
    run_timeout_s: float = Field(7 * 24 * 3600.0, gt=0, description="job must finish within this")
    poll_interval_s: float = Field(10.0, gt=0)
    delete_timeout_s: float = Field(300.0, gt=0)


class K8sSection(Section):
    """How the compiled pipeline runs on a cluster (ignored by the embedded default)."""

    images: K8sImages = Field(default_factory=K8sImages)
    defaults: K8sPlacement = Field(default_factory=K8sPlacement)
    steps: dict[str, K8sPlacement] = Field(default_factory=dict, description="per-step placement")
    secrets: list[K8sSecretEnv] = Field(
        default_factory=lambda: [
            K8sSecretEnv(name="coderforge-s3",
                         keys={"accessKey": "AWS_ACCESS_KEY_ID", "secretKey": "AWS_SECRET_ACCESS_KEY"}),
            K8sSecretEnv(name="coderforge-mlflow", optional=True,
                         keys={"username": "MLFLOW_TRACKING_USERNAME", "password": "MLFLOW_TRACKING_PASSWORD"}),
        ]
    )
    endpoints_config_map: str | None = Field(
        "coderforge-endpoints", description="ConfigMap whose keys become env vars (S3_ENDPOINT_URL, ...)")
    rayjob: RayJobSection = Field(default_factory=RayJobSection)

    def placement(self, step: str) -> K8sPlacement:
        return self.steps.get(step, self.defaults)


