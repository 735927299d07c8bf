"""What the container the sandbox runs in grants it, read from the kernel's view of this process (no
container API): for ``coderforge sandbox check`` to say, from inside a container or a pod, under which
privileges it runs and, where it cannot isolate, which of them is missing.

The sandbox's init (rootless in our images: uid 10001) needs the runtime's seccomp profile to let
``unshare``/``mount``/``umount2``/``pivot_root`` through (a runtime default lets them through only with
CAP_SYS_ADMIN), an unmasked ``/proc`` (the kernel refuses a new procfs in a user namespace while parts of
the container's ``/proc`` are covered), and an AppArmor profile, where AppArmor runs, that permits
``mount`` (docker-default does not). ``coderforge/images/privileges.py`` holds the measured least set.
"""

from __future__ import annotations

import os
from pathlib import Path

CAPABILITIES = (  # bit n of a capability mask (linux/capability.h)
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
)
SECCOMP_MODES = {"0": "disabled", "1": "strict", "2": "filter"}
HINTS = {
    "seccomp": "a seccomp profile that allows unshare, mount, umount2 and pivot_root (Docker: --security-opt "
               "seccomp=<coderforge-sandbox.json>; Kubernetes: seccompProfile Localhost "
               "profiles/coderforge-sandbox.json)",
    "proc": "an unmasked /proc (Docker: --security-opt systempaths=unconfined; Kubernetes: procMount: Unmasked, "
            "which needs hostUsers: false)",
    "apparmor": "an AppArmor profile that permits mount (Docker: --security-opt apparmor=unconfined; Kubernetes: "
                "appArmorProfile Unconfined)",
    "userns": "user namespaces (sysctl user.max_user_namespaces > 0)",
}


def _status(proc: Path) -> dict[str, str]:
    out = {}
    try:
        for line in (proc / "self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            out[key] = value.strip()
    except OSError:
        pass
    return out


def _caps(hex_mask: str) -> list[str]:
    try:
        mask = int(hex_mask, 16)
    except ValueError:
        return []
    return [CAPABILITIES[bit] if bit < len(CAPABILITIES) else f"cap{bit}" for bit in range(64) if mask >> bit & 1]


def masked_proc_paths(mountinfo: str) -> list[str]:
    """Mount points below ``/proc`` (``/proc/kcore``, ``/proc/sys`` ...): a runtime's masks of /proc."""
    points = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4].startswith("/proc/"):
            points.append(fields[4])
    return sorted(set(points))


def in_container(root: Path = Path("/")) -> str | None:
    """The kind of container this process runs in (kubernetes, podman, docker, container), or None."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return "kubernetes"
    if (root / "run/.containerenv").exists():
        return "podman"
    if (root / ".dockerenv").exists():
        return "docker"
    try:
        cgroup = (root / "proc/1/cgroup").read_text()
    except OSError:
        cgroup = ""
    if any(word in cgroup for word in ("docker", "kubepods", "containerd", "libpod")):
        return "container"
    return None


def apparmor_profile(proc: Path = Path("/proc")) -> str | None:
    for path in (proc / "self/attr/apparmor/current", proc / "self/attr/current"):
        try:
            text = path.read_text().strip().rstrip("\0")
        except OSError:
            continue
        if text:
            return text
    return None


def container_report(proc: Path = Path("/proc"), root: Path = Path("/")) -> dict:
    """Where this process runs and with which privileges: capabilities (effective, bounding), no_new_privs,
    seccomp mode, masked /proc paths, AppArmor profile, the user-namespace limit."""
    status = _status(proc)
    try:
        masked = masked_proc_paths((proc / "self/mountinfo").read_text())
    except OSError:
        masked = []
    try:
        userns = int((proc / "sys/user/max_user_namespaces").read_text())
    except (OSError, ValueError):
        userns = None
    return {
        "container": in_container(root), "uid": os.geteuid(),
        "capabilities": {"effective": _caps(status.get("CapEff", "0")), "bounding": _caps(status.get("CapBnd", "0"))},
        "no_new_privs": status.get("NoNewPrivs") == "1",
        "seccomp": SECCOMP_MODES.get(status.get("Seccomp", ""), "unknown"),
        "proc_masked": masked, "apparmor": apparmor_profile(proc), "max_user_namespaces": userns,
    }


def missing_privileges(report: dict, reason: str) -> list[str]:
    """Which privileges a failed isolation probe (``reason``) most likely lacked, as hints."""
    out = []
    text = reason.lower()
    if report.get("max_user_namespaces") == 0:
        out.append(HINTS["userns"])
    if "unshare" in text or "pivot" in text or ("operation not permitted" in text and "/proc" not in text):
        if report.get("seccomp") == "filter":
            out.append(HINTS["seccomp"])
    if "/proc" in text and report.get("proc_masked"):
        out.append(HINTS["proc"])
    apparmor = report.get("apparmor") or ""
    if "mount" in text and apparmor and "unconfined" not in apparmor:
        out.append(HINTS["apparmor"])
    return out
