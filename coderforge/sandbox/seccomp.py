"""The seccomp filter of sandboxed runs: a classic-BPF deny-list over the kernel's riskiest interfaces,
built here on the host (no libseccomp) and handed to the init (:mod:`coderforge.sandbox.nsinit`), which
installs it in each step's process after ``no_new_privs``.

The namespaces and the throw-away uid already make most of these calls fail (no capabilities); the
filter removes them as kernel attack surface altogether: new user namespaces (where an unprivileged
process gains capabilities), ptrace and cross-process memory access, keyrings, eBPF, perf, userfaultfd,
io_uring, the mount API, module/kexec/reboot/clock/hostname calls, 32-bit and x32 entry points, and
socket families other than unix/inet/inet6 (netlink, packet, vsock, alg ...).
"""

from __future__ import annotations

import platform
import struct
from functools import lru_cache

_SECCOMP_ARCH = {"x86_64": 0xC000003E}  # AUDIT_ARCH_X86_64; other architectures: no filter (reported)
_X86_64_EPERM = {
    "ptrace": 101, "syslog": 103, "adjtimex": 159, "chroot": 161, "acct": 163,
    "settimeofday": 164, "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169,
    "sethostname": 170, "setdomainname": 171, "iopl": 172, "ioperm": 173, "init_module": 175,
    "delete_module": 176, "quotactl": 179, "lookup_dcookie": 212, "clock_settime": 227, "kexec_load": 246,
    "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272, "perf_event_open": 298,
    "name_to_handle_at": 303, "open_by_handle_at": 304, "clock_adjtime": 305, "setns": 308,
    "process_vm_readv": 310, "process_vm_writev": 311, "finit_module": 313, "kexec_file_load": 320,
    "bpf": 321, "userfaultfd": 323, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
    "fsmount": 432, "fspick": 433, "mount_setattr": 442, "pivot_root": 155, "vhangup": 153,
}
# ENOSYS (as if the kernel lacked them): callers fall back (glibc's clone3 → clone, libuv's io_uring → epoll)
_X86_64_ENOSYS = {"io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "clone3": 435}
_X86_64_SOCKET, _X86_64_CLONE = 41, 56
_ALLOWED_FAMILIES = (1, 2, 10)  # AF_UNIX, AF_INET, AF_INET6
_CLONE_NS_FLAGS = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
_RET_ALLOW, _RET_ERRNO, _RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
_EPERM, _ENOSYS, _EAFNOSUPPORT = 1, 38, 97


def seccomp_filter(machine=None):
    """The filter program (packed ``struct sock_filter`` array) for this machine, or None where we have
    no syscall table for the architecture."""
    machine = machine or platform.machine()
    arch = _SECCOMP_ARCH.get(machine)
    if arch is None:
        return None
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ/JGE/JSET|K, BPF_RET|K
    prog = []  # (code, jump-if-true label, jump-if-false label, k); None = next instruction

    prog.append((ld, None, None, 4))  # seccomp_data.arch
    prog.append((jeq, None, "kill", arch))
    prog.append((ld, None, None, 0))  # seccomp_data.nr
    prog.append((jge, "enosys", None, 0x40000000))  # x32 ABI numbers
    for nr in sorted(_X86_64_ENOSYS.values()):
        prog.append((jeq, "enosys", None, nr))
    for nr in sorted(_X86_64_EPERM.values()):
        prog.append((jeq, "eperm", None, nr))
    prog.append((jeq, "socket", None, _X86_64_SOCKET))
    prog.append((jeq, "clone", None, _X86_64_CLONE))
    prog.append((ret, None, None, _RET_ALLOW))
    labels = {"socket": len(prog)}
    prog.append((ld, None, None, 16))  # low 32 bits of args[0]: the address family
    for fam in _ALLOWED_FAMILIES:
        prog.append((jeq, "allow", None, fam))
    prog.append((ret, None, None, _RET_ERRNO | _EAFNOSUPPORT))
    labels["clone"] = len(prog)
    prog.append((ld, None, None, 16))  # low 32 bits of args[0]: the clone flags
    prog.append((jset, "eperm", None, _CLONE_NS_FLAGS))
    for name, k in (("allow", _RET_ALLOW), ("eperm", _RET_ERRNO | _EPERM), ("enosys", _RET_ERRNO | _ENOSYS),
                    ("kill", _RET_KILL_PROCESS)):
        labels[name] = len(prog)
        prog.append((ret, None, None, k))
    out = []
    for i, (code, jt, jf, k) in enumerate(prog):
        rel = [0 if lab is None else labels[lab] - i - 1 for lab in (jt, jf)]
        if any(not 0 <= r < 256 for r in rel):
            raise ValueError("seccomp filter jump out of range")
        out.append(struct.pack("=HBBI", code, rel[0], rel[1], k))
    return b"".join(out)


@lru_cache(maxsize=1)
def filter_hex() -> str | None:
    """This machine's filter program as hex, for the init's JSON configuration (None: no filter)."""
    raw = seccomp_filter()
    return None if raw is None else raw.hex()


def seccomp_summary() -> str:
    """What the filter does on this machine, in words."""
    if seccomp_filter() is None:
        return f"none: no syscall table for {platform.machine()} (namespaces, uid and rlimits still apply)"
    return (f"{platform.machine()}: {len(_X86_64_EPERM)} syscalls denied (EPERM), "
            f"{len(_X86_64_ENOSYS)} reported absent (ENOSYS: io_uring, clone3), namespace flags of clone "
            "denied, socket families other than unix/inet/inet6 refused, other ABIs killed")
