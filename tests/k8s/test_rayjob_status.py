"""The RayJob follower: KubeRay's documented states drive it to one outcome, every path out of it passes
through a delete, timeouts count from creation (start) and from running (run), and the first decision
stands."""

from __future__ import annotations

import pytest

from coderforge.k8s.rayjob_status import Action, Outcome, Phase, RayJobFollower
from tests.k8s.apiserver import status


def obj(job="", deployment="", reason="", message=""):
    return {"status": status(job, deployment, reason, message)}


def drive(observations, start_timeout=100.0, run_timeout=1000.0, dt=10.0):
    """Feed observations one per ``dt`` seconds; after a delete, the object is gone on the next read."""
    f = RayJobFollower(start_timeout_s=start_timeout, run_timeout_s=run_timeout, created_at=0.0)
    now, actions = 0.0, []
    for o in observations:
        now += dt
        a = f.observe(o, now)
        actions.append(a.kind)
        if a.kind == "delete":
            break
    final = f.observe(None, now + dt) if f.phase is Phase.DELETING else None
    return f, actions, final


@pytest.mark.parametrize("path,outcome,reason_part", [
    ([obj("", ""), obj("", "Initializing"), obj("PENDING", "Running"), obj("RUNNING", "Running"),
      obj("SUCCEEDED", "Running"), obj("SUCCEEDED", "Complete")], Outcome.SUCCEEDED, "succeeded"),
    ([obj("", "Initializing"), obj("RUNNING", "Running"), obj("FAILED", "Failed", "AppFailed", "exit 1")],
     Outcome.FAILED, "entrypoint failed"),
    ([obj("", "Initializing"), obj("", "Failed", "SubmissionFailed", "submitter pod failed")],
     Outcome.FAILED, "could not be submitted"),
    ([obj("RUNNING", "Running"), obj("RUNNING", "Failed", "DeadlineExceeded")],
     Outcome.FAILED, "activedeadlineseconds"),
    ([obj("", "ValidationFailed", "ValidationFailed", "bad spec")], Outcome.FAILED, "rejected"),
    ([obj("RUNNING", "Running"), obj("STOPPED", "Running")], Outcome.STOPPED, "stopped"),
    ([obj("", "Initializing"), obj("", "Complete")], Outcome.SUCCEEDED, "complete"),
])
def test_terminal_paths_delete_then_done(path, outcome, reason_part):
    f, actions, final = drive(path)
    assert actions[-1] == "delete" and actions[:-1] == ["wait"] * (len(actions) - 1)
    assert f.outcome is outcome and reason_part in f.reason.lower()
    assert final.kind == "done" and f.phase is Phase.DONE


def test_success_waits_through_transient_states():
    seq = [obj("", "Waiting"), obj("", "Retrying"), obj("", "Initializing"), obj("PENDING", "Running"),
           obj("RUNNING", "Running"), obj("RUNNING", "Running"), obj("SUCCEEDED", "Complete")]
    f, actions, final = drive(seq)
    assert actions == ["wait"] * 6 + ["delete"] and f.outcome is Outcome.SUCCEEDED
    assert f.history[0] == ("", "Waiting") and f.history[-1] == ("SUCCEEDED", "Complete")


def test_start_timeout_when_cluster_never_comes_up():
    f, actions, final = drive([obj("", "Initializing")] * 20, start_timeout=45, dt=10)
    assert actions == ["wait"] * 4 + ["delete"]  # t=50 > 45
    assert f.outcome is Outcome.TIMED_OUT and "did not start within 45s" in f.reason
    assert "Initializing" in f.reason and final.kind == "done"


def test_run_timeout_counts_from_running():
    seq = [obj("", "Initializing")] * 5 + [obj("RUNNING", "Running")] * 50
    f, actions, _ = drive(seq, start_timeout=1000, run_timeout=100, dt=10)
    # running since t=60; 60+100 < t=170 → the 17th observation decides
    assert len(actions) == 17 and actions[-1] == "delete" and f.outcome is Outcome.TIMED_OUT


def test_cancel_while_running_and_first_decision_stands():
    f = RayJobFollower(start_timeout_s=100, run_timeout_s=100, created_at=0)
    assert f.observe(obj("RUNNING", "Running"), 1).kind == "wait"
    a = f.cancel()
    assert a.kind == "delete" and a.outcome is Outcome.CANCELLED
    # KubeRay reports the job stopped while the delete is in flight: still cancelled, still deleting
    assert f.observe(obj("STOPPED", "Running"), 2) == Action("delete", Outcome.CANCELLED, a.reason)
    assert f.observe(None, 3).kind == "done" and f.outcome is Outcome.CANCELLED


def test_vanished_is_done_without_delete():
    f = RayJobFollower(start_timeout_s=100, run_timeout_s=100, created_at=0)
    f.observe(obj("RUNNING", "Running"), 1)
    a = f.observe(None, 2)
    assert a.kind == "done" and f.outcome is Outcome.VANISHED
