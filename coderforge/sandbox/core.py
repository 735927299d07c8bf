"""``run_program`` / ``run_many``: run untrusted programs and return verdicts.

Safe by default: a run needs the namespaces of :mod:`coderforge.sandbox.isolation`; where they
cannot be created it returns ``refused`` (saying why) unless ``allow_unisolated=True``, in which
case it still applies the resource limits, a fresh scratch cwd, its own session/process group and
an empty environment, and marks the verdict ``isolated=False``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

from coderforge.sandbox.cgroups import Cgroup, CgroupPool, use_cgroups
from coderforge.sandbox.host import is_root, private_host_paths
from coderforge.sandbox.isolation import init_config, probe, use_zygote
from coderforge.sandbox.languages import Language, get_language
from coderforge.sandbox.launch import Capture, execute_popen, execute_zygote
from coderforge.sandbox.limits import cgroup_mb, step_limits
from coderforge.sandbox.uids import UidLease
from coderforge.sandbox.verdict import CRASHED, FAILED, OOM, REFUSED, Verdict, classify

MAX_OUTPUT = 64 * 1024


def _safe_relpath(name: str) -> str:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise ValueError(f"file name {name!r} must be a relative path inside the scratch directory")
    return str(p)


def _stage_files(stage: str, source: str, code: str, files: dict[str, str] | None) -> None:
    """Write the program and its extra files into the staging directory the init copies from."""
    os.chmod(stage, 0o755)
    Path(stage, source).write_text(code)
    for name, content in (files or {}).items():
        target = Path(stage, _safe_relpath(name))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)


def _chown_tree(stage: str, uid: int) -> None:
    for root, dirs, fls in os.walk(stage):
        for name in [*dirs, *fls]:
            os.chown(os.path.join(root, name), uid, uid)
    os.chown(stage, uid, uid)


def _last_status(status_text: str) -> dict:
    """The init's last JSON status line (how the last step ended), or {} when it wrote none."""
    try:
        lines = [ln for ln in status_text.splitlines() if ln.startswith("{")]
        return json.loads(lines[-1]) if lines else {}
    except ValueError:
        return {}


def _judge(language: Language, isolated: bool, t0: float, timed_out: bool, out: Capture, err: Capture,
           st: dict, meta: dict, success_marker: str | None, cgroup: Cgroup | None,
           cgroup_limit_mb: int) -> Verdict:
    """The verdict of a run that got past the refusals, from how it ended."""
    stdout, stderr = out.text(), err.text()
    if not timed_out and (st.get("phase") == "setup" or not st):
        return Verdict(REFUSED, None, stdout, stderr, round(time.monotonic() - t0, 4),
                       f"sandbox setup failed: {st.get('error') or stderr.strip()[-300:]}",
                       lang=language.name, isolated=isolated, meta=meta)
    exit_code, signum = st.get("exit"), st.get("signal")
    if signum:
        exit_code = 128 + signum
    marker_ok = True
    if success_marker is not None:
        marker_ok = success_marker in out.raw().decode("utf-8", "replace")
        stdout = stdout.replace(success_marker + "\n", "").replace(success_marker, "")
    verdict, detail = classify(None if timed_out else exit_code, None if timed_out else signum, stderr,
                               stdout=stdout[-4000:], timed_out=timed_out, marker_ok=marker_ok,
                               compile_failed=st.get("phase") == "compile" and not timed_out)
    if cgroup is not None:
        meta["peak_memory_bytes"] = cgroup.peak_bytes()
        kills = cgroup.oom_kills()
        meta["oom_kills"] = kills
        if kills and verdict in (CRASHED, FAILED):
            verdict, detail = OOM, (f"the kernel's OOM killer ended {kills} process(es) at the run's memory "
                                    f"cgroup limit ({cgroup_limit_mb} MB resident); " + detail).rstrip("; ")
    if not isolated:
        detail = ("UNISOLATED run (no namespaces: network, filesystem and daemons not contained); "
                  + detail).rstrip("; ")
    return Verdict(verdict, None if timed_out else exit_code, stdout, stderr, round(time.monotonic() - t0, 4),
                   detail, lang=language.name, isolated=isolated, truncated=out.truncated or err.truncated,
                   meta=meta)


def run_program(code: str, lang: str = "python", timeout_s: float = 5, memory_mb: int = 512,
                files: dict[str, str] | None = None, stdin: str = "", allow_unisolated: bool = False, *,
                scratch_mb: int = 64, fsize_mb: int = 16, nofile: int = 64, nproc: int | None = None,
                max_output: int = MAX_OUTPUT, compile_timeout_s: float = 60.0,
                success_marker: str | None = None, hide_paths: list[str] | None = None) -> Verdict:
    """Run ``code`` in the sandbox and return its verdict.

    ``timeout_s`` bounds the program's wall-clock and CPU time (compilation has its own
    ``compile_timeout_s``); ``memory_mb`` its address space (plus what the V8/JVM runtimes
    reserve); ``scratch_mb`` the scratch tmpfs, ``fsize_mb`` any one file, ``nofile`` open files,
    ``nproc`` processes and threads of the run's uid. ``success_marker``: when given, an exit
    status of 0 only counts as ``passed`` if stdout contains the marker (append ``print(marker)``
    after the tests), so a program that leaves early with ``sys.exit(0)``/``os._exit(0)`` does
    not pass; the marker is removed from stdout. The program sees an allow-list of host paths
    (:mod:`coderforge.sandbox.rootfs`), never the rest of the host; ``hide_paths`` (default: homes,
    secrets, this checkout and virtualenv) are covered where they lie inside that allow-list.
    """
    t0 = time.monotonic()
    language = get_language(lang, memory_mb, code)
    isolated, reason = probe()
    if not isolated and not allow_unisolated:
        return Verdict(REFUSED, None, seconds=time.monotonic() - t0, lang=language.name, isolated=False,
                       detail=f"sandbox isolation unavailable, refusing to run untrusted code: {reason} "
                              "(pass allow_unisolated=True / --allow-unisolated to run with resource "
                              "limits only)")
    if not language.available():
        return Verdict(REFUSED, None, seconds=time.monotonic() - t0, lang=language.name, isolated=isolated,
                       detail=f"no {language.name} toolchain on this machine")
    run_lim, comp_lim = step_limits(language, timeout_s, memory_mb, fsize_mb, nofile, nproc)
    stage = tempfile.mkdtemp(prefix="coderforge-sbx-")
    lease = cgroup = None
    timed_out = True  # until the run says otherwise
    try:
        _stage_files(stage, language.source, code, files)
        uid = None
        if is_root():  # never run untrusted code as root, namespaces or not
            lease = UidLease()
            uid = lease.uid
            if not isolated:  # the staged directory is the scratch directory itself
                _chown_tree(stage, uid)
        steps = [{**s, "limits": (comp_lim if s["phase"] == "compile" else run_lim).as_dict()}
                 for s in language.steps]
        cfg = init_config(stage, steps, uid=uid, scratch_mb=scratch_mb,
                          hide=list(hide_paths) if hide_paths is not None else private_host_paths(),
                          isolate=isolated, status_fd=-1)
        cgroup_limit_mb = cgroup_mb(language, memory_mb, scratch_mb)
        if use_cgroups():
            pids = max(run_lim.nproc, comp_lim.nproc if language.compiles else 0) + 16
            cgroup = CgroupPool.acquire(cgroup_limit_mb << 20, pids)
            if cgroup is not None:
                cfg["cgroup_procs"] = cgroup.procs_files
        wall = timeout_s + (compile_timeout_s if language.compiles else 0.0) + 1.0
        execute = execute_zygote if use_zygote() else execute_popen
        timed_out, out, err, status_text, init_exit = execute(cfg, stdin, wall, max_output)
        st = _last_status(status_text)
        meta = {"uid": uid, "phase": st.get("phase"), "init_exit": init_exit}
        return _judge(language, isolated, t0, timed_out, out, err, st, meta, success_marker, cgroup,
                      cgroup_limit_mb)
    finally:
        if cgroup is not None:
            CgroupPool.give_back(cgroup, wait_s=2.0 if timed_out else 0.0)  # killed: wait until it is gone
        if lease is not None:
            lease.release(sweep=cgroup is None or not isolated)
        shutil.rmtree(stage, ignore_errors=True)


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def run_many(jobs: Iterable[dict], workers: int | None = None) -> list[Verdict]:
    """Run many programs in parallel (a thread pool driving one sandbox process each; the
    programs themselves run in parallel processes). ``jobs`` are ``run_program`` keyword dicts;
    verdicts come back in job order. ``workers`` defaults to the CPUs this process may use."""
    jobs = list(jobs)
    if not jobs:
        return []
    workers = workers or default_workers()
    with ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        return list(pool.map(lambda job: run_program(**job), jobs))
