"""What the host machine offers the sandbox: the system ``PATH`` and Python, whether we are root, and
the host paths a run must not see."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
DEFAULT_HIDE = ("/root", "/home", "/run/secrets", "/var/run/secrets", "/mnt", "/media", "/srv", "/sys")


def is_root() -> bool:
    return os.geteuid() == 0


def system_python() -> str | None:
    """The interpreter sandboxed Python programs run on: the system one (the running venv is private to
    the sandbox). ``CODERFORGE_SANDBOX_PYTHON`` overrides, e.g. with a pyenv build, whose prefix alone
    the sandbox then mounts."""
    env = os.environ.get("CODERFORGE_SANDBOX_PYTHON")
    if env:
        return env
    for name in ("python3", "python"):
        found = shutil.which(name, path=SYSTEM_PATH)
        if found:
            return found
    return None


def init_python() -> str:
    """The interpreter that runs the init (:mod:`coderforge.sandbox.nsinit`, standard library only): the
    system Python when there is one (it starts faster than a virtualenv's and stays visible inside the
    sandbox, so Python programs can run in the init's forked process), else the running one."""
    py = system_python()
    return py if py and os.access(py, os.X_OK) else sys.executable


def private_host_paths() -> list[str]:
    """Host paths a run must never see: homes, mounted secrets, and this checkout / virtualenv. The run's
    root (:mod:`coderforge.sandbox.rootfs`) never mounts them, nor a directory holding them (a home may
    hold a runtime's own prefix), and covers any that lie inside a mounted directory."""
    paths = list(DEFAULT_HIDE)
    pkg_root = Path(__file__).resolve().parents[2]
    for p in (pkg_root, Path(sys.prefix).resolve()):
        if str(p) not in ("/", "/usr", "/usr/local") and len(p.parts) > 1 and str(p) not in paths:
            paths.append(str(p))
    return paths
