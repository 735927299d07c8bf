"""Linux isolation for sandboxed programs: namespaces, a throw-away uid, a private scratch tmpfs.

Every run goes through ``unshare`` (util-linux): new network, PID, mount (and, when we are not
root, user) namespaces. Inside, a ``sh`` running as PID 1 of the new PID namespace

* mounts a size-capped tmpfs on ``/tmp`` (the scratch directory: the program's cwd, ``HOME`` and
  ``TMPDIR``, the only place it can write), copies the program in, and puts small tmpfs mounts over
  the other world-writable directories and read-only empty ones over private host paths
  (home directories, mounted secrets, this checkout and its virtualenv);
* drops to a throw-away uid reserved for this run (when we are root), with ``no_new_privs``, no
  supplementary groups and an empty environment, under ``prlimit`` limits (CPU, address space,
  processes, file size, open files);
* waits for the program and exits with its status. When PID 1 exits the kernel kills everything
  left in the namespace, so daemons cannot outlive the run.

If the namespaces cannot be created here, ``probe()`` says why and the sandbox refuses to run
code unless the caller explicitly allows unisolated runs.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

UID_BASE = 1_600_000
UID_SLOTS = 4096
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
LOCK_DIR = Path("/tmp/coderforge-sandbox-uids")

DEFAULT_HIDE = ("/root", "/home", "/run/secrets", "/var/run/secrets", "/mnt", "/media", "/srv")
WORLD_WRITABLE = ("/var/tmp", "/run/lock", "/dev/shm", "/dev/mqueue")


def unshare_binary() -> str:
    """``CODERFORGE_SANDBOX_UNSHARE`` overrides the util-linux ``unshare`` (tests point it at a
    program that fails, to check that the sandbox then refuses)."""
    return os.environ.get("CODERFORGE_SANDBOX_UNSHARE") or shutil.which("unshare", path=SYSTEM_PATH) or "unshare"


def is_root() -> bool:
    return os.geteuid() == 0


def private_host_paths() -> list[str]:
    """Paths hidden inside the sandbox: homes, secrets, and this checkout / virtualenv."""
    paths = list(DEFAULT_HIDE)
    pkg_root = Path(__file__).resolve().parents[2]
    for p in (pkg_root, Path(sys.prefix).resolve()):
        if str(p) not in ("/", "/usr", "/usr/local") and len(p.parts) > 1:
            paths.append(str(p))
    return paths


@dataclass
class Limits:
    cpu_s: int
    memory_mb: int
    nproc: int
    fsize_mb: int
    nofile: int

    def prlimit(self) -> str:
        as_bytes = self.memory_mb * 1024 * 1024
        return (f"prlimit --cpu={self.cpu_s}:{self.cpu_s + 1} --as={as_bytes} --nproc={self.nproc} "
                f"--fsize={self.fsize_mb * 1024 * 1024} --nofile={self.nofile} --core=0 --")


class UidLease:
    """A uid reserved for one run (an flock'ed file per uid), so concurrent runs, in this process
    or in others, never share a uid: RLIMIT_NPROC counts per uid, and a run cannot signal or read
    another run's processes."""

    _local = threading.Lock()

    def __init__(self):
        LOCK_DIR.mkdir(mode=0o700, exist_ok=True)
        start = (os.getpid() * 7919 + threading.get_ident()) % UID_SLOTS
        for i in range(UID_SLOTS):
            slot = (start + i) % UID_SLOTS
            fd = os.open(LOCK_DIR / f"{slot}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.fd, self.uid = fd, UID_BASE + slot
            return
        raise RuntimeError("no free sandbox uid")

    def release(self) -> None:
        kill_uid(self.uid)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def kill_uid(uid: int) -> int:
    """SIGKILL any process still running as ``uid`` (belt and braces after PID-namespace teardown)."""
    killed = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid == uid:
                os.kill(int(entry), 9)
                killed += 1
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return killed


def inner_script(stage: str, lang_script: str, limits: Limits, compile_limits: Limits, *, uid: int | None,
                 scratch_mb: int, hide: list[str]) -> str:
    """The PID-1 shell script run inside the namespaces."""
    q = shlex.quote
    owner = f",uid={uid},gid={uid}" if uid is not None else ""
    lines = [
        f"cd {q(stage)} || exit 120",
        f"mount -t tmpfs -o size={scratch_mb}m,mode=0700,nosuid,nodev{owner} coderforge-scratch /tmp || exit 121",
        "cp -R -p . /tmp/ || exit 122",
    ]
    if uid is not None:
        lines.append(f"chown -R {uid}:{uid} /tmp || exit 123")
    for d in WORLD_WRITABLE:
        lines.append(f"[ -d {d} ] && {{ mount -t tmpfs -o size=1m,mode=0755,nosuid,nodev,noexec none {d} || exit 124; }}")
    for d in hide:
        lines.append(f"[ -d {q(d)} ] && {{ mount -t tmpfs -o size=4k,mode=0755,ro none {q(d)} || exit 125; }}")
    lines.append("cd /tmp || exit 126")
    drop = "setpriv --no-new-privs"
    if uid is not None:
        drop += f" --reuid={uid} --regid={uid} --clear-groups"
    env = (f"env -i PATH={SYSTEM_PATH} HOME=/tmp TMPDIR=/tmp LANG=C.UTF-8 "
           f"LIMITS={q(limits.prlimit())} CLIMITS={q(compile_limits.prlimit())}")
    lines.append(f"{drop} -- {env} sh -c {q(lang_script)}")
    lines.append("exit $?")
    return "\n".join(lines) + "\n"


def outer_command(script: str) -> list[str]:
    flags = ["--net", "--pid", "--fork", "--kill-child", "--mount", "--mount-proc", "--propagation", "private",
             "--ipc", "--uts"]
    if not is_root():
        flags = ["--user", "--map-root-user"] + flags
    return [unshare_binary(), *flags, "--", "/bin/sh", "-c", script]


_probe_cache: dict[tuple, tuple[bool, str]] = {}
_probe_lock = threading.Lock()


def probe() -> tuple[bool, str]:
    """(available, reason): can the full namespace setup run a trivial program here? Cached per
    ``unshare`` binary and uid."""
    key = (unshare_binary(), os.geteuid())
    with _probe_lock:
        if key in _probe_cache:
            return _probe_cache[key]
        import tempfile

        stage = tempfile.mkdtemp(prefix="coderforge-sbx-probe-")
        try:
            lim = Limits(cpu_s=5, memory_mb=256, nproc=16, fsize_mb=1, nofile=64)
            script = inner_script(stage, "test -w /tmp && exit 0 || exit 3", lim, lim,
                                  uid=UID_BASE + UID_SLOTS if is_root() else None, scratch_mb=1, hide=[])
            try:
                res = subprocess.run(outer_command(script), capture_output=True, text=True, timeout=30,
                                     env={"PATH": SYSTEM_PATH}, stdin=subprocess.DEVNULL)
                ok = res.returncode == 0
                reason = "" if ok else (f"namespace setup failed (exit {res.returncode}): "
                                        f"{(res.stderr or res.stdout).strip()[-400:]}")
            except (OSError, subprocess.TimeoutExpired) as exc:
                ok, reason = False, f"namespace setup failed: {exc}"
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        _probe_cache[key] = (ok, reason)
        return ok, reason


def reset_probe() -> None:
    with _probe_lock:
        _probe_cache.clear()
