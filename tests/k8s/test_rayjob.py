"""RayJob: the manifest, the follow-and-clean-up state machine over KubeRay's documented states, and the
driver run through the real ``kubernetes`` client against a local API-server stand-in. Every path —
succeeded, failed, stopped, cancelled (including a real SIGTERM to a real process), timed out, API
errors — must end with the RayJob deleted."""

from __future__ import annotations

import base64
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from coderforge.config import K8sSection
from coderforge.k8s import rayjob as rj
from coderforge.k8s.rayjob import KubeRayApi, Outcome, Phase, RayJobFollower, build_rayjob, follow_rayjob
from tests.k8s.apiserver import ApiServerStandIn, status

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSIONS = ("1.29.0", "1.33.0")
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


# ---------------------------------------------------------------------------------------------- manifest

def test_manifest_teardown_image_resources():
    m = manifest(owner={"name": "pretrain-pod-xyz", "uid": "1234-abcd"})
    assert m["apiVersion"] == "ray.io/v1" and m["kind"] == "RayJob"
    spec = m["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] == 120 and spec["activeDeadlineSeconds"] == 3600
    assert spec["backoffLimit"] == 0 and spec["submissionMode"] == "K8sJobMode"
    assert shlex.split(spec["entrypoint"]) == ["python", "-m", "coderforge.k8s.ray_entry", "coderforge.cli",
                                                "step", "pretrain", "--recipe", "{recipe}"]
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == "2.60.0"
    head = cluster["headGroupSpec"]["template"]["spec"]
    (group,) = cluster["workerGroupSpecs"]
    worker = group["template"]["spec"]
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 3
    for pod in (head, worker):
        (c,) = pod["containers"]
        assert c["image"] == "registry.local/coderforge-train:abc"
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert pod["serviceAccountName"] == "coderforge-ray"
        env = {e["name"]: e for e in c["env"]}
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": "s3-creds", "key": "secretKey", "optional": False}
        assert c["envFrom"] == [{"configMapRef": {"name": "coderforge-endpoints", "optional": True}}]
        assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
    wres = worker["containers"][0]["resources"]
    assert wres["requests"] == {"cpu": "16", "memory": "120Gi", "nvidia.com/gpu": "8"}
    assert wres["limits"]["nvidia.com/gpu"] == "8"
    assert worker["nodeSelector"] == {"pool": "h100"}
    assert worker["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert head["containers"][0]["resources"]["requests"] == {"cpu": "2", "memory": "8Gi"}
    assert m["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "Pod", "name": "pretrain-pod-xyz",
                                                 "uid": "1234-abcd", "blockOwnerDeletion": False}]
    assert m["metadata"]["labels"]["coderforge.dev/step"] == "pretrain"


def test_recipe_travels_in_runtime_env_and_no_secret_values():
    m = manifest()
    env_vars = yaml.safe_load(m["spec"]["runtimeEnvYAML"])["env_vars"]
    assert base64.b64decode(env_vars[rj.RECIPE_ENV]).decode() == RECIPE
    text = yaml.safe_dump(m)
    # credentials are referenced by Secret name and key only
    assert "secretKeyRef" in text and "value: testing" not in text


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_pod_templates_validate_against_kubernetes_schema(version):
    m = manifest(owner={"name": "p", "uid": "u"})
    cluster = m["spec"]["rayClusterSpec"]
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for i, template in enumerate(templates):
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate",
                                      "metadata": {"name": f"t{i}", "namespace": "team-a"},
                                      "template": template}, version, strict=True)
    # the RayJob's own metadata is ordinary ObjectMeta: validate it on a ConfigMap carrier
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": m["metadata"]},
                                 version, strict=True)


def test_rayjob_names_are_short_dns_labels_and_stable():
    a = rj.rayjob_name("pretrain", RECIPE, "pod-1")
    assert a == rj.rayjob_name("pretrain", RECIPE, "pod-1")
    assert a != rj.rayjob_name("pretrain", RECIPE, "pod-2") != rj.rayjob_name("pretrain", RECIPE + "x", "pod-1")
    long = rj.rayjob_name("Stage_2 Long-Context YaRN extension", RECIPE)
    for n in (a, long):
        assert len(n) <= 30 and n[0].isalpha() and all(c.islower() or c.isdigit() or c == "-" for c in n)


# ------------------------------------------------------------------------------------- state machine

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
    ([obj("RUNNING", "Running"), obj("RUNNING", "Failed", "DeadlineExceeded")], Outcome.FAILED, "activedeadlineseconds"),
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
    assert f.observe(obj("STOPPED", "Running"), 2) == rj.Action("delete", Outcome.CANCELLED, a.reason)
    assert f.observe(None, 3).kind == "done" and f.outcome is Outcome.CANCELLED


def test_vanished_is_done_without_delete():
    f = RayJobFollower(start_timeout_s=100, run_timeout_s=100, created_at=0)
    f.observe(obj("RUNNING", "Running"), 1)
    a = f.observe(None, 2)
    assert a.kind == "done" and f.outcome is Outcome.VANISHED


# ------------------------------------------------------------------ driver over the real k8s client

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


def test_log_timestamps_with_variable_fraction_digits_are_ordered():
    text = ("2026-11-23T12:00:02Z a\n2026-11-23T12:00:02.000001Z b\n2026-11-23T12:00:02.5Z c\n"
            "2026-11-23T12:00:03Z d\n")
    assert rj.new_log_lines(text, None) == text.splitlines()
    assert [line[-1] for line in rj.new_log_lines(text, "2026-11-23T12:00:02Z")] == ["b", "c", "d"]
    assert [line[-1] for line in rj.new_log_lines(text, "2026-11-23T12:00:02.4999Z")] == ["c", "d"]
    assert rj.timestamp_key("2026-11-23T12:00:02.5+00:00") == rj.timestamp_key("2026-11-23T12:00:02.500Z")
