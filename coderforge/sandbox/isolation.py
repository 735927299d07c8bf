"""Linux isolation for sandboxed programs: namespaces, a throw-away uid, a private scratch tmpfs.

Every run starts :mod:`coderforge.sandbox._init` (``python -I -S``, standard library only), which
creates new mount, network, PID, IPC and UTS namespaces (and a user namespace when we are not
root), becomes PID 1 of the new PID namespace, mounts a fresh ``/proc`` and a size-capped tmpfs
scratch on ``/tmp``, covers the other world-writable directories and private host paths, then runs
the program as a throw-away uid (when we are root) with ``no_new_privs``, no groups, an empty
environment, rlimits and a seccomp filter (new namespaces, ptrace, keyrings, eBPF, perf, io_uring,
userfaultfd, the mount API and exotic socket families refused; see ``_init.seccomp_filter``). Where
the node lets us create one, each run also gets its own memory (+ pids) cgroup bounding the resident
memory of the whole job (:class:`Cgroup`); rlimits bound each process's address space either way. When PID 1 exits the kernel kills everything left in the namespace, so
daemons cannot outlive the run.

If the namespaces cannot be created here, ``probe()`` says why and the sandbox refuses to run
code unless the caller explicitly allows unisolated runs.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

UID_BASE = 1_600_000
UID_SLOTS = 4096
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
LOCK_DIR = Path("/tmp/coderforge-sandbox-uids")
INIT = str(Path(__file__).with_name("_init.py"))
SIMULATE_ENV = "CODERFORGE_SANDBOX_SIMULATE_NO_NAMESPACES"

DEFAULT_HIDE = ("/root", "/home", "/run/secrets", "/var/run/secrets", "/mnt", "/media", "/srv", "/sys")
WORLD_WRITABLE = ("/var/tmp", "/run/lock", "/dev/mqueue")  # covered by tiny tmpfs the run cannot write
RUN_OWNED = ("/dev/shm",)  # a fresh capped tmpfs owned by the run's uid


def is_root() -> bool:
    return os.geteuid() == 0


def init_python() -> str:
    """The interpreter that runs ``_init.py`` (standard library only): the system Python when there
    is one (it starts faster than a virtualenv's and stays visible inside the sandbox, so Python
    programs can run in the init's forked process), else the running one."""
    from coderforge.sandbox.languages import system_python

    py = system_python()
    return py if py and os.access(py, os.X_OK) else sys.executable


def seccomp_summary() -> str:
    """What the seccomp filter of :mod:`coderforge.sandbox._init` does on this machine, in words."""
    import platform

    from coderforge.sandbox import _init

    if _init.seccomp_filter() is None:
        return f"none: no syscall table for {platform.machine()} (namespaces, uid and rlimits still apply)"
    return (f"{platform.machine()}: {len(_init._X86_64_EPERM)} syscalls denied (EPERM), "
            f"{len(_init._X86_64_ENOSYS)} reported absent (ENOSYS: io_uring, clone3), namespace flags of clone "
            "denied, socket families other than unix/inet/inet6 refused, other ABIs killed")


def private_host_paths() -> list[str]:
    """Paths hidden inside the sandbox: homes, mounted secrets, and this checkout / virtualenv."""
    paths = list(DEFAULT_HIDE)
    pkg_root = Path(__file__).resolve().parents[2]
    for p in (pkg_root, Path(sys.prefix).resolve()):
        if str(p) not in ("/", "/usr", "/usr/local") and len(p.parts) > 1 and str(p) not in paths:
            paths.append(str(p))
    return paths


@dataclass
class Limits:
    cpu: int  # seconds (soft; SIGKILL one second later)
    as_: int  # bytes of address space
    nproc: int
    fsize: int  # bytes per file
    nofile: int

    def as_dict(self) -> dict:
        d = asdict(self)
        d["as"] = d.pop("as_")
        return d


class UidLease:
    """A uid reserved for one run (an flock'ed file per uid), so concurrent runs, in this process
    or in others, never share a uid: RLIMIT_NPROC counts per uid, and a run cannot signal or read
    another run's processes."""

    def __init__(self):
        LOCK_DIR.mkdir(mode=0o700, exist_ok=True)
        start = (os.getpid() * 7919 + threading.get_ident()) % UID_SLOTS
        for i in range(UID_SLOTS):
            slot = (start + i) % UID_SLOTS
            fd = os.open(LOCK_DIR / f"{slot}.lock", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.fd, self.uid = fd, UID_BASE + slot
            return
        raise RuntimeError("no free sandbox uid")

    def release(self, sweep: bool = True) -> None:
        """Free the uid; ``sweep``: first SIGKILL anything still running as it (a /proc scan; skipped when
        the run's cgroup, which its processes cannot leave, has already been emptied)."""
        if sweep:
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


# ---- per-run cgroups: resident memory (and process count) of the whole job ------------------------------
CGROUP_ROOT = Path("/sys/fs/cgroup")
_cgroup_cache: dict[str, object] = {}
_cgroup_seq = iter(range(1 << 62))


def _own_cgroups(root: Path, proc_self_cgroup: str) -> dict[str, Path]:
    """This process's cgroup directories: ``{"v2": dir}`` on a unified hierarchy, else the v1
    ``memory``/``pids`` hierarchies that are mounted under ``root``."""
    lines = [ln.split(":", 2) for ln in proc_self_cgroup.splitlines() if ln.count(":") >= 2]
    if (root / "cgroup.controllers").exists():
        for _, ctrls, path in lines:
            if ctrls == "":
                return {"v2": root / path.lstrip("/")}
        return {}
    out = {}
    for _, ctrls, path in lines:
        for c in ctrls.split(","):
            if c in ("memory", "pids") and (root / c).is_dir():
                out[c] = root / c / path.lstrip("/")
    return out


class Cgroup:
    """A cgroup made for one run under this process's own cgroup: ``memory`` bounds the resident
    memory of the whole job (every process, and the scratch files it writes, since tmpfs pages are
    charged to their writer), ``pids`` its process count. cgroup v2 needs the parent to delegate the
    controllers (``memory`` in its ``cgroup.subtree_control``); v1 needs writable hierarchies (root)."""

    def __init__(self, version: str, dirs: dict[str, Path]):
        self.version, self.dirs = version, dirs

    @classmethod
    def create(cls, memory_bytes: int, pids: int, root: Path | None = None,
               proc_self_cgroup: str | None = None) -> Cgroup | None:
        root = root or CGROUP_ROOT
        if proc_self_cgroup is None:
            try:
                proc_self_cgroup = Path("/proc/self/cgroup").read_text()
            except OSError:
                return None
        own = _own_cgroups(root, proc_self_cgroup)
        name = f"coderforge-sbx-{os.getpid()}-{next(_cgroup_seq)}"
        made: dict[str, Path] = {}
        try:
            if "v2" in own:
                parent = own["v2"]
                ctrls = (parent / "cgroup.subtree_control").read_text().split()
                if "memory" not in ctrls:
                    return None
                d = parent / name
                d.mkdir()
                made["v2"] = d
                (d / "memory.max").write_text(str(memory_bytes))
                if (d / "memory.swap.max").exists():
                    (d / "memory.swap.max").write_text("0")
                if "pids" in ctrls:
                    (d / "pids.max").write_text(str(pids))
                return cls("v2", made)
            if "memory" not in own:
                return None
            d = own["memory"] / name
            d.mkdir()
            made["memory"] = d
            (d / "memory.limit_in_bytes").write_text(str(memory_bytes))
            try:  # no swapping around the limit (only where swap accounting is on)
                (d / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
            except OSError:
                pass
            # v1 has no pids cgroup here on purpose: joining each hierarchy is a separate migration (up
            # to ~16 ms each when it waits for an RCU grace period), and RLIMIT_NPROC on the run's own
            # uid already bounds its processes.
            return cls("v1", made)
        except OSError:
            cls("v1", made).release()
            return None

    def set_limits(self, memory_bytes: int, pids: int) -> None:
        """(Re)apply the limits for the next run and start its counters (a pooled cgroup is reused)."""
        if self.version == "v2":
            d = self.dirs["v2"]
            (d / "memory.max").write_text(str(memory_bytes))
            if (d / "pids.max").exists():
                (d / "pids.max").write_text(str(pids))
        else:
            d = self.dirs["memory"]
            try:  # memsw must stay >= the memory limit: order the two writes by direction
                (d / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
                (d / "memory.limit_in_bytes").write_text(str(memory_bytes))
            except OSError:
                (d / "memory.limit_in_bytes").write_text(str(memory_bytes))
                try:
                    (d / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
                except OSError:
                    pass
            try:
                (d / "memory.max_usage_in_bytes").write_text("0")  # reset the peak
            except OSError:
                pass
            if "pids" in self.dirs:
                (self.dirs["pids"] / "pids.max").write_text(str(pids))
        self.oom_base = self._oom_total()
        self.peak_base_valid = self.version == "v1" or not getattr(self, "used", False)
        self.used = True

    def kill_all(self) -> int:
        import signal

        killed = 0
        for d in self.dirs.values():
            try:
                pids = [int(x) for x in (d / "cgroup.procs").read_text().split()]
            except OSError:
                pids = []
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except (ProcessLookupError, PermissionError):
                    pass
        return killed

    @property
    def procs_files(self) -> list[str]:
        """``cgroup.procs`` of every hierarchy: the job's first process writes its pid to each."""
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    def _mem_dir(self) -> Path:
        return self.dirs.get("v2") or self.dirs["memory"]

    def oom_kills(self) -> int:
        """Processes the kernel's OOM killer ended in this cgroup since :meth:`set_limits`."""
        return self._oom_total() - getattr(self, "oom_base", 0)

    def _oom_total(self) -> int:
        name = "memory.events" if self.version == "v2" else "memory.oom_control"
        try:
            for line in (self._mem_dir() / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def peak_bytes(self) -> int | None:
        if not getattr(self, "peak_base_valid", True):
            return None  # v2's memory.peak cannot be reset on older kernels: no peak for a reused cgroup
        name = "memory.peak" if self.version == "v2" else "memory.max_usage_in_bytes"
        try:
            return int((self._mem_dir() / name).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def release(self) -> None:
        """Kill whatever is left in the cgroup and remove it."""
        import time

        for d in self.dirs.values():
            for _ in range(50):
                self.kill_all()
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


class CgroupPool:
    """Idle per-run cgroups of this process, reused: making and removing a memory cgroup per run costs
    ~15 ms here (the removal waits for the namespace's processes to leave, and a new memcg starts cold),
    reusing one ~1 ms. Leftover processes are killed when a cgroup comes back; the pool is emptied at exit,
    and cgroups left by dead processes are removed on first use."""

    _lock = threading.Lock()
    _idle: list[Cgroup] = []
    _registered = False
    _owner = os.getpid()

    @classmethod
    def acquire(cls, memory_bytes: int, pids: int) -> Cgroup | None:
        with cls._lock:
            if cls._owner != os.getpid():  # a forked child: the parent's idle cgroups stay the parent's
                cls._idle, cls._owner, cls._registered = [], os.getpid(), False
            if not cls._registered:
                import atexit

                atexit.register(cls.drain)
                cls._registered = True
                _remove_stale_cgroups()
            cg = cls._idle.pop() if cls._idle else None
        if cg is None:
            cg = Cgroup.create(memory_bytes, pids)
            if cg is None:
                return None
        try:
            cg.set_limits(memory_bytes, pids)
        except OSError:  # e.g. usage that cannot be reclaimed under a lower limit: start a fresh one
            cg.release()
            cg = Cgroup.create(memory_bytes, pids)
            if cg is None:
                return None
            cg.set_limits(memory_bytes, pids)
        return cg

    @classmethod
    def give_back(cls, cg: Cgroup) -> None:
        cg.kill_all()
        with cls._lock:
            if cls._owner == os.getpid():
                cls._idle.append(cg)
                return
        cg.release()

    @classmethod
    def drain(cls) -> None:
        with cls._lock:
            idle, cls._idle = cls._idle, []
        for cg in idle:
            cg.release()


def _remove_stale_cgroups() -> None:
    """Remove ``coderforge-sbx-PID-N`` cgroups whose process is gone (a host killed before its atexit)."""
    try:
        own = _own_cgroups(CGROUP_ROOT, Path("/proc/self/cgroup").read_text())
    except OSError:
        return
    for parent in own.values():
        try:
            children = list(parent.glob("coderforge-sbx-*-*"))
        except OSError:
            continue
        for d in children:
            try:
                pid = int(d.name.split("-")[2])
            except (IndexError, ValueError):
                continue
            if pid != os.getpid() and not Path(f"/proc/{pid}").exists():
                Cgroup("v1", {"x": d}).release()


def cgroup_support() -> str:
    """Whether runs get a memory cgroup on this node, in words (probed once by creating one)."""
    if "support" not in _cgroup_cache:
        cg = Cgroup.create(64 << 20, 64)
        if cg is None:
            _cgroup_cache["support"] = ("none: no writable cgroup with a memory controller here (resident "
                                        "memory is bounded by the address-space rlimit only)")
        else:
            _cgroup_cache["support"] = (f"{cg.version}: per-run memory{' and pids' if cg.version == 'v2' else ''} "
                                        "cgroup")
            cg.release()
    return str(_cgroup_cache["support"])


def init_config(stage: str, steps: list[dict], *, uid: int | None, scratch_mb: int, hide: list[str],
                isolate: bool, status_fd: int) -> dict:
    env = {"PATH": SYSTEM_PATH, "HOME": "/tmp" if isolate else stage, "TMPDIR": "/tmp" if isolate else stage,
           "LANG": "C.UTF-8"}
    return {
        "stage": stage, "uid": uid, "scratch_mb": scratch_mb, "hide": hide, "world_writable": list(WORLD_WRITABLE),
        "run_owned": list(RUN_OWNED),
        "isolate": isolate, "userns": isolate and not is_root(), "status_fd": status_fd,
        "simulate_unshare_failure": bool(os.environ.get(SIMULATE_ENV)),
        "steps": [{**s, "env": env} for s in steps],
    }


def init_command(cfg: dict) -> list[str]:
    return [init_python(), "-I", "-S", INIT, json.dumps(cfg)]


class Zygote:
    """A warm ``_init.py --serve`` process that forks one job per request (see ``_init.serve``):
    jobs skip the init interpreter's start-up. One per host process, started on first use; it
    exits when the host process closes the socket (or dies)."""

    _lock = threading.Lock()
    _instance: Zygote | None = None

    def __init__(self):
        import socket

        self.sock, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = subprocess.Popen([init_python(), "-I", "-S", INIT, "--serve", str(child.fileno())],
                                     pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env={"PATH": SYSTEM_PATH}, cwd="/", start_new_session=True)
        child.close()
        self.send_lock = threading.Lock()

    @classmethod
    def get(cls) -> Zygote:
        with cls._lock:
            z = cls._instance
            if z is None or z.proc.poll() is not None or z.pid_owner != os.getpid():
                if cls._instance is None:
                    import atexit

                    atexit.register(cls.shutdown)
                z = cls._instance = cls()
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


def use_cgroups() -> bool:
    """Per-run cgroups where the node allows them (``CODERFORGE_SANDBOX_CGROUPS=0`` turns them off)."""
    return os.environ.get("CODERFORGE_SANDBOX_CGROUPS", "1") != "0"


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
            true = "/bin/true" if os.path.exists("/bin/true") else "/usr/bin/true"
            cfg = init_config(stage, [{"phase": "run", "argv": [true], "limits": lim.as_dict()}],
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
                reason = "" if ok else (f"namespace setup failed: {status.get('error') or proc.stderr.strip()[-400:]}"
                                        f" (exit {proc.returncode})")
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
