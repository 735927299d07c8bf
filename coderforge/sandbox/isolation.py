"""Linux isolation for sandboxed programs: namespaces, the run's root, and starting the init that
creates them.

Every run starts :mod:`coderforge.sandbox.nsinit` (``python -I -S``, standard library only), which
creates new mount, network, PID, IPC and UTS namespaces (and a user namespace when we are not
root), becomes PID 1 of the new PID namespace and switches into a root of its own: a fresh tmpfs
holding only the allow-list of :mod:`~coderforge.sandbox.rootfs` (the runtimes, their libraries and
a few system files, read-only), a fresh ``/proc``, a size-capped scratch tmpfs on ``/tmp`` and its own
``/dev/shm``. It then runs the program as a throw-away uid (:mod:`~coderforge.sandbox.uids`, when we
are root) with ``no_new_privs``, no groups, an empty environment, rlimits
(:mod:`~coderforge.sandbox.limits`) and a seccomp filter (:mod:`~coderforge.sandbox.seccomp`). Where
the node lets us create one, each run also gets its own memory (+ pids) cgroup bounding the resident
memory of the whole job (:mod:`~coderforge.sandbox.cgroups`). When PID 1 exits the kernel kills
everything left in the namespace, so daemons cannot outlive the run.

A warm init (:class:`Zygote`) forks one job per request, sparing each job the interpreter's start-up and
the building of the root: the zygote builds it once, in a mount namespace of its own, and each job's
mount namespace is a copy of that one (the staging directory and the cgroups reach the job as
descriptors). A fresh init (``CODERFORGE_SANDBOX_ZYGOTE=0``, and the probe) builds it for its one job.
If the namespaces cannot be created here, :func:`probe` says why and the sandbox refuses to run
code unless the caller explicitly allows unisolated runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
from pathlib import Path

from coderforge.sandbox.allowlist import probe_argv, root_plan, toolchains
from coderforge.sandbox.host import SYSTEM_PATH, init_python, is_root, private_host_paths
from coderforge.sandbox.limits import Limits
from coderforge.sandbox.rootfs import etc_files
from coderforge.sandbox.seccomp import filter_hex
from coderforge.sandbox.uids import UID_BASE, UID_SLOTS

INIT = str(Path(__file__).with_name("nsinit.py"))
SIMULATE_ENV = "CODERFORGE_SANDBOX_SIMULATE_NO_NAMESPACES"
COMPAT_ENV = "CODERFORGE_SANDBOX_COMPAT"  # chroot + a remount per mount: where pivot_root/mount_setattr fail


def root_template(hide: tuple[str, ...] = ()) -> dict:
    """The run's root (the allow-list of :mod:`.rootfs`, with the private paths inside it covered), as the
    init builds it: once per zygote for all its jobs, or once per job by a fresh init."""
    key = (toolchains(), hide, bool(os.environ.get(COMPAT_ENV)), is_root())
    with _templates_lock:
        if key not in _templates:
            _templates[key] = {**root_plan().config(hide), "files": etc_files(), "compat": key[2],
                               "userns": not key[3]}
        return _templates[key]


_templates: dict[tuple, dict] = {}
_templates_lock = threading.Lock()


def zygote_root(root: dict | None) -> dict | None:
    """The root a zygote builds once for all its jobs: not where chroot (``compat``) meets a user namespace,
    as a chrooted process may not create the user namespace of each job (those jobs build their own)."""
    return None if root is None or (root["compat"] and root["userns"]) else root


def init_config(stage: str, steps: list[dict], *, uid: int | None, scratch_mb: int, hide: list[str],
                isolate: bool, status_fd: int) -> dict:
    """The init's configuration for one job (JSON): its root (``root``: :func:`root_template` for the
    private paths of this host; ``hide``: the further ones this job covers), as whom it runs, the steps."""
    env = {"PATH": SYSTEM_PATH, "HOME": "/tmp" if isolate else stage, "TMPDIR": "/tmp" if isolate else stage,
           "LANG": "C.UTF-8"}
    root, extra = None, []
    if isolate:
        root = root_template(tuple(private_host_paths()))
        extra = [h for h in root_plan().config(tuple(hide))["hide"] if h not in root["hide"]]
    return {
        "stage": stage, "uid": uid, "scratch_mb": scratch_mb, "root": root, "hide": extra,
        "isolate": isolate, "userns": isolate and not is_root(), "status_fd": status_fd,
        "simulate_unshare_failure": bool(os.environ.get(SIMULATE_ENV)),
        "seccomp": filter_hex(),
        "steps": [{**s, "env": env} for s in steps],
    }


def init_command(cfg: dict) -> list[str]:
    return [init_python(), "-I", "-S", INIT, json.dumps(cfg)]


KEEP = object()


class Zygote:
    """A warm ``nsinit.py --serve`` process that forks one job per request (see ``nsinit.serve``):
    jobs skip the init interpreter's start-up, and start inside the root it built once (``root``: a
    :func:`root_template`; None for unisolated jobs). One per host process and root, started on first
    use; it exits when the host process closes the socket (or dies)."""

    _lock = threading.Lock()
    _instance: Zygote | None = None

    def __init__(self, root: dict | None):
        import socket

        self.sock, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.python = init_python()  # the root mounts this interpreter's prefix: a new one needs a new zygote
        self.root = root
        argv = [self.python, "-I", "-S", INIT, "--serve", str(child.fileno())]
        self.proc = subprocess.Popen(argv + ([json.dumps(root)] if root else []),
                                     pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env={"PATH": SYSTEM_PATH}, cwd="/", start_new_session=True)
        child.close()
        self.send_lock = threading.Lock()

    @classmethod
    def get(cls, root: dict | None | object = KEEP) -> Zygote:
        """The zygote for jobs in ``root`` (by default: the one running, whatever its root)."""
        with cls._lock:
            z = cls._instance
            if root is KEEP:
                root = z.root if z is not None else None
            if z is None or z.proc.poll() is not None or z.pid_owner != os.getpid() or z.python != init_python() \
                    or z.root is not root:
                if cls._instance is None:
                    import atexit

                    atexit.register(cls.shutdown)
                elif z.pid_owner == os.getpid():
                    z.sock.close()  # another interpreter or root now: the old zygote exits on EOF
                z = cls._instance = cls(root)
                z.pid_owner = os.getpid()
            return z

    def submit(self, cfg: dict, fds: list[int]) -> None:
        import socket

        with self.send_lock:
            socket.send_fds(self.sock, [json.dumps(cfg).encode()], fds)

    @classmethod
    def shutdown(cls) -> None:
        with cls._lock:
            z, cls._instance = cls._instance, None
        if z is not None:
            z.sock.close()
            try:
                z.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                z.proc.kill()


def use_zygote() -> bool:
    return os.environ.get("CODERFORGE_SANDBOX_ZYGOTE", "1") != "0"


_probe_cache: dict[tuple, tuple[bool, str]] = {}
_probe_lock = threading.Lock()


def probe() -> tuple[bool, str]:
    """(available, reason): can the full namespace setup run a trivial program here? Cached per uid
    and simulation switch."""
    key = (os.geteuid(), bool(os.environ.get(SIMULATE_ENV)))
    with _probe_lock:
        if key in _probe_cache:
            return _probe_cache[key]
        stage = tempfile.mkdtemp(prefix="coderforge-sbx-probe-")
        r, w = os.pipe()
        try:
            lim = Limits(cpu=5, as_=256 << 20, nproc=16, fsize=1 << 20, nofile=64)
            cfg = init_config(stage, [{"phase": "run", "argv": probe_argv(), "limits": lim.as_dict()}],
                              uid=UID_BASE + UID_SLOTS if is_root() else None, scratch_mb=1, hide=[],
                              isolate=True, status_fd=w)
            try:
                proc = subprocess.run(init_command(cfg), capture_output=True, text=True, timeout=30,
                                      env={"PATH": SYSTEM_PATH}, stdin=subprocess.DEVNULL, pass_fds=(w,))
                os.close(w)
                w = -1
                raw = os.read(r, 65536).decode() or "{}"
                status = json.loads(raw)
                ok = proc.returncode == 0 and status.get("exit") == 0
                why = status.get("error") or proc.stderr.strip()[-400:]
                reason = "" if ok else f"namespace setup failed: {why} (exit {proc.returncode})"
            except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
                ok, reason = False, f"namespace setup failed: {exc}"
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)
            os.rmdir(stage) if os.path.isdir(stage) else None
        _probe_cache[key] = (ok, reason)
        return ok, reason


def reset_probe() -> None:
    with _probe_lock:
        _probe_cache.clear()
