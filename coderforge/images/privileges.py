"""The privileges the sandbox (:mod:`coderforge.sandbox`) needs in a container to keep its isolation, and
the measurement that found them.

The images run as uid 10001, so the sandbox's init is rootless: it creates a user namespace, then mount,
network, PID, IPC and UTS namespaces in it, builds the run's root with ``mount`` and ``pivot_root`` and
mounts a fresh ``/proc``. A container's defaults refuse two of those: the runtime's default seccomp
profile lets ``unshare``/``mount``/``umount2``/``pivot_root`` through only to a holder of CAP_SYS_ADMIN,
and the runtime masks parts of ``/proc`` (bind mounts over ``/proc/kcore``, ``/proc/sys`` ...), which
makes the kernel refuse a new procfs in a user namespace.

:data:`CANDIDATES` are privilege sets from none to ``--privileged``; :func:`measure` runs
``coderforge sandbox check`` in an image under each. :data:`DOCKER_SANDBOX` is the least set that
isolates (tests/containers check that it does, and that every strictly smaller one does not): our own
seccomp profile (:func:`seccomp_profile`: the runtime default's significant denials minus the five
namespace/mount calls the init makes) and an unmasked ``/proc``; no capability, no privilege escalation,
non-root. Kubernetes spells the same (:meth:`Privileges.k8s_security_context`): ``seccompProfile``
Localhost with that profile on the node, ``procMount: Unmasked`` (which Kubernetes allows only in a pod
with its own user namespace, ``hostUsers: false``), ``capabilities: drop ALL``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

SANDBOX_SECTIONS = ("sandbox",)  # a step whose recipe sections include these runs untrusted code
SECCOMP_PROFILE_NAME = "coderforge-sandbox.json"
# What the sandbox's init must be allowed beyond a runtime's default profile (all in its own user namespace).
NAMESPACE_CALLS = ("unshare", "mount", "umount2", "pivot_root")
# Denied to the container's processes (EPERM): the significant denials of the runtimes' default profiles
# (kernel modules, kexec, reboot, clocks, swap, keyrings, BPF, perf, ptrace and cross-process memory, the
# new mount API, handles, accounting, NUMA policy, obsolete calls), except NAMESPACE_CALLS. Measured
# (tests/containers): denying any one of NAMESPACE_CALLS breaks isolation (unshare: no namespaces; mount:
# no root; umount2: the host tree stays attached; pivot_root: the probe passes by chroot but the warm
# init's jobs cannot create their namespaces); denying mount_setattr or chroot does not.
DENIED_SYSCALLS = (
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module", "delete_module", "finit_module",
    "fsconfig", "fsmount", "fsopen", "fspick", "get_kernel_syms", "get_mempolicy", "init_module", "ioperm", "iopl",
    "kcmp", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mbind", "move_mount", "move_pages",
    "name_to_handle_at", "nfsservctl", "open_by_handle_at", "open_tree", "perf_event_open", "process_vm_readv",
    "process_vm_writev", "ptrace", "query_module", "quotactl", "reboot", "request_key", "set_mempolicy", "setns",
    "settimeofday", "stime", "swapoff", "swapon", "syslog", "sysfs", "_sysctl", "umount", "uselib", "userfaultfd",
    "ustat", "vm86", "vm86old", "adjtimex", "sethostname", "setdomainname", "vhangup",
    "chroot", "mount_setattr",  # the init falls back without them (measured): not needed, so denied
)


def seccomp_profile(deny_also: tuple[str, ...] = ()) -> dict[str, Any]:
    """The container seccomp profile of sandbox steps (OCI/Docker JSON): every syscall of the native ABI is
    allowed except :data:`DENIED_SYSCALLS` (and ``deny_also``), which fail with EPERM; other ABIs (x32,
    i386) are refused by the runtime. The sandbox applies its own, stricter filter to the programs it runs
    (:mod:`coderforge.sandbox.seccomp`)."""
    return {"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": sorted({*DENIED_SYSCALLS, *deny_also}), "action": "SCMP_ACT_ERRNO"}]}


@dataclass(frozen=True)
class Privileges:
    """A privilege set for a container, in Docker's and in Kubernetes's terms."""

    name: str
    seccomp: str = "runtime-default"  # runtime-default | coderforge-sandbox | unconfined
    seccomp_deny_also: tuple[str, ...] = ()  # coderforge-sandbox less these (to measure what it needs)
    proc: str = "default"  # default (masked by the runtime) | unmasked
    add_capabilities: tuple[str, ...] = ()
    apparmor: str = "runtime-default"  # runtime-default | unconfined
    privileged: bool = False

    def run_args(self) -> dict[str, Any]:
        """Container settings for :func:`coderforge.images.containers.run_container` (``docker run``:
        ``--security-opt seccomp=...``, ``--security-opt systempaths=unconfined``, ``--cap-add``)."""
        opts = []
        if self.seccomp == "unconfined":
            opts.append("seccomp=unconfined")
        elif self.seccomp == "coderforge-sandbox":
            opts.append("seccomp=" + json.dumps(seccomp_profile(self.seccomp_deny_also), separators=(",", ":")))
        if self.apparmor == "unconfined":
            opts.append("apparmor=unconfined")
        out: dict[str, Any] = {"security_opt": opts} if opts else {}
        if self.proc == "unmasked":
            out["unmask_proc"] = True
        if self.add_capabilities:
            out["cap_add"] = list(self.add_capabilities)
        if self.privileged:
            out["privileged"] = True
        return out

    def k8s_security_context(self) -> dict[str, Any]:
        """The container ``securityContext`` (Kubernetes) granting the same."""
        caps: dict[str, Any] = {"drop": ["ALL"]}
        if self.add_capabilities:
            caps["add"] = list(self.add_capabilities)
        ctx: dict[str, Any] = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                               "allowPrivilegeEscalation": self.privileged, "capabilities": caps}
        ctx["seccompProfile"] = {
            "runtime-default": {"type": "RuntimeDefault"}, "unconfined": {"type": "Unconfined"},
            "coderforge-sandbox": {"type": "Localhost", "localhostProfile": f"profiles/{SECCOMP_PROFILE_NAME}"},
        }[self.seccomp]
        if self.proc == "unmasked":
            ctx["procMount"] = "Unmasked"
        if self.apparmor == "unconfined":
            ctx["appArmorProfile"] = {"type": "Unconfined"}
        if self.privileged:
            ctx["privileged"] = True
        return ctx

    def describe(self) -> str:
        parts = [f"seccomp {self.seccomp}" + "".join(f" -{c}" for c in self.seccomp_deny_also), f"/proc {self.proc}"]
        parts += [f"+{c}" for c in self.add_capabilities]
        if self.apparmor != "runtime-default":
            parts.append(f"apparmor {self.apparmor}")
        if self.privileged:
            parts.append("privileged")
        return ", ".join(parts)


CANDIDATES: tuple[Privileges, ...] = (
    Privileges("none"),
    Privileges("unmasked-proc", proc="unmasked"),
    Privileges("sandbox-seccomp", seccomp="coderforge-sandbox"),
    Privileges("unconfined-seccomp", seccomp="unconfined"),
    Privileges("sandbox-seccomp+unmasked-proc", seccomp="coderforge-sandbox", proc="unmasked"),
    Privileges("unconfined-seccomp+unmasked-proc", seccomp="unconfined", proc="unmasked"),
    Privileges("cap-sys-admin", add_capabilities=("SYS_ADMIN",)),
    Privileges("cap-sys-admin+unmasked-proc", proc="unmasked", add_capabilities=("SYS_ADMIN",)),
    Privileges("privileged", privileged=True),
)
CANDIDATE_BY_NAME = {p.name: p for p in CANDIDATES}
# The least set under which the sandbox isolates in a container (measured: tests/containers).
DOCKER_SANDBOX = CANDIDATE_BY_NAME["sandbox-seccomp+unmasked-proc"]


def needs_sandbox(step: str) -> bool:
    """Does ``step`` (a step of the step table) run untrusted code in the sandbox?"""
    from coderforge.steps.table import STEP_BY_NAME

    s = STEP_BY_NAME.get(step)
    return s is not None and any(sec in s.sections for sec in SANDBOX_SECTIONS)


def check_in_container(client, image: str, privileges: Privileges, labels: dict[str, str],
                       timeout_s: float = 180) -> dict[str, Any]:
    """``coderforge sandbox check`` in ``image`` under ``privileges``: its JSON report (plus ``exit``)."""
    from coderforge.images.containers import run_container

    code, out, err = run_container(client, image, ["coderforge", "sandbox", "check"], labels=labels,
                                   timeout_s=timeout_s, **privileges.run_args())
    start = out.find("{")
    try:
        report = json.loads(out[start:]) if start >= 0 else {}
    except ValueError:
        report = {}
    return {"exit": code, **report} if report else {"exit": code, "isolated": False, "reason": (out + err)[-500:]}


def measure(client, image: str, labels: dict[str, str],
            candidates: tuple[Privileges, ...] = CANDIDATES) -> list[dict[str, Any]]:
    """Run the check under each candidate; one row per candidate (name, what it grants, isolated, reason)."""
    rows = []
    for p in candidates:
        try:
            r = check_in_container(client, image, p, labels)
        except Exception as exc:  # noqa: BLE001 - a runtime that refuses the settings is a result too
            r = {"isolated": False, "reason": f"container refused: {exc}"}
        # isolated: the probe (a fresh init) succeeded AND a real run (the warm zygote's job) was confined
        rows.append({"name": p.name, "grants": p.describe(),
                     "isolated": bool(r.get("isolated")) and r.get("network_blocked") is True,
                     "probe": bool(r.get("isolated")), "network_blocked": r.get("network_blocked"),
                     "reason": r.get("reason", "")[:300]})
    return rows
