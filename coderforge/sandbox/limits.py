"""The resource limits of a run: the rlimits of its compile and run steps, and the resident-memory bound
of its cgroup."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class Limits:
    cpu: int  # seconds (soft; SIGKILL one second later)
    as_: int  # bytes of address space
    nproc: int
    fsize: int  # bytes per file
    nofile: int

    def as_dict(self) -> dict:
        d = asdict(self)
        d["as"] = d.pop("as_")
        return d


def step_limits(lang, timeout_s: float, memory_mb: int, fsize_mb: int, nofile: int,
                nproc: int | None) -> tuple[Limits, Limits]:
    """(run, compile) rlimits of a program in ``lang`` (a :class:`~coderforge.sandbox.languages.Language`);
    compilers get at least 60 s, 2 GB of address space, 256 processes, 64 MB files and 256 descriptors."""
    cpu = max(1, math.ceil(timeout_s))
    run = Limits(cpu=cpu, as_=(memory_mb + lang.as_extra_mb) << 20, nproc=nproc or lang.nproc,
                 fsize=fsize_mb << 20, nofile=nofile)
    comp = Limits(cpu=60, as_=max(2048, memory_mb + lang.as_extra_mb) << 20, nproc=max(256, run.nproc),
                  fsize=max(64, fsize_mb) << 20, nofile=max(256, nofile))
    return run, comp


def cgroup_mb(lang, memory_mb: int, scratch_mb: int) -> int:
    """Resident-memory bound of a job's cgroup: the program's memory, its scratch files (tmpfs pages count
    against the cgroup that wrote them) and the init's own ~20 MB; compilers get at least 1 GB."""
    base = memory_mb + scratch_mb + 64
    return max(base, 1024 + scratch_mb) if lang.compiles else base
