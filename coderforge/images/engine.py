"""The container engine: a Docker daemon that is already running, or a private one started for the
duration of one command and always stopped afterwards.

``with engine() as eng:`` yields an :class:`Engine` (``eng.client()`` is a ``docker.DockerClient``,
``eng.host`` the ``DOCKER_HOST`` to give kfp.local). The daemon is, in order: ``DOCKER_HOST``; the
default socket ``/var/run/docker.sock``; this tool's private socket (a daemon another coderforge
command started); else ``dockerd`` is started privately (Debian's ``docker.io``; as root; no systemd
needed) with its data under ``CODERFORGE_DOCKER_ROOT`` (default ``/var/lib/coderforge/docker``, so
images built by one command are there for the next). On leaving the block, containers labelled with
this session are removed (also after an error or SIGTERM) and a daemon started here is stopped,
with the containerd it started; it also gets SIGTERM if this process dies without cleaning up.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("coderforge.images")

ROOT_ENV = "CODERFORGE_DOCKER_ROOT"
DEFAULT_ROOT = "/var/lib/coderforge/docker"
EXEC_ROOT = "/run/coderforge-docker"  # short: containerd's socket paths must stay under 108 bytes
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
SESSION_LABEL = "dev.coderforge.session"
INSTALL_HINT = ("install Debian's docker.io (apt-get install docker.io) or point DOCKER_HOST at a running "
                "Docker daemon")


class EngineError(RuntimeError):
    """No container engine can be reached or started; the message says what to do."""


def private_socket() -> str:
    return f"unix://{EXEC_ROOT}/docker.sock"


def data_root() -> Path:
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


def answers(host: str, timeout: float = 5.0) -> bool:
    """Does a Docker daemon answer on ``host`` (``unix://...`` or ``tcp://...``)?"""
    import docker

    if host.startswith("unix://") and not Path(host[len("unix://"):]).exists():
        return False
    try:
        client = docker.DockerClient(base_url=host, timeout=timeout)
    except docker.errors.DockerException:
        return False
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001 - any failure means "not usable"
        return False
    finally:
        client.close()


def running_daemon() -> str | None:
    """The address of a daemon that answers now, or None."""
    env = os.environ.get("DOCKER_HOST")
    if env:
        if answers(env):
            return env
        raise EngineError(f"DOCKER_HOST={env} does not answer; unset it to let coderforge start a daemon")
    for host in (DEFAULT_SOCKET, private_socket()):
        if answers(host):
            return host
    return None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG


@dataclass
class Engine:
    host: str
    started: bool = False
    proc: subprocess.Popen | None = None
    log_file: Path | None = None
    session: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def client(self, timeout: int = 600):
        import docker

        return docker.DockerClient(base_url=self.host, timeout=timeout)

    @property
    def labels(self) -> dict[str, str]:
        """Labels for every container this session starts (so cleanup finds them)."""
        return {SESSION_LABEL: self.session}

    def remove_session_containers(self) -> int:
        """Force-remove every container of this session (running or not); returns how many."""
        if not answers(self.host):
            return 0
        client = self.client(timeout=60)
        removed = 0
        try:
            for c in client.containers.list(all=True, filters={"label": f"{SESSION_LABEL}={self.session}"}):
                with contextlib.suppress(Exception):
                    c.remove(force=True)
                    removed += 1
        finally:
            client.close()
        return removed

    def stop(self, grace_s: float = 60.0) -> None:
        """Stop a daemon started here (SIGTERM: it stops its containers and containerd), then SIGKILL
        whatever of its process group is left."""
        if not self.started or self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                log.warning("dockerd did not stop in %.0f s: killing it", grace_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # containerd and shims started by this daemon
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self.proc = None


def start_daemon(root: Path | None = None, timeout_s: float = 90.0) -> Engine:
    """Start ``dockerd`` privately (data under ``root``, socket under :data:`EXEC_ROOT`)."""
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise EngineError(f"no Docker daemon answers and dockerd is not installed: {INSTALL_HINT}")
    if os.geteuid() != 0:
        raise EngineError(f"no Docker daemon answers, and starting dockerd needs root: start one "
                          f"(or rootless Docker) and set DOCKER_HOST, or {INSTALL_HINT}")
    root = Path(root or data_root())
    root.mkdir(parents=True, exist_ok=True)
    Path(EXEC_ROOT).mkdir(parents=True, exist_ok=True)
    log_file = root / "dockerd.log"
    host = private_socket()
    cmd = [dockerd, "--data-root", str(root), "--exec-root", EXEC_ROOT, "-H", host,
           "--pidfile", f"{EXEC_ROOT}/dockerd.pid", "--storage-driver", "overlay2"]
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True,
                                preexec_fn=_die_with_parent if threading.current_thread() is threading.main_thread()
                                else None)
    eng = Engine(host, started=True, proc=proc, log_file=log_file)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if answers(host, timeout=2):
            log.info("started a private Docker daemon (%s, data %s, log %s)", host, root, log_file)
            return eng
        time.sleep(0.5)
    eng.stop(grace_s=5)
    tail = log_file.read_text(errors="replace").splitlines()[-15:]
    raise EngineError("dockerd did not come up:\n  " + "\n  ".join(tail) + f"\n(full log: {log_file})")


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """SIGTERM raises SystemExit in the main thread, so cleanup runs as it does on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def engine(start: bool = True) -> Iterator[Engine]:
    """A usable engine for the duration of the block (see the module doc); ``start=False``: only an
    already running daemon (EngineError otherwise)."""
    host = running_daemon()
    if host is None and not start:
        raise EngineError(f"no Docker daemon answers: {INSTALL_HINT}")
    with _sigterm_as_exit():
        eng = Engine(host) if host else start_daemon()
        try:
            yield eng
        finally:
            with contextlib.suppress(Exception):
                eng.remove_session_containers()
            eng.stop()
