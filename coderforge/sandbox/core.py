"""``run_program`` / ``run_many``: run untrusted programs and return verdicts.

Safe by default: a run needs the namespaces of :mod:`coderforge.sandbox.isolation`; where they
cannot be created it returns ``refused`` (saying why) unless ``allow_unisolated=True``, in which
case it still applies the resource limits, a fresh scratch cwd, its own session/process group and
an empty environment, and marks the verdict ``isolated=False``.
"""

from __future__ import annotations

import json
import math
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

from coderforge.sandbox import isolation
from coderforge.sandbox.isolation import Limits
from coderforge.sandbox.languages import get_language
from coderforge.sandbox.verdict import CRASHED, FAILED, OOM, REFUSED, Verdict, classify

MAX_OUTPUT = 64 * 1024
TAIL = 4 * 1024


class _Capture:
    """Keeps the first ``limit`` bytes and the last ``TAIL`` bytes of a stream, draining the rest."""

    def __init__(self, limit: int):
        self.limit = limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > TAIL:
                del self.tail[:-TAIL]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def raw(self) -> bytes:
        return bytes(self.head + self.tail)

    def text(self) -> str:
        head = self.head.decode("utf-8", "replace")
        if not self.tail:
            return head
        tail = self.tail.decode("utf-8", "replace")
        if self.truncated:
            skipped = self.total - len(self.head) - len(self.tail)
            return f"{head}\n...[{skipped} bytes truncated]...\n{tail}"
        return head + tail


def _safe_relpath(name: str) -> str:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise ValueError(f"file name {name!r} must be a relative path inside the scratch directory")
    return str(p)


def _limits(lang, timeout_s: float, memory_mb: int, fsize_mb: int, nofile: int, nproc: int | None) -> tuple:
    cpu = max(1, math.ceil(timeout_s))
    run = Limits(cpu=cpu, as_=(memory_mb + lang.as_extra_mb) << 20, nproc=nproc or lang.nproc,
                 fsize=fsize_mb << 20, nofile=nofile)
    comp = Limits(cpu=60, as_=max(2048, memory_mb + lang.as_extra_mb) << 20, nproc=max(256, run.nproc),
                  fsize=max(64, fsize_mb) << 20, nofile=max(256, nofile))
    return run, comp


def _cgroup_mb(lang, memory_mb: int, scratch_mb: int) -> int:
    """Resident-memory bound of a job's cgroup: the program's memory, its scratch files (tmpfs pages count
    against the cgroup that wrote them) and the init's own ~20 MB; compilers get at least 1 GB."""
    base = memory_mb + scratch_mb + 64
    return max(base, 1024 + scratch_mb) if lang.compiles else base


def _pump(proc: subprocess.Popen | None, deadline: float, streams: list[tuple[int, _Capture]]) -> bool:
    """Read the pipes until EOF or the deadline; returns True when the deadline was hit."""
    sel = selectors.DefaultSelector()
    for fd, cap in streams:
        sel.register(fd, selectors.EVENT_READ, cap)
    open_streams = len(streams)
    try:
        while open_streams:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            for key, _ in sel.select(timeout=min(left, 0.5)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    open_streams -= 1
                else:
                    key.data.feed(chunk)
        if proc is None:
            return False
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            return True
        return False
    finally:
        sel.close()


def _kill_tree(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except ProcessLookupError:
        pass
    proc.wait()


def _feed_stdin(fd: int, data: bytes) -> None:
    """Write the program's stdin without ever blocking the caller (a thread for large inputs)."""
    def write():
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
        except OSError:  # the program exited without reading it all
            pass
        finally:
            os.close(fd)

    if len(data) <= 32768:
        write()
    else:
        threading.Thread(target=write, daemon=True).start()


def _execute_popen(cfg: dict, stdin: str, wall: float, max_output: int):
    """Start a fresh init process for the job."""
    status_r, status_w = os.pipe()
    try:
        cfg = {**cfg, "status_fd": status_w}
        proc = subprocess.Popen(isolation.init_command(cfg), cwd="/", env={"PATH": isolation.SYSTEM_PATH},
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, pass_fds=(status_w,))
        os.close(status_w)
        status_w = -1
        stdin_fd = os.dup(proc.stdin.fileno())
        proc.stdin.close()
        _feed_stdin(stdin_fd, stdin.encode())
        out, err, status = _Capture(max_output), _Capture(max_output), _Capture(65536)
        timed_out = _pump(proc, time.monotonic() + wall,
                          [(proc.stdout.fileno(), out), (proc.stderr.fileno(), err), (status_r, status)])
        if timed_out:
            _kill_tree(proc)
        else:  # the namespace died with its PID 1; stragglers of an unisolated run die with the session
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        proc.stdout.close()
        proc.stderr.close()
        return timed_out, out, err, status.raw().decode("utf-8", "replace"), proc.returncode
    finally:
        os.close(status_r)
        if status_w >= 0:
            os.close(status_w)


def _execute_zygote(cfg: dict, stdin: str, wall: float, max_output: int):
    """Hand the job to the warm zygote with its four pipes; kill its process group on time-out."""
    pipes = [os.pipe() for _ in range(4)]  # stdin, stdout, stderr, status
    theirs = [pipes[0][0], pipes[1][1], pipes[2][1], pipes[3][1]]
    ours = [pipes[0][1], pipes[1][0], pipes[2][0], pipes[3][0]]
    try:
        try:
            isolation.Zygote.get().submit(cfg, theirs)
        except OSError:  # the zygote died: start a new one once
            isolation.Zygote.shutdown()
            isolation.Zygote.get().submit(cfg, theirs)
    finally:
        for fd in theirs:
            os.close(fd)
    stdin_fd = ours[0]
    _feed_stdin(stdin_fd, stdin.encode())
    out, err, status = _Capture(max_output), _Capture(max_output), _Capture(65536)
    try:
        timed_out = _pump(None, time.monotonic() + wall, [(ours[1], out), (ours[2], err), (ours[3], status)])
        text = status.raw().decode("utf-8", "replace")
        job_pid = None
        if text.startswith("pid "):
            job_pid = int(text.split("\n", 1)[0][4:])
        if job_pid is not None and (timed_out or "{" not in text):
            try:
                os.killpg(job_pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if timed_out:  # drain what is left until the pipes close (the tree is dead)
                _pump(None, time.monotonic() + 5, [(ours[1], out), (ours[2], err), (ours[3], status)])
        return timed_out, out, err, status.raw().decode("utf-8", "replace"), None
    finally:
        for fd in ours[1:]:
            os.close(fd)


def run_program(code: str, lang: str = "python", timeout_s: float = 5, memory_mb: int = 512,
                files: dict[str, str] | None = None, stdin: str = "", allow_unisolated: bool = False, *,
                scratch_mb: int = 64, fsize_mb: int = 16, nofile: int = 64, nproc: int | None = None,
                max_output: int = MAX_OUTPUT, compile_timeout_s: float = 60.0,
                success_marker: str | None = None, hide_paths: list[str] | None = None) -> Verdict:
    """Run ``code`` in the sandbox and return its verdict.

    ``timeout_s`` bounds the program's wall-clock and CPU time (compilation has its own
    ``compile_timeout_s``); ``memory_mb`` its address space (plus what the V8/JVM runtimes
    reserve); ``scratch_mb`` the scratch tmpfs, ``fsize_mb`` any one file, ``nofile`` open files,
    ``nproc`` processes and threads of the run's uid. ``success_marker``: when given, an exit
    status of 0 only counts as ``passed`` if stdout contains the marker (append ``print(marker)``
    after the tests), so a program that leaves early with ``sys.exit(0)``/``os._exit(0)`` does
    not pass; the marker is removed from stdout.
    """
    t0 = time.monotonic()
    language = get_language(lang, memory_mb, code)
    isolated, reason = isolation.probe()
    if not isolated and not allow_unisolated:
        return Verdict(REFUSED, None, seconds=time.monotonic() - t0, lang=language.name, isolated=False,
                       detail=f"sandbox isolation unavailable, refusing to run untrusted code: {reason} "
                              "(pass allow_unisolated=True / --allow-unisolated to run with resource "
                              "limits only)")
    if not language.available():
        return Verdict(REFUSED, None, seconds=time.monotonic() - t0, lang=language.name, isolated=isolated,
                       detail=f"no {language.name} toolchain on this machine")
    run_lim, comp_lim = _limits(language, timeout_s, memory_mb, fsize_mb, nofile, nproc)
    stage = tempfile.mkdtemp(prefix="coderforge-sbx-")
    lease = cgroup = None
    try:
        os.chmod(stage, 0o755)
        Path(stage, language.source).write_text(code)
        for name, content in (files or {}).items():
            target = Path(stage, _safe_relpath(name))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        uid = None
        if isolation.is_root():  # never run untrusted code as root, namespaces or not
            lease = isolation.UidLease()
            uid = lease.uid
            if not isolated:  # the staged directory is the scratch directory itself
                for root, dirs, fls in os.walk(stage):
                    for name in [*dirs, *fls]:
                        os.chown(os.path.join(root, name), uid, uid)
                os.chown(stage, uid, uid)
        steps = [{**s, "limits": (comp_lim if s["phase"] == "compile" else run_lim).as_dict()} for s in language.steps]
        cfg = isolation.init_config(stage, steps, uid=uid, scratch_mb=scratch_mb,
                                    hide=hide_paths if hide_paths is not None else isolation.private_host_paths(),
                                    isolate=isolated, status_fd=-1)
        if isolation.use_cgroups():
            cgroup_mb = _cgroup_mb(language, memory_mb, scratch_mb)
            cgroup = isolation.CgroupPool.acquire(cgroup_mb << 20, max(run_lim.nproc, comp_lim.nproc if
                                                                        language.compiles else 0) + 16)
            if cgroup is not None:
                cfg["cgroup_procs"] = cgroup.procs_files
        wall = timeout_s + (compile_timeout_s if language.compiles else 0.0) + 1.0
        run = _execute_zygote if isolation.use_zygote() else _execute_popen
        timed_out, out, err, status_text, init_exit = run(cfg, stdin, wall, max_output)
        try:
            lines = [ln for ln in status_text.splitlines() if ln.startswith("{")]
            st = json.loads(lines[-1]) if lines else {}
        except ValueError:
            st = {}
        stdout, stderr = out.text(), err.text()
        meta = {"uid": uid, "phase": st.get("phase"), "init_exit": init_exit}
        if not timed_out and (st.get("phase") == "setup" or not st):
            return Verdict(REFUSED, None, stdout, stderr, round(time.monotonic() - t0, 4),
                           f"sandbox setup failed: {st.get('error') or stderr.strip()[-300:]}",
                           lang=language.name, isolated=isolated, meta=meta)
        exit_code, signum = st.get("exit"), st.get("signal")
        if signum:
            exit_code = 128 + signum
        marker_ok = True
        if success_marker is not None:
            marker_ok = success_marker in out.raw().decode("utf-8", "replace")
            stdout = stdout.replace(success_marker + "\n", "").replace(success_marker, "")
        verdict, detail = classify(None if timed_out else exit_code, None if timed_out else signum, stderr,
                                   stdout=stdout[-4000:], timed_out=timed_out, marker_ok=marker_ok,
                                   compile_failed=st.get("phase") == "compile" and not timed_out)
        if cgroup is not None:
            meta["peak_memory_bytes"] = cgroup.peak_bytes()
            kills = cgroup.oom_kills()
            meta["oom_kills"] = kills
            if kills and verdict in (CRASHED, FAILED):
                verdict, detail = OOM, (f"the kernel's OOM killer ended {kills} process(es) at the run's memory "
                                        f"cgroup limit ({cgroup_mb} MB resident); " + detail).rstrip("; ")
        if not isolated:
            detail = ("UNISOLATED run (no namespaces: network, filesystem and daemons not contained); "
                      + detail).rstrip("; ")
        return Verdict(verdict, None if timed_out else exit_code, stdout, stderr, round(time.monotonic() - t0, 4),
                       detail, lang=language.name, isolated=isolated, truncated=out.truncated or err.truncated,
                       meta=meta)
    finally:
        if cgroup is not None:
            isolation.CgroupPool.give_back(cgroup)
        if lease is not None:
            lease.release(sweep=cgroup is None or not isolated)
        shutil.rmtree(stage, ignore_errors=True)


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def run_many(jobs: Iterable[dict], workers: int | None = None) -> list[Verdict]:
    """Run many programs in parallel (a thread pool driving one sandbox process each; the
    programs themselves run in parallel processes). ``jobs`` are ``run_program`` keyword dicts;
    verdicts come back in job order. ``workers`` defaults to the CPUs this process may use."""
    jobs = list(jobs)
    if not jobs:
        return []
    workers = workers or default_workers()
    with ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        return list(pool.map(lambda job: run_program(**job), jobs))
