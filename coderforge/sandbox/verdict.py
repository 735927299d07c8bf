"""The outcome of one sandboxed run, and how exit statuses and output map onto it."""

from __future__ import annotations

import re
import signal
from dataclasses import asdict, dataclass, field

PASSED, FAILED, TIMEOUT, OOM, CRASHED, REFUSED = "passed", "failed", "timeout", "oom", "crashed", "refused"
VERDICTS = (PASSED, FAILED, TIMEOUT, OOM, CRASHED, REFUSED)

# What the runtimes print when an allocation fails under RLIMIT_AS / their own heap cap.
_OOM_MARKERS = (
    "MemoryError",
    "std::bad_alloc",
    "JavaScript heap out of memory",
    "java.lang.OutOfMemoryError",
    "Cannot allocate memory",
    "Could not reserve enough space",
    "out of memory",
)


@dataclass
class Verdict:
    verdict: str
    exit_code: int | None
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    detail: str = ""
    lang: str = "python"
    isolated: bool = True
    truncated: bool = False
    meta: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.verdict == PASSED

    def as_dict(self) -> dict:
        return asdict(self)


def signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


_TB_FILE = re.compile(r'^\s*File "([^"]*)", line (\d+)')


def failure_detail(stderr: str, max_chars: int = 600) -> str:
    """The failing assertion/exception of a Python traceback (location, source line, exception);
    otherwise the last non-empty lines of stderr."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if not lines:
        return ""
    last_file = None
    for i, ln in enumerate(lines):
        if _TB_FILE.match(ln):
            last_file = i
    if last_file is not None:
        tail = lines[last_file:]
        # File line, source line (if shown), then the exception line(s)
        out = [tail[0].strip()] + [t.strip() for t in tail[1:]]
        text = " | ".join(out)
    else:
        text = " | ".join(ln.strip() for ln in lines[-3:])
    return text[-max_chars:]


def classify(exit_code: int | None, signum: int | None, stderr: str, *, stdout: str = "", timed_out: bool,
             marker_ok: bool = True, compile_failed: bool = False) -> tuple[str, str]:
    """(verdict, detail) from how the program ended: its exit code, or the signal that killed it.

    RLIMIT_CPU sends SIGXCPU at the soft limit and SIGKILL at the hard limit: both are time-outs.
    ``marker_ok`` is False when the run exited 0 without printing its completion marker (it left
    early, e.g. ``os._exit(0)`` before the tests ran).
    """
    if timed_out:
        return TIMEOUT, "wall-clock limit reached; process tree killed"
    if compile_failed:
        return FAILED, "compile error: " + failure_detail(stderr)
    if signum:
        if signum in (signal.SIGXCPU, signal.SIGKILL):
            return TIMEOUT, f"CPU-time limit reached ({signal_name(signum)})"
        if any(m in stderr for m in _OOM_MARKERS):
            return OOM, failure_detail(stderr)
        if signum == signal.SIGXFSZ:
            return CRASHED, "file-size limit exceeded (SIGXFSZ)"
        why = f": {failure_detail(stderr)}" if stderr.strip() else ""
        return CRASHED, f"killed by {signal_name(signum)}{why}"
    if exit_code is None:
        return CRASHED, "no exit status"
    if exit_code == 0:
        if not marker_ok:
            return FAILED, "exited 0 before the end of the program (completion marker missing)"
        return PASSED, ""
    if any(m in stderr or m in stdout for m in _OOM_MARKERS):  # the JVM reports on stdout
        return OOM, failure_detail(stderr) or "allocation failed under the memory limit"
    return FAILED, failure_detail(stderr) or f"exit status {exit_code}"
