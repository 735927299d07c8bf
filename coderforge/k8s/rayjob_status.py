"""``RayJobFollower``: a plain state machine over KubeRay ``RayJob`` status objects (no I/O, no clock).

It is fed what the API server returns (or "gone", or "cancelled", or the clock) and answers with one
action: keep waiting, delete the RayJob (with the outcome and reason), or done. Every path out of it
passes through a delete, so no cluster is leaked whatever happens. ``coderforge.k8s.rayjob`` runs the
I/O loop around it.

KubeRay status values (ray-operator/apis/ray/v1/rayjob_types.go): ``jobStatus`` ∈ {"" (new),
PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED}; ``jobDeploymentStatus`` ∈ {"" (new), Initializing,
Running, Complete, Failed, ValidationFailed, Suspending, Suspended, Retrying, Waiting}; ``reason`` ∈
{SubmissionFailed, DeadlineExceeded, AppFailed, JobDeploymentStatusTransitionGracePeriodExceeded,
ValidationFailed}.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

JOB_TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
DEPLOYMENT_TERMINAL = {"Complete", "Failed", "ValidationFailed"}
DEPLOYMENT_STARTING = {"", "Initializing", "Waiting", "Retrying", "Suspending", "Suspended"}


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

_FAILURE_REASONS = {
    "AppFailed": "the Ray job's entrypoint failed",
    "SubmissionFailed": "the job could not be submitted to the Ray cluster",
    "DeadlineExceeded": "activeDeadlineSeconds exceeded",
    "JobDeploymentStatusTransitionGracePeriodExceeded": "the job finished but KubeRay could not settle its status",
    "ValidationFailed": "KubeRay rejected the RayJob spec",
}


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
        what = _FAILURE_REASONS.get(st.reason, "the RayJob failed")
        return f"{what}: {st.describe()}"
