"""The terminal view of a running DAG, drawn from the per-step status files of
:mod:`coderforge.progress`: one row per step with its state, elapsed time, documents in→kept,
tokens, loss and, where the step knows its total, a progress bar.

On a terminal the table is redrawn in place twice a second; elsewhere (CI, pipes, files) one line is
printed per state change, then the final table, so logs stay short. Nothing the renderer does can
stop the run: its errors are swallowed, status files that cannot be read are skipped.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO, TypeVar

from coderforge.progress import (
    DRIVER_LOG,
    LOG_DIR_ENV,
    LOG_HEADER,
    STATUS_DIR_ENV,
    STEP_ENV,
    VERBOSE_ENV,
    Redirect,
    flush_streams,
    one_line,
)

T = TypeVar("T")
TAIL_LINES = 20
BAR_WIDTH = 10
INTERVAL_S = 0.5
_UNICODE = {"pending": "·", "running": "▸", "done": "✓", "failed": "✗", "skipped": "–", "stopped": "✗",
            "arrow": "→", "dot": "·"}
_ASCII = {"pending": ".", "running": ">", "done": "+", "failed": "x", "skipped": "-", "stopped": "x",
          "arrow": "->", "dot": "|"}
_ENDED = ("done", "failed", "skipped")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _count(value: Any) -> str:
    number = _number(value)
    return f"{int(number):,}" if number is not None else str(value)


def _human(value: Any) -> str:
    number = _number(value)
    if number is None:
        return str(value)
    for limit, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= limit:
            return f"{number / limit:.1f}{unit}"
    return f"{int(number)}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def _fraction(status: dict) -> float | None:
    for done_key, total_key in (("done", "total"), ("step", "total_steps")):
        done, total = _number(status.get(done_key)), _number(status.get(total_key))
        if done is not None and total:
            return min(max(done / total, 0.0), 1.0)
    return None


def tail(path: Path, lines: int = TAIL_LINES, since: str | None = None) -> list[str]:
    """The last ``lines`` lines of a text file (read from its last 64 KiB), trailing blank lines
    dropped; with ``since``, only those after the last line starting with it (this run's part of a
    log that earlier runs appended to)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 65536))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    rows = [row.rstrip() for row in text.splitlines()]
    while rows and not rows[-1]:
        rows.pop()
    if since is not None:
        starts = [i for i, row in enumerate(rows) if row.startswith(since)]
        rows = rows[starts[-1] + 1:] if starts else rows
    return rows[-lines:]


class LiveView:
    """Polls ``status_dir`` and draws ``steps`` on ``out`` from a daemon thread until :meth:`close`."""

    def __init__(self, out: TextIO, steps: Sequence[str], status_dir: Path, log_dir: Path) -> None:
        self.out, self.steps, self.status_dir, self.log_dir = out, list(steps), status_dir, log_dir
        self.status: dict[str, dict] = {}
        self.shown: dict[str, str] = {}  # state last printed per step (line mode)
        self.drawn = 0  # rows drawn last time (terminal mode)
        self.started = time.time()
        self.ended: float | None = None
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="coderforge-liveview", daemon=True)
        try:
            self.tty = bool(out.isatty())
        except (AttributeError, OSError, ValueError):
            self.tty = False
        encoding = getattr(out, "encoding", None) or "utf-8"
        try:
            "".join(_UNICODE.values()).encode(encoding)
            self.sym = _UNICODE
        except (LookupError, UnicodeError):
            self.sym = _ASCII

    # ---- state -------------------------------------------------------------------------------
    def poll(self) -> None:
        try:
            paths = sorted(self.status_dir.glob("*.json"))
        except OSError:
            return
        for path in paths:
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):  # vanished, or not a status file: keep the last good one
                continue
            if isinstance(data, dict):
                self.status[path.stem] = data

    def order(self) -> list[str]:
        """``steps`` first, then steps that reported without being announced, by start time."""
        extra = [name for name in self.status if name not in self.steps]
        extra.sort(key=lambda name: _number(self.status[name].get("started")) or 0.0)
        return self.steps + extra

    def state(self, name: str) -> str:
        status = self.status.get(name)
        state = str(status.get("state") or "running") if status else "pending"
        if self.ended is not None:
            state = {"pending": "skipped", "running": "stopped"}.get(state, state)
        return state

    # ---- rows --------------------------------------------------------------------------------
    def row(self, name: str) -> str:
        status, state = self.status.get(name) or {}, self.state(name)
        width = max(len(step) for step in self.order())
        text = f"{self.sym.get(state, '?')} {name:<{width}}  {state:<8}"
        started, finished = _number(status.get("started")), _number(status.get("finished"))
        if started is not None:
            end = finished if state in _ENDED and finished is not None else (self.ended or time.time())
            text += f" {_duration(max(0.0, end - started)):>7}"
        return "  ".join([text, *self._details(status, state)]).rstrip()

    def _details(self, status: dict, state: str) -> list[str]:
        parts = []
        if status.get("docs_in") is not None:
            kept = status.get("docs_kept")
            arrow = f"{self.sym['arrow']}{_count(kept)}" if kept is not None else " in"
            parts.append(f"docs {_count(status['docs_in'])}{arrow}")
        elif status.get("docs_kept") is not None:
            parts.append(f"docs kept {_count(status['docs_kept'])}")
        if status.get("tokens") is not None:
            parts.append(f"tokens {_human(status['tokens'])}")
        loss = status.get("loss")
        if loss is not None:
            parts.append(f"loss {loss:.3f}" if isinstance(loss, float) else f"loss {loss}")
        if state in ("running", "failed", "stopped"):
            fraction = _fraction(status)
            if fraction is not None:
                full = round(fraction * BAR_WIDTH)
                parts.append(f"[{'#' * full}{'-' * (BAR_WIDTH - full)}] {fraction * 100:.0f}%")
            elif _number(status.get("step")) is not None:
                parts.append(f"step {_count(status['step'])}")
            message = str(status.get("message") or "").strip()
            if message:
                parts.append(message.splitlines()[0][:100])
        return [part for part in parts if part]

    def table(self) -> list[str]:
        rows = [self.row(name) for name in self.order()]
        elapsed = _duration((self.ended or time.time()) - self.started)
        if self.ended is None:
            return [*rows, f"  {elapsed} {self.sym['dot']} logs in {self.log_dir}"]
        states = [self.state(name) for name in self.order()]
        counts = ", ".join(f"{states.count(s)} {s}" for s in ("done", "failed", "stopped", "skipped")
                           if states.count(s) or s in ("done", "failed"))
        summary = f"  {len(states)} steps in {elapsed}: {counts} {self.sym['dot']} logs in {self.log_dir}"
        return [*rows, summary]

    # ---- drawing -----------------------------------------------------------------------------
    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def _columns(self) -> int:
        try:
            columns = os.get_terminal_size(self.out.fileno()).columns
        except (AttributeError, OSError, ValueError):
            columns = 0
        return max(20, columns) if columns else 120  # a fresh pseudo-terminal reports 0 columns

    def _draw(self) -> None:
        """Redraw the table in place: back up over the rows drawn last time, rewrite each line."""
        columns = self._columns()
        text = f"\x1b[{self.drawn}A" if self.drawn else ""
        lines = self.table()
        text += "".join(f"\r\x1b[2K{line[:columns - 1]}\n" for line in lines) + "\x1b[J"
        self._write(text)
        self.drawn = len(lines)

    def _events(self) -> None:
        """Line mode: one line per step whose state changed since it was last printed."""
        for name in self.order():
            state = self.state(name)
            if name in self.status and state != self.shown.get(name):
                self.shown[name] = state
                self._write(self.row(name) + "\n")

    def tick(self) -> None:
        with self.lock:
            self.poll()
            if self.tty:
                self._draw()
            else:
                self._events()

    def _loop(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                self.tick()
            if self.stop.wait(INTERVAL_S):
                return

    def start(self) -> None:
        self.started = time.time()
        self.thread.start()

    def close(self) -> None:
        """Stop the thread and render the final table once (steps that never ran: skipped)."""
        self.stop.set()
        with contextlib.suppress(Exception):
            self.thread.join(timeout=5)
        if not self.lock.acquire(timeout=5):  # the thread is stuck writing: leave the stream alone
            return
        try:
            self.poll()
            if not self.tty:
                self._events()  # the last changes, before the step states turn final
            self.ended = time.time()
            if self.tty:
                self._draw()
            else:
                self._write("\n" + "".join(line + "\n" for line in self.table()))
        except Exception:  # the view never fails the run
            pass
        finally:
            self.lock.release()

    # ---- failure -----------------------------------------------------------------------------
    def failing_step(self) -> str | None:
        """The step reported ``failed`` (the first to finish), else the first still running."""
        failed = [n for n in self.order() if (self.status.get(n) or {}).get("state") == "failed"]
        if failed:
            return min(failed, key=lambda n: _number(self.status[n].get("finished")) or math.inf)
        running = [n for n in self.order() if (self.status.get(n) or {}).get("state") == "running"]
        return running[0] if running else None

    def failure_report(self, exc: BaseException) -> str:
        """What to print when the run raised ``exc``: the failing step, its last log lines, its log."""
        with contextlib.suppress(Exception):
            self.poll()
        name = self.failing_step()
        mark = self.sym["failed"]
        if name is None:
            lines = [f"{mark} the run failed before any step reported: {one_line(exc)}"]
        elif self.status[name].get("state") == "failed":
            message = self.status[name].get("message")
            lines = [f"{mark} step {name} failed" + (f": {message}" if message else "")]
        else:
            lines = [f"{mark} step {name} did not finish: the run stopped ({one_line(exc)})"]
        log = self.log_dir / f"{name}.log" if name else self.log_dir / DRIVER_LOG
        if not log.exists():
            log = self.log_dir / DRIVER_LOG
        last = tail(log, since=f"{LOG_HEADER} {name}:" if log.name != DRIVER_LOG else None)
        lines.append(f"--- last {len(last)} lines of {log} ---" if last else f"--- {log} is empty ---")
        lines += [f"    {line}" for line in last]
        lines.append(f"full log: {log}")
        if log.name != DRIVER_LOG:
            lines.append(f"driver log: {self.log_dir / DRIVER_LOG}")
        return "\n".join(lines) + "\n"


@contextlib.contextmanager
def _environ(values: dict[str, str | None]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    try:
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _clear_status(status_dir: Path) -> None:
    status_dir.mkdir(parents=True, exist_ok=True)
    for path in status_dir.iterdir():
        if path.suffix in (".json", ".tmp", ".lock") and path.is_file():
            with contextlib.suppress(OSError):
                path.unlink()


def _view_stream(stream: TextIO) -> tuple[TextIO, bool]:
    """Where the view writes: ``stream`` itself, or, when it is file descriptor 1 or 2 (about to be
    redirected), a duplicate of that descriptor taken now. Returns ``(out, owned)``."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.StringIO and friends: no descriptor
        return stream, False
    if fd not in (1, 2):
        return stream, False
    flush_streams(stream)
    encoding = getattr(stream, "encoding", None) or "utf-8"
    return open(os.dup(fd), "w", encoding=encoding, errors="replace", buffering=1), True


def run_with_live_view(
    target: Callable[[], T],
    steps: Sequence[str],
    workdir: str | Path,
    verbose: bool = False,
    stream: TextIO | None = None,
) -> T:
    """Run ``target`` (the whole DAG) with a live view of ``steps`` on ``stream`` (default: the
    current ``sys.stdout``) and return its result.

    Sets ``CODERFORGE_STATUS_DIR=<workdir>/status`` (stale status files removed),
    ``CODERFORGE_LOG_DIR=<workdir>/logs`` and ``CODERFORGE_VERBOSE`` for the duration (the previous
    values come back afterwards). ``verbose``: the target runs with the full stream and nothing else
    happens. Otherwise the driver's own output (file descriptors 1 and 2, ``sys.stdout``/``stderr``)
    goes to ``logs/driver.log`` while the view draws one row per step; then the final table. If
    ``target`` raises, the failing step (the one reported ``failed``, else the one still running), the
    last lines of its log and the log's path are printed to the restored ``sys.stderr``, and the
    exception propagates."""
    workdir = Path(workdir)
    status_dir, log_dir = workdir / "status", workdir / "logs"
    _clear_status(status_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {
        STATUS_DIR_ENV: str(status_dir),
        LOG_DIR_ENV: str(log_dir),
        VERBOSE_ENV: "1" if verbose else "0",
        STEP_ENV: None,  # the driver is no step; each step's process names itself
    }
    with _environ(env):
        if verbose:
            return target()
        out, owned = _view_stream(sys.stdout if stream is None else stream)
        view = LiveView(out, steps, status_dir, log_dir)
        try:
            view.start()
            try:
                with Redirect(log_dir / DRIVER_LOG):
                    result = target()
            except BaseException as exc:
                view.close()
                with contextlib.suppress(Exception):
                    sys.stderr.write(view.failure_report(exc))
                    sys.stderr.flush()
                raise
            view.close()
            return result
        finally:
            if owned:
                with contextlib.suppress(Exception):
                    out.close()
