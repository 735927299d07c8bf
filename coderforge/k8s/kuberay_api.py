"""The Kubernetes API calls RayJob management needs: the ``RayJobApi`` protocol and ``KubeRayApi``, its
implementation over the official ``kubernetes`` client (CustomObjectsApi for RayJobs, CoreV1Api for the
submitter pod's log), plus the RFC3339 timestamp handling that de-duplicates re-read log lines.
"""

from __future__ import annotations

from typing import Any, Protocol

from coderforge.k8s.rayjob_manifest import GROUP, PLURAL, VERSION

LOG_WINDOW_S = 300


class RayJobApi(Protocol):
    def create(self, manifest: dict[str, Any]) -> dict[str, Any]: ...
    def get(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def delete(self, namespace: str, name: str) -> None: ...
    def submitter_log(self, namespace: str, name: str, since_ts: str | None) -> list[str]: ...


# The Kubernetes permissions KubeRayApi needs, as (apiGroup, resource, verbs): the chart's Role grants
# exactly these (helm/coderforge/templates/rbac.yaml; tests/k8s/test_chart.py compares them).
RBAC_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("ray.io", "rayjobs", ("create", "delete", "get")),
    ("", "pods", ("list",)),
    ("", "pods/log", ("get",)),
)


class KubeRayApi:
    """``RayJobApi`` over the official ``kubernetes`` client (in-cluster config, else kubeconfig)."""

    def __init__(self, api_client=None):
        from kubernetes import client, config

        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            api_client = client.ApiClient()
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self._client = client

    def create(self, manifest):
        ns = manifest["metadata"]["namespace"]
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, manifest)

    def get(self, namespace, name):
        from kubernetes.client.exceptions import ApiException

        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def delete(self, namespace, name):
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name,
                body=self._client.V1DeleteOptions(propagation_policy="Foreground"))
        except ApiException as exc:
            if exc.status != 404:
                raise

    def submitter_log(self, namespace, name, since_ts):
        """Log lines (with RFC3339 timestamps) of the K8sJobMode submitter pod (Job ``name``) after ``since_ts``."""
        from kubernetes.client.exceptions import ApiException

        pods = self.core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items
        if not pods:
            return []
        pod = sorted(pods, key=lambda p: p.metadata.creation_timestamp or 0)[-1]
        try:
            # after the first read only recent lines are fetched, then de-duplicated by timestamp
            kw = {"since_seconds": LOG_WINDOW_S} if since_ts else {}
            text = self.core.read_namespaced_pod_log(pod.metadata.name, namespace, timestamps=True, **kw)
        except ApiException as exc:
            if exc.status in (400, 404):  # container not started yet / pod gone
                return []
            raise
        return new_log_lines(text, since_ts)


def timestamp_key(ts: str) -> tuple[str, int]:
    """Sort key of an RFC3339Nano timestamp as the kubelet writes it. Its fraction has a variable number
    of digits ("…:02Z", "…:02.5Z", "…:02.000001Z"), so the text itself does not sort."""
    ts = ts.rstrip("Z")
    for sep in ("+", "-"):
        head, _, tail = ts.rpartition(sep)
        if sep in ts[10:] and ":" in tail:  # a numeric offset; the kubelet writes UTC ("Z")
            ts = head
            break
    whole, _, frac = ts.partition(".")
    return whole, int((frac + "000000000")[:9]) if frac.isdigit() else 0


def new_log_lines(text: str, since_ts: str | None) -> list[str]:
    """Lines of a ``timestamps=True`` log strictly after ``since_ts``."""
    since = timestamp_key(since_ts) if since_ts else None
    out = []
    for line in text.splitlines():
        if since is None or timestamp_key(line.split(" ", 1)[0]) > since:
            out.append(line)
    return out
