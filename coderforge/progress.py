"""Live progress of a step, reported from wherever the step's work runs (the step's process, its
Ray workers): a small JSON status file per step, which the terminal view of ``coderforge run`` reads.

The status directory and the current step travel in the environment (``CODERFORGE_STATUS_DIR``,
``CODERFORGE_STEP``), so KFP task subprocesses and the Ray workers they start inherit them; with no
status directory, reporting does nothing.

Three pieces:

* :func:`report` merges fields into the current step's status file (any process, any thread);
* :func:`step_log` wraps one step's work inside its subprocess: it names the step, reports its state
  and sends everything the process and its children print into ``<log dir>/<step>.log``;
* :func:`run_with_live_view` runs the whole DAG in the driver: it points the steps at
  ``<workdir>/status`` and ``<workdir>/logs``, sends the driver's own output to ``logs/driver.log``
  and draws one row per step (the renderer is :mod:`coderforge.liveview`); on failure it names the
  failing step, its last log lines and the log's path.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

STATUS_DIR_ENV = "CODERFORGE_STATUS_DIR"
STEP_ENV = "CODERFORGE_STEP"
LOG_DIR_ENV = "CODERFORGE_LOG_DIR"
VERBOSE_ENV = "CODERFORGE_VERBOSE"  # "1": steps keep printing to the inherited stream, no log files
DRIVER_LOG = "driver.log"
LOG_HEADER = "====="  # opens each run of a step in its log: "===== <step>: pid <pid>, <time> ====="

T = TypeVar("T")


def report(**fields: Any) -> None:
    """Merge ``fields`` (e.g. ``state``, ``docs_in``, ``tokens``, ``loss``, ``done``, ``total``) into
    the current step's status file. Concurrent reporters of one step (the step's process, its Ray
    workers, their threads) are serialised by a lock file, so no update is lost; readers only ever
    see whole files (written aside, then renamed)."""
    status_dir, step = os.environ.get(STATUS_DIR_ENV), os.environ.get(STEP_ENV)
    if not status_dir or not step:
        return
    directory = Path(status_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{step}.json"
    with open(directory / f"{step}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            current = json.loads(path.read_text()) if path.exists() else {}
        except (OSError, ValueError):
            current = {}
        if not isinstance(current, dict):
            current = {}
        current.update(fields, updated=time.time())
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(current, default=str))
        os.replace(tmp, path)


def _report_quietly(**fields: Any) -> None:
    """Progress is never worth failing a step for: an unwritable status directory is ignored."""
    with contextlib.suppress(OSError):
        report(**fields)


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``, at most 300 characters."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text[:300]


def flush_streams(*streams: Any) -> None:
    for stream in streams:
        with contextlib.suppress(Exception):
            stream.flush()


def _stream_handlers() -> list[logging.StreamHandler]:
    """Every logging handler that writes to a stream rather than to a file of its own."""
    loggers: list[Any] = [logging.getLogger()]
    loggers += [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    return [
        handler
        for logger in loggers
        for handler in list(logger.handlers)
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
    ]


class Redirect:
    """While active, file descriptors 1 and 2 (so child processes and C-level output follow),
    ``sys.stdout``/``sys.stderr`` and the logging handlers that wrote to them all append to one file.
    Everything is put back on exit, in reverse, so redirections nest."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Redirect:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flush_streams(sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
        self.file = open(self.path, "a", buffering=1, encoding="utf-8", errors="replace")
        self.saved_fds: list[tuple[int, int | None]] = []
        try:
            for fd in (1, 2):
                try:
                    saved: int | None = os.dup(fd)
                except OSError:  # the fd was closed: closed again on exit
                    saved = None
                self.saved_fds.append((fd, saved))
                os.dup2(self.file.fileno(), fd)
        except BaseException:
            self._restore_fds()
            self.file.close()
            raise
        self.saved_sys = (sys.stdout, sys.stderr)
        self.handlers = [
            (h, h.stream) for h in _stream_handlers() if any(h.stream is s for s in self.saved_sys)
        ]
        sys.stdout = sys.stderr = self.file
        for handler, _ in self.handlers:
            with contextlib.suppress(Exception):
                handler.setStream(self.file)
        return self

    def _restore_fds(self) -> None:
        for fd, saved in reversed(self.saved_fds):
            if saved is None:
                with contextlib.suppress(OSError):
                    os.close(fd)
            else:
                os.dup2(saved, fd)
                os.close(saved)
        self.saved_fds = []

    def __exit__(self, *exc_info: Any) -> None:
        flush_streams(self.file, sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
        sys.stdout, sys.stderr = self.saved_sys
        original = {id(h): stream for h, stream in self.handlers}
        for handler in _stream_handlers():  # also those added meanwhile: never left on a closed file
            if handler.stream is self.file:
                with contextlib.suppress(Exception):
                    handler.setStream(original.get(id(handler), self.saved_sys[1]))
        self._restore_fds()
        self.file.close()


def _clean_exit(exc: BaseException) -> bool:
    return isinstance(exc, SystemExit) and exc.code in (None, 0)


def _open_step_log(step: str, path: Path | None) -> Redirect | None:
    """Start sending this process's output to ``path``, under a header line; ``None`` without a path
    or when the log cannot be written (the step then runs on, printing where it always did)."""
    if path is None:
        return None
    redirect = Redirect(path)
    try:
        redirect.__enter__()
    except OSError as exc:
        print(f"coderforge: step {step} cannot write its log {path} ({exc}); printing here", file=sys.stderr)
        return None
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{LOG_HEADER} {step}: pid {os.getpid()}, {stamp} {LOG_HEADER}", flush=True)
    return redirect


@contextlib.contextmanager
def step_log(step: str, log_dir: str | Path | None) -> Iterator[None]:
    """Run the enclosed work as step ``step`` inside the step's own process.

    Sets ``CODERFORGE_STEP`` (inherited by the Ray workers started inside) and reports
    ``state=running``; with ``log_dir`` (and ``CODERFORGE_VERBOSE`` not ``1``) everything this
    process and its children print, at the Python and the file-descriptor level, and the logging
    handlers that printed to stdout/stderr, go to ``<log_dir>/<step>.log`` (appended). On exit it
    reports ``done`` or ``failed`` (with the exception's one-line message, the traceback going to the
    log first) and puts everything back; the exception propagates. Nests: an inner step logs to its
    own file and reports under its own name, then the outer one resumes."""
    previous = os.environ.get(STEP_ENV)
    os.environ[STEP_ENV] = step
    _report_quietly(state="running", started=time.time(), finished=None, message=None)
    path = Path(log_dir) / f"{step}.log" if log_dir and os.environ.get(VERBOSE_ENV) != "1" else None
    try:
        redirect = _open_step_log(step, path)
        try:
            yield
        except BaseException as exc:
            if redirect and not _clean_exit(exc):  # into the log before the streams are put back
                traceback.print_exc()
                flush_streams(sys.stderr)
            raise
        finally:
            if redirect:
                redirect.__exit__(None, None, None)
    except BaseException as exc:
        os.environ[STEP_ENV] = step
        if _clean_exit(exc):
            _report_quietly(state="done", finished=time.time())
        else:
            _report_quietly(state="failed", finished=time.time(), message=one_line(exc))
        raise
    else:
        os.environ[STEP_ENV] = step
        _report_quietly(state="done", finished=time.time())
    finally:
        if previous is None:
            os.environ.pop(STEP_ENV, None)
        else:
            os.environ[STEP_ENV] = previous
