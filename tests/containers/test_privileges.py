"""The sandbox's privileges in a pod, without Docker: the chart grants exactly the measured set (its
seccomp profile file is ours), and ``coderforge sandbox check`` reads a container's privileges from the
kernel's view of the process."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from coderforge.images.privileges import (
    CANDIDATES,
    DOCKER_SANDBOX,
    NAMESPACE_CALLS,
    Privileges,
    seccomp_profile,
)
from coderforge.sandbox.container import container_report, masked_proc_paths, missing_privileges

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm/coderforge"


def chart_sandbox_values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())["sandbox"]


def privileges_of_chart(values: dict) -> Privileges:
    """The chart's sandbox security context read back as a privilege set (what tests/containers runs)."""
    pod, ctr = values["podSecurityContext"], values["containerSecurityContext"]
    seccomp = (ctr.get("seccompProfile") or pod.get("seccompProfile") or {"type": "RuntimeDefault"})
    kind = {"RuntimeDefault": "runtime-default", "Unconfined": "unconfined"}.get(seccomp["type"])
    if seccomp["type"] == "Localhost":
        assert seccomp["localhostProfile"] == "profiles/coderforge-sandbox.json"
        kind = "coderforge-sandbox"
    return Privileges("chart", seccomp=kind, proc="unmasked" if ctr.get("procMount") == "Unmasked" else "default",
                      add_capabilities=tuple(ctr.get("capabilities", {}).get("add", [])),
                      privileged=bool(ctr.get("privileged")))


def test_chart_grants_exactly_the_measured_least_privilege():
    values = chart_sandbox_values()
    chart = privileges_of_chart(values)
    assert (chart.seccomp, chart.proc, chart.add_capabilities, chart.privileged) == (
        DOCKER_SANDBOX.seccomp, DOCKER_SANDBOX.proc, DOCKER_SANDBOX.add_capabilities, DOCKER_SANDBOX.privileged)
    ctr = values["containerSecurityContext"]
    assert ctr["capabilities"]["drop"] == ["ALL"] and ctr["allowPrivilegeEscalation"] is False
    assert values["hostUsers"] is False  # Kubernetes allows procMount: Unmasked only in a user namespace
    expected = DOCKER_SANDBOX.k8s_security_context()
    assert ctr["procMount"] == expected["procMount"]
    assert values["podSecurityContext"]["seccompProfile"] == expected["seccompProfile"]
    assert values["podSecurityContext"]["runAsUser"] == expected["runAsUser"] == 10001


def test_the_charts_seccomp_profile_is_ours():
    on_disk = json.loads((CHART / "files/coderforge-sandbox.json").read_text())
    assert on_disk == seccomp_profile()
    denied = set(on_disk["syscalls"][0]["names"])
    assert not denied & set(NAMESPACE_CALLS)
    assert {"ptrace", "bpf", "perf_event_open", "init_module", "kexec_load", "keyctl", "setns", "open_tree",
            "mount_setattr", "chroot"} <= denied


def test_candidates_go_from_none_to_privileged():
    assert CANDIDATES[0].run_args() == {} and CANDIDATES[-1].run_args() == {"privileged": True}
    assert DOCKER_SANDBOX in CANDIDATES and not DOCKER_SANDBOX.add_capabilities
    assert Privileges("x", seccomp="unconfined", proc="unmasked").run_args() == {
        "security_opt": ["seccomp=unconfined"], "unmask_proc": True}


MOUNTINFO = """\
22 1 0:21 / / rw,relatime - overlay overlay rw
23 22 0:22 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
24 23 0:23 / /proc/kcore rw,nosuid - tmpfs tmpfs rw
25 23 0:22 /sys /proc/sys ro,relatime - proc proc rw
26 22 0:24 / /dev rw - tmpfs tmpfs rw
"""


def test_masked_proc_is_recognised():
    assert masked_proc_paths(MOUNTINFO) == ["/proc/kcore", "/proc/sys"]
    assert masked_proc_paths("22 1 0:21 / / rw - overlay overlay rw\n23 22 0:22 / /proc rw - proc proc rw\n") == []


def test_failed_isolation_names_the_missing_privilege():
    report = {"seccomp": "filter", "proc_masked": ["/proc/kcore"], "apparmor": "docker-default (enforce)",
              "max_user_namespaces": 1000}
    seccomp = missing_privileges(report, "namespace setup failed: [Errno 1] unshare: Operation not permitted")
    assert len(seccomp) == 1 and "seccomp" in seccomp[0] and "unshare" in seccomp[0]
    proc = missing_privileges(report, "namespace setup failed: [Errno 1] mount /proc: Operation not permitted")
    assert any("procMount: Unmasked" in h for h in proc) and any("AppArmor" in h for h in proc)
    assert missing_privileges({**report, "max_user_namespaces": 0}, "unshare: Invalid argument")[0].startswith(
        "user namespaces")


def test_container_report_reads_this_process():
    report = container_report()
    assert report["seccomp"] in ("disabled", "strict", "filter")
    assert isinstance(report["capabilities"]["bounding"], list) and report["uid"] >= 0
