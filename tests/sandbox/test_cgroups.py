"""Per-run memory cgroups: the resident bound of a whole job, the v2 protocol, the pool of idle cgroups."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from coderforge.sandbox import probe, run_program
from coderforge.sandbox.cgroups import Cgroup, CgroupPool, cgroup_support

pytestmark = pytest.mark.skipif(not probe()[0], reason=f"namespaces unavailable here: {probe()[1]}")

_MANY_CHILDREN = """
import os, time
kids = []
for k in range(4):
    pid = os.fork()
    if pid == 0:
        b = bytearray(150 << 20)
        for i in range(0, len(b), 4096):
            b[i] = 1
        time.sleep(2)
        os._exit(0)
    kids.append(pid)
codes = [os.waitpid(p, 0)[1] for p in kids]
print(codes)
assert all(c == 0 for c in codes), "a child died"
"""


@pytest.mark.skipif(cgroup_support().startswith("none"), reason="no writable memory cgroup here")
def test_memory_cgroup_bounds_the_whole_job(monkeypatch):
    """Four children of 150 MB each: every one is under the 200 MB address-space rlimit, 600 MB together.
    Without the cgroup the run passes (rlimits are per process); with it the OOM killer stops the job at
    its resident bound and the verdict says so. Nothing of the cgroup is left behind."""
    v = run_program(_MANY_CHILDREN, memory_mb=200, timeout_s=20)
    assert v.verdict == "oom" and "OOM killer" in v.detail, v
    assert v.meta["oom_kills"] >= 1 and v.meta["peak_memory_bytes"] <= (200 + 64 + 64) << 20
    again = run_program("print('fine')", memory_mb=200)  # the pooled cgroup, reused: counters start afresh
    assert again.verdict == "passed" and again.meta["oom_kills"] == 0, again
    mine = f"coderforge-sbx-{os.getpid()}-*"
    pooled = [p for p in Path("/sys/fs/cgroup").rglob(mine) if p.is_dir()]
    assert pooled and all((p / "cgroup.procs").read_text().split() == [] for p in pooled)  # idle, emptied
    CgroupPool.drain()  # what atexit does
    assert [p for p in Path("/sys/fs/cgroup").rglob(mine) if p.is_dir()] == []
    monkeypatch.setenv("CODERFORGE_SANDBOX_CGROUPS", "0")
    v = run_program(_MANY_CHILDREN, memory_mb=200, timeout_s=20)
    assert v.verdict == "passed", v  # the gap the cgroup closes
    monkeypatch.setenv("CODERFORGE_SANDBOX_ZYGOTE", "0")  # the fresh-init path joins the cgroup too
    monkeypatch.delenv("CODERFORGE_SANDBOX_CGROUPS")
    v = run_program(_MANY_CHILDREN, memory_mb=200, timeout_s=20)
    assert v.verdict == "oom", v


def test_cgroup_v2_files_on_a_delegated_tree(tmp_path):
    """The cgroup v2 protocol (this machine has v1), on a directory laid out like a delegated subtree."""
    own = tmp_path / "user.slice" / "job"
    own.mkdir(parents=True)
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    (own / "cgroup.subtree_control").write_text("memory pids\n")
    cg = Cgroup.create(300 << 20, 80, root=tmp_path, proc_self_cgroup="0::/user.slice/job\n")
    assert cg is not None and cg.version == "v2"
    d = cg.dirs["v2"]
    assert d.parent == own and (d / "memory.max").read_text() == str(300 << 20)
    assert (d / "pids.max").read_text() == "80"
    assert cg.procs_files == [str(d / "cgroup.procs")]
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\n")
    (d / "memory.peak").write_text("314572800\n")
    assert cg.oom_kills() == 2 and cg.peak_bytes() == 314572800
    (own / "cgroup.subtree_control").write_text("pids\n")  # memory not delegated: no cgroup, rlimits only
    assert Cgroup.create(300 << 20, 80, root=tmp_path, proc_self_cgroup="0::/user.slice/job\n") is None


@pytest.mark.skipif(cgroup_support().startswith("none"), reason="no writable memory cgroup here")
def test_forked_host_does_not_share_the_parents_pooled_cgroups():
    assert run_program("print(1)").verdict == "passed"  # leaves an idle cgroup in this process's pool
    parent_idle = {str(cg.dirs) for cg in CgroupPool._idle}
    assert parent_idle
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a forked host (multiprocessing, Ray worker start-up ...) running a program of its own
        try:
            v = run_program("print(2)")
            used = {str(cg.dirs) for cg in CgroupPool._idle}
            os.write(w, json.dumps([v.verdict, sorted(used & parent_idle)]).encode())
        finally:
            CgroupPool.drain()
            os._exit(0)
    os.close(w)
    verdict, shared = json.loads(os.read(r, 4096))
    os.close(r)
    os.waitpid(pid, 0)
    assert verdict == "passed" and shared == []
    assert {str(cg.dirs) for cg in CgroupPool._idle} == parent_idle  # the parent's pool untouched
