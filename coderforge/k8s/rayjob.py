"""Heavy steps on a KubeRay ``RayJob``: build the manifest, create it, follow it, always delete it.

Three layers, each testable on its own:

* ``build_rayjob(...)`` (``coderforge.k8s.rayjob_manifest``) → the ``ray.io/v1`` ``RayJob`` manifest
  (a dict): an ephemeral RayCluster (``shutdownAfterJobFinishes``, ``ttlSecondsAfterFinished``,
  ``activeDeadlineSeconds``) running the training image as a non-root user, the step's entrypoint,
  credentials from Secrets.
* ``RayJobFollower`` (``coderforge.k8s.rayjob_status``) → a plain state machine over RayJob ``status``
  objects. It is fed what the API server returns (or "gone", or "cancelled", or the clock) and answers
  with one action: keep waiting, delete the RayJob (with the outcome and reason), or done. Every path
  out of it passes through a delete, so no cluster is leaked whatever happens.
* ``follow_rayjob(api, ...)`` / ``run_step_on_rayjob(...)`` (here) → the I/O loop over a ``RayJobApi``
  (``KubeRayApi`` in ``coderforge.k8s.kuberay_api``: the ``kubernetes`` client's
  CustomObjectsApi/CoreV1Api), streaming the submitter pod's log (``ray job submit`` tails the Ray
  job's driver log), deleting on success, failure, timeout, exceptions, and SIGTERM (what Argo sends
  when a pipeline run is cancelled). The RayJob also carries an ownerReference to the pipeline step's
  pod when the pod's name/uid are known, so the Kubernetes garbage collector removes it if the pod is
  deleted before the step could clean up.

The names of the other two layers are importable from here as well.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from coderforge.config import K8sSection
from coderforge.k8s.kuberay_api import LOG_WINDOW_S, RBAC_RULES, KubeRayApi, RayJobApi, new_log_lines, timestamp_key
from coderforge.k8s.rayjob_manifest import (
    GROUP,
    KIND,
    PLURAL,
    POD_NAME_ENV,
    POD_NAMESPACE_ENV,
    POD_UID_ENV,
    RAY_UID,
    RECIPE_ENV,
    VERSION,
    build_rayjob,
    pod_owner_from_env,
    rayjob_name,
)
from coderforge.k8s.rayjob_status import (
    DEPLOYMENT_STARTING,
    DEPLOYMENT_TERMINAL,
    JOB_TERMINAL,
    WAIT,
    Action,
    Outcome,
    Phase,
    RayJobFollower,
    RayJobStatus,
)

__all__ = [
    "CANCEL_DELETE_WAIT_S", "DEPLOYMENT_STARTING", "DEPLOYMENT_TERMINAL", "GROUP", "JOB_TERMINAL", "KIND",
    "LOG_WINDOW_S", "PLURAL", "POD_NAMESPACE_ENV", "POD_NAME_ENV", "POD_UID_ENV", "RAY_UID", "RBAC_RULES",
    "RECIPE_ENV", "VERSION", "WAIT", "Action", "KubeRayApi", "Outcome", "Phase", "RayJobApi", "RayJobError",
    "RayJobFollower", "RayJobResult", "RayJobStatus", "build_rayjob", "cancel_on_signals", "follow_rayjob",
    "new_log_lines", "pod_owner_from_env", "rayjob_name", "run_step_on_rayjob", "timestamp_key",
]

log = logging.getLogger(__name__)

CANCEL_DELETE_WAIT_S = 20.0


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


def _cancellable_sleep(cancel: threading.Event) -> Callable[[float], None]:
    def sleep(seconds: float) -> None:  # wakes up at once on cancellation; plain sleep afterwards
        if cancel.is_set():
            time.sleep(seconds)
        else:
            cancel.wait(seconds)

    return sleep


def _emit_to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class _Follow:
    """The I/O of one ``follow_rayjob`` call: one RayJob, its API, clock, sleep and output."""

    api: RayJobApi
    ns: str
    name: str
    delete_timeout_s: float
    clock: Callable[[], float]
    sleep: Callable[[float], Any]
    emit: Callable[[str], None]
    log_ts: str | None = None
    log_lines: int = 0

    def replace_leftover(self) -> None:
        existing = self.api.get(self.ns, self.name)
        if existing is not None:  # a leftover from an earlier attempt of this very step: start clean
            self.emit(f"[rayjob] {self.ns}/{self.name} already exists "
                      f"({RayJobStatus.of(existing).describe()}); deleting it first")
            self.delete(self.delete_timeout_s)

    def poll(self, fsm: RayJobFollower) -> Action:
        """Read the RayJob and feed it to ``fsm``; an API error is the follower's error."""
        try:
            obj = self.api.get(self.ns, self.name)
        except Exception as exc:  # noqa: BLE001 - API trouble: give up and clean up
            return fsm.error(exc)
        before = fsm.last
        action = fsm.observe(obj, self.clock())
        if fsm.last != before:
            self.emit(f"[rayjob] {self.name}: {fsm.last.describe()}")
        return action

    def stream_log(self) -> None:
        """Emit the submitter pod's new log lines (without their timestamps)."""
        try:
            lines = self.api.submitter_log(self.ns, self.name, self.log_ts)
        except Exception as exc:  # noqa: BLE001 - logs are best effort
            log.debug("log read failed: %s", exc)
            lines = []
        for line in lines:
            self.emit(line.split(" ", 1)[1] if " " in line else line)
            self.log_ts = line.split(" ", 1)[0]
            self.log_lines += 1

    def delete(self, timeout_s: float) -> bool:
        return _delete_and_wait(self.api, self.ns, self.name, timeout_s, self.clock, self.sleep)

    def delete_for(self, action: Action) -> bool:
        """Delete the RayJob once the follower decided an outcome; True once it is gone."""
        self.emit(f"[rayjob] {self.name}: {action.outcome.value}: {action.reason}; deleting")
        # on SIGTERM the kubelet kills us after the grace period (30 s by default): the delete
        # request is what matters, waiting for it to finish is best effort
        budget = min(self.delete_timeout_s, CANCEL_DELETE_WAIT_S) if action.outcome is Outcome.CANCELLED \
            else self.delete_timeout_s
        deleted = self.delete(budget)
        if not deleted:
            self.emit(f"[rayjob] {self.name}: delete requested, still present after {budget:g}s")
        return deleted

    def delete_after_escape(self) -> bool:
        """Clean up after an exception escaped the loop; never raises."""
        try:
            return self.delete(self.delete_timeout_s)
        except Exception as exc:  # noqa: BLE001
            self.emit(f"[rayjob] could not delete {self.ns}/{self.name}: {exc}")
            return False


def follow_rayjob(api: RayJobApi, manifest: dict[str, Any], *, start_timeout_s: float, run_timeout_s: float,
                  poll_interval_s: float, delete_timeout_s: float, cancel: threading.Event | None = None,
                  clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], Any] | None = None,
                  emit: Callable[[str], None] | None = None) -> RayJobResult:
    """Create the RayJob, follow it to an outcome, delete it, and return the result (never raises for
    the job's own failure; raises only if the RayJob could not be created)."""
    cancel = cancel or threading.Event()
    io = _Follow(api=api, ns=manifest["metadata"]["namespace"], name=manifest["metadata"]["name"],
                 delete_timeout_s=delete_timeout_s, clock=clock, sleep=sleep or _cancellable_sleep(cancel),
                 emit=emit or _emit_to_stderr)
    io.replace_leftover()
    api.create(manifest)
    io.emit(f"[rayjob] created {io.ns}/{io.name}")
    fsm = RayJobFollower(start_timeout_s=start_timeout_s, run_timeout_s=run_timeout_s, created_at=clock())
    deleted = False
    try:
        action = WAIT
        while action.kind != "done":
            if cancel.is_set():
                action = fsm.cancel()
            else:
                action = io.poll(fsm)
                io.stream_log()
            if action.kind == "delete":
                deleted = io.delete_for(action)
                if not deleted:
                    break
                action = fsm.observe(None, clock())
            elif action.kind == "wait":
                io.sleep(poll_interval_s)
    finally:
        if not deleted and fsm.outcome is not Outcome.VANISHED:  # an exception escaped the loop: clean up
            deleted = io.delete_after_escape()
    if fsm.outcome is Outcome.VANISHED:
        deleted = True
    return RayJobResult(name=io.name, namespace=io.ns, outcome=fsm.outcome or Outcome.ERROR, reason=fsm.reason,
                        deleted=deleted, history=list(fsm.history), log_lines=io.log_lines)


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
