"""Heavy steps on a KubeRay ``RayJob``: build the manifest, create it, follow it, always delete it.

Three layers, each testable on its own:

* ``build_rayjob(...)`` → the ``ray.io/v1`` ``RayJob`` manifest (a dict): an ephemeral RayCluster
  (``shutdownAfterJobFinishes``, ``ttlSecondsAfterFinished``, ``activeDeadlineSeconds``) running the
  training image as a non-root user, the step's entrypoint, credentials from Secrets.
* ``RayJobFollower`` → a plain state machine over RayJob ``status`` objects. It is fed what the API
  server returns (or "gone", or "cancelled", or the clock) and answers with one action: keep waiting,
  delete the RayJob (with the outcome and reason), or done. Every path out of it passes through a
  delete, so no cluster is leaked whatever happens.
* ``follow_rayjob(api, ...)`` / ``run_step_on_rayjob(...)`` → the I/O loop over a ``RayJobApi``
  (``KubeRayApi``: the ``kubernetes`` client's CustomObjectsApi/CoreV1Api), streaming the submitter
  pod's log (``ray job submit`` tails the Ray job's driver log), deleting on success, failure,
  timeout, exceptions, and SIGTERM (what Argo sends when a pipeline run is cancelled). The RayJob also
  carries an ownerReference to the pipeline step's pod when the pod's name/uid are known, so the
  Kubernetes garbage collector removes it if the pod is deleted before the step could clean up.

KubeRay status values (ray-operator/apis/ray/v1/rayjob_types.go): ``jobStatus`` ∈ {"" (new),
PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED}; ``jobDeploymentStatus`` ∈ {"" (new), Initializing,
Running, Complete, Failed, ValidationFailed, Suspending, Suspended, Retrying, Waiting}; ``reason`` ∈
{SubmissionFailed, DeadlineExceeded, AppFailed, JobDeploymentStatusTransitionGracePeriodExceeded,
ValidationFailed}.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

import yaml

from coderforge.config import K8sPlacement, K8sSection

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL, KIND = "ray.io", "v1", "rayjobs", "RayJob"
CANCEL_DELETE_WAIT_S = 20.0
LOG_WINDOW_S = 300
RAY_UID = 10001  # the images' non-root user (images/*.Dockerfile)
RECIPE_ENV = "CODERFORGE_RECIPE_B64"
POD_NAMESPACE_ENV, POD_NAME_ENV, POD_UID_ENV = "CODERFORGE_POD_NAMESPACE", "CODERFORGE_POD_NAME", "CODERFORGE_POD_UID"

JOB_TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
DEPLOYMENT_TERMINAL = {"Complete", "Failed", "ValidationFailed"}
DEPLOYMENT_STARTING = {"", "Initializing", "Waiting", "Retrying", "Suspending", "Suspended"}


# ----------------------------------------------------------------------------------------------------
# manifest


def rayjob_name(step: str, recipe_text: str, salt: str = "") -> str:
    """A DNS-1035 name short enough for the RayCluster/Service names KubeRay derives from it."""
    digest = hashlib.sha256(f"{recipe_text}\0{salt}".encode()).hexdigest()[:10]
    clean = "".join(c if c.isalnum() else "-" for c in step.lower()).strip("-")[:14] or "step"
    return f"cf-{clean}-{digest}"


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


# ----------------------------------------------------------------------------------------------------
# status state machine


@dataclass(frozen=True)
class RayJobStatus:
    job_status: str = ""
    deployment_status: str = ""
    reason: str = ""
    message: str = ""
    cluster: str = ""
    job_id: str = ""

    @classmethod
    def of(cls, obj: dict[str, Any] | None) -> RayJobStatus:
        st = (obj or {}).get("status") or {}
        return cls(job_status=st.get("jobStatus") or "", deployment_status=st.get("jobDeploymentStatus") or "",
                   reason=st.get("reason") or "", message=st.get("message") or "",
                   cluster=st.get("rayClusterName") or "", job_id=st.get("jobId") or "")

    def describe(self) -> str:
        parts = [f"jobStatus={self.job_status or 'NEW'}", f"jobDeploymentStatus={self.deployment_status or 'New'}"]
        if self.reason:
            parts.append(f"reason={self.reason}")
        if self.message:
            parts.append(f"message={self.message}")
        return " ".join(parts)


class Outcome(str, Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    VANISHED = "vanished"  # deleted by someone else before it finished
    ERROR = "error"  # the follower itself failed (API error, exception)


class Phase(str, Enum):
    SUBMITTED = "submitted"  # created, cluster not up yet
    RUNNING = "running"  # the Ray job is running
    DELETING = "deleting"  # outcome decided, waiting for the RayJob to disappear
    DONE = "done"


@dataclass(frozen=True)
class Action:
    kind: str  # "wait" | "delete" | "done"
    outcome: Outcome | None = None
    reason: str = ""


WAIT = Action("wait")


@dataclass
class RayJobFollower:
    """Decides, from successive observations, what to do with one RayJob. No I/O, no clock of its own."""

    start_timeout_s: float
    run_timeout_s: float
    created_at: float
    phase: Phase = Phase.SUBMITTED
    running_since: float | None = None
    outcome: Outcome | None = None
    reason: str = ""
    last: RayJobStatus = field(default_factory=RayJobStatus)
    history: list[tuple[str, str]] = field(default_factory=list)  # (jobStatus, jobDeploymentStatus) changes

    def _decide(self, outcome: Outcome, reason: str) -> Action:
        if self.phase in (Phase.DELETING, Phase.DONE):  # the first decision stands
            return Action("delete" if self.phase is Phase.DELETING else "done", self.outcome, self.reason)
        self.phase, self.outcome, self.reason = Phase.DELETING, outcome, reason
        return Action("delete", outcome, reason)

    def observe(self, obj: dict[str, Any] | None, now: float) -> Action:
        """Feed the RayJob object as read from the API server (``None``: it does not exist)."""
        if self.phase is Phase.DONE:
            return Action("done", self.outcome, self.reason)
        if obj is None:
            if self.phase is Phase.DELETING:
                self.phase = Phase.DONE
                return Action("done", self.outcome, self.reason)
            self.phase, self.outcome = Phase.DONE, Outcome.VANISHED
            self.reason = "RayJob disappeared before finishing (deleted by someone else, or its TTL)"
            return Action("done", self.outcome, self.reason)
        st = RayJobStatus.of(obj)
        if (st.job_status, st.deployment_status) != (self.last.job_status, self.last.deployment_status) \
                or not self.history:
            self.history.append((st.job_status, st.deployment_status))
        self.last = st
        if self.phase is Phase.DELETING:
            return Action("delete", self.outcome, self.reason)  # still there: delete again

        js, ds = st.job_status, st.deployment_status
        if js == "SUCCEEDED":
            return self._decide(Outcome.SUCCEEDED, st.message or "Ray job succeeded")
        if js == "FAILED" or ds in ("Failed", "ValidationFailed"):
            return self._decide(Outcome.FAILED, self._failure_reason(st))
        if js == "STOPPED":
            return self._decide(Outcome.STOPPED, st.message or "Ray job was stopped")
        if ds == "Complete":  # terminal deployment without a terminal job status: trust the deployment
            return self._decide(Outcome.SUCCEEDED, st.message or "RayJob complete")
        if js == "RUNNING" or ds == "Running":
            if self.phase is Phase.SUBMITTED:
                self.phase, self.running_since = Phase.RUNNING, now
        return self.tick(now)

    def tick(self, now: float) -> Action:
        """The clock moved without a new observation: enforce the start and run timeouts."""
        if self.phase is Phase.SUBMITTED and now - self.created_at > self.start_timeout_s:
            return self._decide(Outcome.TIMED_OUT, f"the Ray cluster did not start within {self.start_timeout_s:g}s "
                                                   f"(last status: {self.last.describe()})")
        if self.phase is Phase.RUNNING and self.running_since is not None \
                and now - self.running_since > self.run_timeout_s:
            return self._decide(Outcome.TIMED_OUT, f"the Ray job ran longer than {self.run_timeout_s:g}s")
        if self.phase is Phase.DELETING:
            return Action("delete", self.outcome, self.reason)
        if self.phase is Phase.DONE:
            return Action("done", self.outcome, self.reason)
        return WAIT

    def cancel(self, why: str = "pipeline run cancelled") -> Action:
        return self._decide(Outcome.CANCELLED, why)

    def error(self, exc: BaseException) -> Action:
        return self._decide(Outcome.ERROR, f"{type(exc).__name__}: {exc}")

    @staticmethod
    def _failure_reason(st: RayJobStatus) -> str:
        what = {
            "AppFailed": "the Ray job's entrypoint failed",
            "SubmissionFailed": "the job could not be submitted to the Ray cluster",
            "DeadlineExceeded": "activeDeadlineSeconds exceeded",
            "JobDeploymentStatusTransitionGracePeriodExceeded": "the job finished but KubeRay could not settle its status",
            "ValidationFailed": "KubeRay rejected the RayJob spec",
        }.get(st.reason, "the RayJob failed")
        return f"{what}: {st.describe()}"


# ----------------------------------------------------------------------------------------------------
# I/O


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


class RayJobError(RuntimeError):
    def __init__(self, result: RayJobResult):
        super().__init__(f"RayJob {result.namespace}/{result.name} {result.outcome.value}: {result.reason}")
        self.result = result


@dataclass
class RayJobResult:
    name: str
    namespace: str
    outcome: Outcome
    reason: str
    deleted: bool
    history: list[tuple[str, str]]
    log_lines: int


def follow_rayjob(api: RayJobApi, manifest: dict[str, Any], *, start_timeout_s: float, run_timeout_s: float,
                  poll_interval_s: float, delete_timeout_s: float, cancel: threading.Event | None = None,
                  clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], Any] | None = None,
                  emit: Callable[[str], None] | None = None) -> RayJobResult:
    """Create the RayJob, follow it to an outcome, delete it, and return the result (never raises for
    the job's own failure; raises only if the RayJob could not be created)."""
    cancel = cancel or threading.Event()
    if sleep is None:
        def sleep(seconds: float) -> None:  # wakes up at once on cancellation; plain sleep afterwards
            if cancel.is_set():
                time.sleep(seconds)
            else:
                cancel.wait(seconds)
    emit = emit or (lambda line: print(line, file=sys.stderr, flush=True))
    ns, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    existing = api.get(ns, name)
    if existing is not None:  # a leftover from an earlier attempt of this very step: start clean
        emit(f"[rayjob] {ns}/{name} already exists ({RayJobStatus.of(existing).describe()}); deleting it first")
        _delete_and_wait(api, ns, name, delete_timeout_s, clock, sleep)
    api.create(manifest)
    emit(f"[rayjob] created {ns}/{name}")
    fsm = RayJobFollower(start_timeout_s=start_timeout_s, run_timeout_s=run_timeout_s, created_at=clock())
    log_ts: str | None = None
    n_lines = 0
    deleted = False
    try:
        action = WAIT
        while action.kind != "done":
            if cancel.is_set():
                action = fsm.cancel()
            else:
                try:
                    obj = api.get(ns, name)
                except Exception as exc:  # noqa: BLE001 - API trouble: give up and clean up
                    action = fsm.error(exc)
                else:
                    before = fsm.last
                    action = fsm.observe(obj, clock())
                    if fsm.last != before:
                        emit(f"[rayjob] {name}: {fsm.last.describe()}")
                try:
                    lines = api.submitter_log(ns, name, log_ts)
                except Exception as exc:  # noqa: BLE001 - logs are best effort
                    log.debug("log read failed: %s", exc)
                    lines = []
                for line in lines:
                    emit(line.split(" ", 1)[1] if " " in line else line)
                    log_ts = line.split(" ", 1)[0]
                    n_lines += 1
            if action.kind == "delete":
                emit(f"[rayjob] {name}: {action.outcome.value}: {action.reason}; deleting")
                # on SIGTERM the kubelet kills us after the grace period (30 s by default): the delete
                # request is what matters, waiting for it to finish is best effort
                budget = min(delete_timeout_s, CANCEL_DELETE_WAIT_S) if action.outcome is Outcome.CANCELLED \
                    else delete_timeout_s
                deleted = _delete_and_wait(api, ns, name, budget, clock, sleep)
                if not deleted:
                    emit(f"[rayjob] {name}: delete requested, still present after {budget:g}s")
                    break
                action = fsm.observe(None, clock())
            elif action.kind == "wait":
                sleep(poll_interval_s)
    finally:
        if not deleted and fsm.outcome is not Outcome.VANISHED:  # an exception escaped the loop: clean up
            try:
                deleted = _delete_and_wait(api, ns, name, delete_timeout_s, clock, sleep)
            except Exception as exc:  # noqa: BLE001
                emit(f"[rayjob] could not delete {ns}/{name}: {exc}")
    if fsm.outcome is Outcome.VANISHED:
        deleted = True
    return RayJobResult(name=name, namespace=ns, outcome=fsm.outcome or Outcome.ERROR, reason=fsm.reason,
                        deleted=deleted, history=list(fsm.history), log_lines=n_lines)


def _delete_and_wait(api: RayJobApi, ns: str, name: str, timeout_s: float, clock, sleep) -> bool:
    deadline = clock() + timeout_s
    api.delete(ns, name)
    while api.get(ns, name) is not None:
        if clock() > deadline:
            return False
        sleep(min(2.0, max(0.01, timeout_s / 50)))
        api.delete(ns, name)  # idempotent; re-issued in case the first one raced a re-creation
    return True


@contextmanager
def cancel_on_signals(signals=(signal.SIGTERM, signal.SIGINT)) -> Iterator[threading.Event]:
    """An Event set when the process receives SIGTERM/SIGINT (main thread only; elsewhere a plain Event)."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    previous = {s: signal.getsignal(s) for s in signals}

    def handler(signum, frame):
        event.set()

    for s in signals:
        signal.signal(s, handler)
    try:
        yield event
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def pod_owner_from_env() -> dict[str, str] | None:
    name, uid = os.environ.get(POD_NAME_ENV), os.environ.get(POD_UID_ENV)
    return {"name": name, "uid": uid} if name and uid else None


def run_step_on_rayjob(step: str, recipe_text: str, k8s: K8sSection, *, module: str, args: list[str],
                       namespace: str | None = None, api: RayJobApi | None = None, salt: str = "",
                       image: str | None = None, emit: Callable[[str], None] | None = None) -> RayJobResult:
    """Run ``python -m <module> <args>`` for ``step`` on an ephemeral KubeRay cluster and wait for it.

    Called from a KFP component when ``k8s.rayjob.enabled``. Raises ``RayJobError`` unless the Ray job
    succeeded; in every case the RayJob (and so its RayCluster) has been deleted before this returns.
    """
    rj = k8s.rayjob
    namespace = namespace or rj.namespace or os.environ.get(POD_NAMESPACE_ENV) or "default"
    name = rayjob_name(step, recipe_text, salt or os.environ.get(POD_NAME_ENV, ""))
    manifest = build_rayjob(name=name, namespace=namespace, step=step, recipe_text=recipe_text, k8s=k8s,
                            module=module, args=args, image=image, owner=pod_owner_from_env())
    api = api or KubeRayApi()
    with cancel_on_signals() as cancelled:
        result = follow_rayjob(api, manifest, start_timeout_s=rj.start_timeout_s, run_timeout_s=rj.run_timeout_s,
                               poll_interval_s=rj.poll_interval_s, delete_timeout_s=rj.delete_timeout_s,
                               cancel=cancelled, emit=emit)
    if result.outcome is not Outcome.SUCCEEDED:
        raise RayJobError(result)
    return result
