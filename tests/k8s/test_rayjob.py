"""RayJob driver: the follow-and-clean-up loop run through the real ``kubernetes`` client against a local
API-server stand-in, and the entrypoint the RayJob runs. Every path — succeeded, failed, stopped,
cancelled (including a real SIGTERM to a real process), timed out, API errors — must end with the RayJob
deleted. (The manifest: test_rayjob_manifest.py; the state machine: test_rayjob_status.py.)"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from coderforge.k8s import rayjob as rj
from coderforge.k8s.rayjob import KubeRayApi, Outcome, follow_rayjob
from tests.k8s.apiserver import ApiServerStandIn, status
from tests.k8s.rayjob_fixtures import K8S, RECIPE, manifest

ROOT = Path(__file__).resolve().parents[2]


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def run_follow(server, name, cancel=None, start_timeout=100.0, run_timeout=1000.0, **kw):
    clock = FakeClock()
    lines: list[str] = []
    api = KubeRayApi(api_client=server.client())
    result = follow_rayjob(api, manifest(name=name), start_timeout_s=start_timeout, run_timeout_s=run_timeout,
                           poll_interval_s=10, delete_timeout_s=60, cancel=cancel, clock=clock,
                           sleep=clock.sleep, emit=lines.append, **kw)
    return result, lines


SCRIPTS = {
    "cf-ok": ([status("", "Initializing"), status("RUNNING", "Running"), status("RUNNING", "Running"),
               status("SUCCEEDED", "Complete")],
              [[], ["Job submitted"], ["step 10 loss 4.1", "step 20 loss 3.2"], ["Job 'raysubmit_1' succeeded"]],
              Outcome.SUCCEEDED),
    "cf-fail": ([status("RUNNING", "Running"), status("FAILED", "Failed", "AppFailed", "Job failed: exit code 1")],
                [["Traceback (most recent call last):"], ["ValueError: bad shard"]], Outcome.FAILED),
    "cf-stop": ([status("RUNNING", "Running"), status("STOPPED", "Running")], [], Outcome.STOPPED),
    "cf-slow": ([status("", "Initializing")], [], Outcome.TIMED_OUT),
    "cf-long": ([status("RUNNING", "Running")], [], Outcome.TIMED_OUT),
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_follow_paths_end_deleted(name):
    statuses, logs, outcome = SCRIPTS[name]
    with ApiServerStandIn() as server:
        server.script(name, statuses, logs)
        result, lines = run_follow(server, name, start_timeout=50, run_timeout=200)
        assert result.outcome is outcome, result
        assert result.deleted and not server.exists("team-a", name)
        verbs = server.verbs(name)
        assert verbs[0] == "GET" and verbs[1] == "POST" and "DELETE" in verbs
        deletes = [b for m, p, b in server.requests if m == "DELETE"]
        assert deletes[0]["propagationPolicy"] == "Foreground"
        for chunk in logs:
            for line in chunk:
                assert lines.count(line) == 1, (line, lines)  # streamed once each, in order
        if name == "cf-fail":
            assert "AppFailed" in result.reason and "exit code 1" in result.reason
            assert lines.index("Traceback (most recent call last):") < lines.index("ValueError: bad shard")


def test_cancel_event_deletes_promptly():
    with ApiServerStandIn() as server:
        cancel = threading.Event()
        clock = FakeClock()
        polls = {"n": 0}

        def sleep(s):
            clock.sleep(s)
            polls["n"] += 1
            if polls["n"] == 3:
                cancel.set()

        api = KubeRayApi(api_client=server.client())
        result = follow_rayjob(api, manifest(name="cf-cancel"), start_timeout_s=100, run_timeout_s=1000,
                               poll_interval_s=10, delete_timeout_s=60, cancel=cancel, clock=clock, sleep=sleep,
                               emit=lambda line: None)
        assert result.outcome is Outcome.CANCELLED and result.deleted
        assert not server.exists("team-a", "cf-cancel")


def test_api_error_still_deletes():
    with ApiServerStandIn() as server:
        server.script("cf-err", [status("RUNNING", "Running")])
        clock = FakeClock()
        api = KubeRayApi(api_client=server.client())
        calls = {"n": 0}
        real_get = api.get

        def flaky_get(ns, name):
            calls["n"] += 1
            if calls["n"] == 4:  # GET before create, then two polls, then the API server errors
                server.fail_gets = 1
            return real_get(ns, name)

        api.get = flaky_get
        result = follow_rayjob(api, manifest(name="cf-err"), start_timeout_s=100, run_timeout_s=1000,
                               poll_interval_s=10, delete_timeout_s=60, clock=clock, sleep=clock.sleep,
                               emit=lambda line: None)
        assert result.outcome is Outcome.ERROR and "500" in result.reason
        assert result.deleted and not server.exists("team-a", "cf-err")


def test_leftover_rayjob_from_a_retry_is_replaced():
    with ApiServerStandIn() as server:
        server.script("cf-retry", [status("RUNNING", "Running"), status("SUCCEEDED", "Complete")])
        api = KubeRayApi(api_client=server.client())
        api.create(manifest(name="cf-retry"))  # a previous attempt of the step left it behind
        result, lines = run_follow(server, "cf-retry")
        assert result.outcome is Outcome.SUCCEEDED and result.deleted
        assert any("already exists" in line for line in lines)
        writes = [m for m, p, b in server.requests if m in ("POST", "DELETE")]
        collapsed = [m for i, m in enumerate(writes) if i == 0 or writes[i - 1] != m]
        assert collapsed == ["POST", "DELETE", "POST", "DELETE"]  # old one gone before the new one is created


def test_run_step_on_rayjob_raises_with_reason_after_deleting():
    with ApiServerStandIn() as server:
        server.default_script = [status("FAILED", "Failed", "AppFailed", "OOMKilled")]
        k8s = K8S.model_copy(deep=True)
        k8s.rayjob.poll_interval_s = 0.01
        with pytest.raises(rj.RayJobError, match="OOMKilled") as info:
            rj.run_step_on_rayjob("pretrain", RECIPE, k8s, module="coderforge.cli", args=["x"], namespace="ns1",
                                  api=KubeRayApi(api_client=server.client()), image="img:1", emit=lambda line: None)
        assert info.value.result.deleted and not server.objects


SIGTERM_CHILD = """
import sys
from coderforge.config import K8sSection
from coderforge.k8s.rayjob import KubeRayApi, run_step_on_rayjob, RayJobError
from kubernetes import client
cfg = client.Configuration(); cfg.host = sys.argv[1]
k8s = K8sSection.model_validate({"rayjob": {"enabled": True, "poll_interval_s": 0.2}})
try:
    run_step_on_rayjob("pretrain", "run: {}", k8s, module="coderforge.cli", args=["x"], namespace="ns1",
                       api=KubeRayApi(client.ApiClient(cfg)), image="img:1",
                       emit=lambda line: print(line, flush=True))
except RayJobError as exc:
    print("RESULT", exc.result.outcome.value, exc.result.deleted, flush=True)
    sys.exit(3)
"""


def test_sigterm_to_a_real_process_deletes_the_rayjob(tmp_path):
    """What Argo does when a pipeline run is cancelled: SIGTERM to the step's process."""
    with ApiServerStandIn(default_script=[status("RUNNING", "Running")]) as server:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen([sys.executable, "-c", SIGTERM_CHILD, server.url], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
        deadline = time.time() + 60
        while time.time() < deadline and not server.objects:
            time.sleep(0.1)
        assert server.objects, "the child never created its RayJob"
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 3, out
        assert "RESULT cancelled True" in out
        assert not server.objects
        assert any(m == "DELETE" for m, _, _ in server.requests)


def test_ray_entry_materializes_recipe_and_runs_module(tmp_path):
    mod = tmp_path / "cf_probe_mod.py"
    mod.write_text("import sys\nfrom pathlib import Path\n"
                   "Path(sys.argv[2]).write_text(Path(sys.argv[1]).read_text())\nsys.exit(7)\n")
    out = tmp_path / "copy.yaml"
    env = dict(os.environ, PYTHONPATH=f"{ROOT}:{tmp_path}",
               **{rj.RECIPE_ENV: base64.b64encode(RECIPE.encode()).decode()})
    proc = subprocess.run([sys.executable, "-m", "coderforge.k8s.ray_entry", "cf_probe_mod", "{recipe}", str(out)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 7, proc.stderr  # the module's exit status is the Ray job's
    assert out.read_text() == RECIPE
