"""The recipe, ``K8sSection`` and RayJob manifest the RayJob tests share (tests/k8s/test_rayjob*.py)."""

from __future__ import annotations

from coderforge.config import K8sSection
from coderforge.k8s.rayjob_manifest import build_rayjob

RECIPE = "run:\n  name: tiny\ndata:\n  sources:\n  - uri: ${stdlib}\n"

K8S = K8sSection.model_validate({
    "secrets": [{"name": "s3-creds", "keys": {"accessKey": "AWS_ACCESS_KEY_ID", "secretKey": "AWS_SECRET_ACCESS_KEY"}}],
    "rayjob": {
        "enabled": True, "workers": 3, "ttl_seconds_after_finished": 120, "active_deadline_seconds": 3600,
        "service_account": "coderforge-ray",
        "worker": {"cpu": "16", "memory": "120Gi", "gpu": 8, "node_selector": {"pool": "h100"},
                   "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
    },
})


def manifest(name="cf-pretrain-0123456789", ns="team-a", **kw):
    return build_rayjob(name=name, namespace=ns, step="pretrain", recipe_text=RECIPE, k8s=K8S,
                        module="coderforge.cli", args=["step", "pretrain", "--recipe", "{recipe}"],
                        image="registry.local/coderforge-train:abc", ray_version="2.60.0", **kw)
