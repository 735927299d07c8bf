"""Starting one job and collecting what it wrote: through the warm zygote or a fresh init process, with
stdin fed without blocking, stdout/stderr captured up to a limit (head and tail kept), the init's
status pipe read, and the whole process tree killed at the wall-clock deadline."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import threading
import time

from coderforge.sandbox.host import SYSTEM_PATH
from coderforge.sandbox.isolation import Zygote, init_command, zygote_root

TAIL = 4 * 1024


class Capture:
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


def _pump(proc: subprocess.Popen | None, deadline: float, streams: list[tuple[int, Capture]]) -> bool:
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


def execute_popen(cfg: dict, stdin: str, wall: float, max_output: int):
    """Start a fresh init process for the job. Both ways of running a job return
    ``(timed_out, stdout Capture, stderr Capture, status text, init exit status or None)``."""
    status_r, status_w = os.pipe()
    try:
        cfg = {**cfg, "status_fd": status_w}
        proc = subprocess.Popen(init_command(cfg), cwd="/", env={"PATH": SYSTEM_PATH},
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, pass_fds=(status_w,))
        os.close(status_w)
        status_w = -1
        stdin_fd = os.dup(proc.stdin.fileno())
        proc.stdin.close()
        _feed_stdin(stdin_fd, stdin.encode())
        out, err, status = Capture(max_output), Capture(max_output), Capture(65536)
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


def execute_zygote(cfg: dict, stdin: str, wall: float, max_output: int):
    """Hand the job to the warm zygote with its four pipes, its staging directory and cgroups (descriptors);
    kill its process group on time-out."""
    pipes = [os.pipe() for _ in range(4)]  # stdin, stdout, stderr, status
    theirs = [pipes[0][0], pipes[1][1], pipes[2][1], pipes[3][1]]
    ours = [pipes[0][1], pipes[1][0], pipes[2][0], pipes[3][0]]
    try:  # the zygote's jobs start in its root: the staging directory and cgroups go as descriptors
        theirs.append(os.open(cfg["stage"], os.O_RDONLY | os.O_DIRECTORY))
        theirs += [os.open(p, os.O_WRONLY) for p in cfg.get("cgroup_procs") or []]
        root = zygote_root(cfg["root"])
        job = {k: v for k, v in cfg.items() if k != "cgroup_procs" and (k != "root" or root is None)}
        try:
            Zygote.get(root).submit(job, theirs)
        except OSError:  # the zygote died: start a new one once
            Zygote.shutdown()
            Zygote.get(root).submit(job, theirs)
    finally:
        for fd in theirs:
            os.close(fd)
    stdin_fd = ours[0]
    _feed_stdin(stdin_fd, stdin.encode())
    out, err, status = Capture(max_output), Capture(max_output), Capture(65536)
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
