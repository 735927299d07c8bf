"""Per-run cgroups: the resident memory (and process count) of a whole job, every process of it and the
scratch files it writes. Used where the node lets us create one (cgroup v2 with the ``memory`` controller
delegated, or writable v1 hierarchies); rlimits bound each process's address space either way."""

from __future__ import annotations

import os
import threading
from pathlib import Path

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

    def kill_all(self, wait_s: float = 0.0) -> int:
        """SIGKILL whatever is left in the cgroup and wait (up to ``wait_s``) until it is gone (a process
        being killed stays listed until it has exited)."""
        import signal
        import time

        killed, deadline = 0, time.monotonic() + wait_s
        while True:
            pids = []
            for d in self.dirs.values():
                try:
                    pids += [int(x) for x in (d / "cgroup.procs").read_text().split()]
                except OSError:
                    pass
            for pid in set(pids):
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except (ProcessLookupError, PermissionError):
                    pass
            if not pids or time.monotonic() >= deadline:
                return killed
            time.sleep(0.005)

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
    def give_back(cls, cg: Cgroup, wait_s: float = 0.0) -> None:
        """Empty the cgroup (waiting up to ``wait_s`` for what was killed to be gone) and keep it for reuse."""
        cg.kill_all(wait_s)
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
            pids = " and pids" if cg.version == "v2" else ""
            _cgroup_cache["support"] = f"{cg.version}: per-run memory{pids} cgroup"
            cg.release()
    return str(_cgroup_cache["support"])


def use_cgroups() -> bool:
    """Per-run cgroups where the node allows them (``CODERFORGE_SANDBOX_CGROUPS=0`` turns them off)."""
    return os.environ.get("CODERFORGE_SANDBOX_CGROUPS", "1") != "0"
