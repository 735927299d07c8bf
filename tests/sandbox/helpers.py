"""Shared checks of the sandbox tests."""

from __future__ import annotations

import subprocess
import sys

from coderforge.sandbox import run_program


def host_still_works():
    """After an attack: the sandbox still runs programs, and the host still starts processes."""
    v = run_program("print(sum(range(10)))", timeout_s=5)
    assert v.verdict == "passed" and v.stdout.strip() == "45", v
    out = subprocess.run([sys.executable, "-c", "print('host ok')"], capture_output=True, text=True,
                         timeout=30)
    assert out.stdout.strip() == "host ok"
