"""Running untrusted code: resource limits, Linux namespaces, verdicts.

Modules, one concern each: :mod:`.core` (``run_program``/``run_many``: staging, limits, verdict),
:mod:`.launch` (starting a job and collecting its output), :mod:`.isolation` (namespaces and mounts:
the init's configuration, the warm zygote, ``probe``), :mod:`.nsinit` (the init process itself,
standard library only), :mod:`.rootfs` (the run's root: an allow-list of host paths, not the host),
:mod:`.allowlist` (that allow-list, derived from the toolchains in use), :mod:`.seccomp` (the syscall
filter), :mod:`.cgroups` (per-run memory cgroups), :mod:`.uids` (throw-away uids), :mod:`.limits`
(rlimits), :mod:`.host` (system Python, root, private paths), :mod:`.languages` (toolchains),
:mod:`.verdict`, :mod:`.cli`.
"""

from coderforge.sandbox.core import default_workers, run_many, run_program
from coderforge.sandbox.isolation import probe
from coderforge.sandbox.languages import available_languages
from coderforge.sandbox.verdict import VERDICTS, Verdict

__all__ = ["Verdict", "VERDICTS", "run_program", "run_many", "probe", "available_languages",
           "default_workers"]
