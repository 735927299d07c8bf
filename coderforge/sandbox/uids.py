"""Throw-away uids for runs started by root: one reserved per run, so runs never share a uid."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

UID_BASE = 1_600_000
UID_SLOTS = 4096
LOCK_DIR = Path("/tmp/coderforge-sandbox-uids")


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
