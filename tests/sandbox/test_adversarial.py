"""Hostile programs. Each tries to break out; none may succeed, the host keeps working, and each
gets the right verdict. The attacks *assert* their own success, so a contained attack ends
``failed`` (or ``timeout`` / ``oom``), never ``passed``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from coderforge.sandbox import isolation, probe, run_program
from coderforge.sandbox.host import is_root
from coderforge.sandbox.uids import UID_BASE, kill_uid
from tests.sandbox.helpers import host_still_works

pytestmark = pytest.mark.skipif(not probe()[0], reason=f"namespaces unavailable here: {probe()[1]}")


def test_network_is_unreachable():
    code = """
import socket
for target in [("127.0.0.1", 22), ("1.1.1.1", 53), ("pypi.org", 443)]:
    try:
        socket.create_connection(target, timeout=2).close()
        raise SystemExit(0)  # connected: attack succeeded
    except OSError as exc:
        print("blocked", target, exc)
import urllib.request
urllib.request.urlopen("http://example.com", timeout=2)
"""
    v = run_program(code, timeout_s=10)
    assert v.verdict == "failed", v
    assert v.stdout.count("blocked") == 3


def test_loopback_listener_on_host_is_not_reachable():
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    try:
        v = run_program(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n")
        assert v.verdict == "failed" and ("unreachable" in v.detail or "refused" in v.detail), v
    finally:
        srv.close()


def test_parent_environment_is_not_visible(monkeypatch):
    secret = f"sekrit-{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("CODERFORGE_TEST_TOKEN", secret)
    code = f"""
import os, glob
found = [k for k, v in os.environ.items() if {secret!r} in v]
for path in glob.glob('/proc/*/environ'):
    try:
        if {secret!r}.encode() in open(path, 'rb').read():
            found.append(path)
    except OSError:
        pass
print(sorted(os.environ))
assert found, "secret found nowhere"
"""
    v = run_program(code)
    assert v.verdict == "failed", v
    assert secret not in v.stdout and "AWS_SECRET_ACCESS_KEY" not in v.stdout


def test_cannot_write_outside_scratch(tmp_path):
    target_dir = tmp_path / "victim"
    target_dir.mkdir(mode=0o777)
    os.chmod(target_dir, 0o777)  # even a world-writable host directory
    repo_file = Path(__file__).resolve().parents[2] / f"pwned-{uuid.uuid4().hex}"
    host_tmp = f"/tmp/pwned-{uuid.uuid4().hex}"
    code = f"""
import json
import os
wrote = []
for path in [{str(target_dir / 'x')!r}, {str(repo_file)!r}, "/etc/pwned", "/usr/pwned", "/root/pwned",
             "/var/tmp/pwned", "/dev/shm/pwned", {host_tmp!r}]:
    try:
        with open(path, "w") as fh:
            fh.write("pwned")
        wrote.append(path)
    except OSError as exc:
        print("blocked", path, type(exc).__name__)
print("wrote", wrote)
open("inside-scratch.txt", "w").write("fine")
assert not wrote or wrote == [{host_tmp!r}] or all(p.startswith(("/tmp", "/var/tmp", "/dev/shm"))
                                                   for p in wrote)
raise SystemExit(3 if wrote else 4)
"""
    v = run_program(code)
    assert v.verdict == "failed"
    assert not (target_dir / "x").exists()
    assert not repo_file.exists()
    assert not Path("/etc/pwned").exists() and not Path("/usr/pwned").exists()
    assert not Path("/var/tmp/pwned").exists() and not Path("/dev/shm/pwned").exists()
    assert not Path(host_tmp).exists()  # /tmp inside is the scratch tmpfs, gone with the run


def test_fork_bomb_is_contained():
    code = """
import json
import os
pids = 0
while True:
    try:
        if os.fork() == 0:
            while True:
                try:
                    os.fork()
                except OSError:
                    pass
        pids += 1
    except OSError as exc:
        print("fork failed after", pids, exc)
        raise
"""
    t0 = time.time()
    v = run_program(code, timeout_s=3)
    assert v.verdict in ("failed", "timeout"), v
    assert time.time() - t0 < 30
    uid = v.meta["uid"]
    if uid is not None:
        assert kill_uid(uid) == 0, "processes of the run survived it"
    host_still_works()


def test_unbounded_allocation_is_oom():
    v = run_program("blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 2**20))\n", memory_mb=256)
    assert v.verdict == "oom", v
    host_still_works()


def test_infinite_loop_times_out_and_sleeping_children_die():
    code = """
import subprocess, sys
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)"])
while True:
    pass
"""
    v = run_program(code, timeout_s=1)
    assert v.verdict == "timeout", v
    assert kill_uid(v.meta["uid"]) == 0 if v.meta["uid"] else True


def test_daemon_does_not_outlive_the_run():
    marker = f"coderforge-daemon-{uuid.uuid4().hex}"
    code = f"""
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv("/bin/sh", ["/bin/sh", "-c", "sleep 300 # {marker}"])
    os._exit(0)
time.sleep(0.3)
print("parent exits")
"""
    v = run_program(code)
    assert v.verdict == "passed", v  # the program itself is fine; its daemon must still die
    time.sleep(0.5)
    survivors = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    survivors.append(pid)
            except OSError:
                pass
    assert survivors == []


def test_disk_fill_is_capped():
    free_before = shutil.disk_usage("/").free
    code = """
i = 0
chunk = b"x" * (1 << 20)
while True:
    with open(f"fill-{i}.bin", "wb") as fh:
        while True:
            fh.write(chunk)
    i += 1
"""
    v = run_program(code, timeout_s=10, scratch_mb=32, fsize_mb=8)
    assert v.verdict in ("failed", "crashed"), v
    assert "File too large" in v.stderr or "No space left" in v.stderr or "SIGXFSZ" in v.detail
    # many files under the per-file limit still hit the scratch tmpfs cap
    v2 = run_program("i = 0\nwhile True:\n    open(f'f{i}', 'wb').write(b'x' * (4 << 20)); i += 1\n",
                     timeout_s=10, scratch_mb=32, fsize_mb=8)
    assert v2.verdict == "failed" and "No space left" in v2.stderr, v2
    assert shutil.disk_usage("/").free > free_before - (64 << 20)


def test_cannot_kill_parent_or_host_processes():
    me = os.getpid()
    code = f"""
import os, signal
hits = []
for pid in (os.getppid(), {me}, 1):
    try:
        os.kill(pid, signal.SIGKILL)
        hits.append(pid)
    except OSError as exc:
        print("blocked", pid, type(exc).__name__)
try:
    os.kill(-1, signal.SIGKILL)  # everything this uid may signal
except OSError as exc:
    print("kill -1", type(exc).__name__)
print("pids visible", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
assert {me} in hits, "could not kill the host process"
"""
    v = run_program(code)
    assert v.verdict in ("failed", "crashed"), v
    assert os.getpid() == me  # we are alive
    host_still_works()


def test_setuid_and_privilege_escalation_blocked():
    code = """
import json
import os
print(os.getuid(), os.geteuid())
try:
    os.setuid(0)
except PermissionError as exc:
    print("setuid blocked")
assert os.geteuid() == 0, "not root"
"""
    v = run_program(code)
    assert v.verdict == "failed" and "setuid blocked" in v.stdout, v
    if is_root():
        assert v.stdout.split()[0] != "0"


def test_private_host_paths_are_hidden():
    repo = str(Path(__file__).resolve().parents[2])
    code = f"""
import json
import os
seen = {{}}
for d in ["/root", "/home", "/sys", {repo!r}]:
    try:
        seen[d] = os.listdir(d)
    except OSError as exc:
        seen[d] = type(exc).__name__
print(seen)
assert any(isinstance(v, list) and v for v in seen.values()), "nothing readable"
"""
    v = run_program(code)
    assert v.verdict == "failed", v


def test_refuses_without_isolation(monkeypatch):
    """With the namespace setup failing, code is refused unless explicitly allowed."""
    monkeypatch.setenv(isolation.SIMULATE_ENV, "1")  # the real unshare(2) call then fails (EINVAL)
    isolation.reset_probe()
    try:
        ok, reason = probe()
        assert not ok and "namespace setup failed" in reason and "unshare" in reason
        witness = Path(f"/tmp/coderforge-refusal-{uuid.uuid4().hex}")
        v = run_program(f"open({str(witness)!r}, 'w').write('ran')")
        assert v.verdict == "refused" and not v.isolated and "isolation unavailable" in v.detail
        assert not witness.exists()  # nothing ran
        allowed = run_program("print('limited run')", allow_unisolated=True)
        assert allowed.verdict == "passed" and not allowed.isolated and "UNISOLATED" in allowed.detail
        assert run_program("while True: pass", timeout_s=1, allow_unisolated=True).verdict == "timeout"
    finally:
        monkeypatch.delenv(isolation.SIMULATE_ENV)
        isolation.reset_probe()
    assert probe()[0]


def test_unisolated_run_still_drops_root(monkeypatch):
    if not is_root():
        pytest.skip("only meaningful when the caller is root")
    monkeypatch.setenv(isolation.SIMULATE_ENV, "1")
    isolation.reset_probe()
    try:
        v = run_program("import os\nopen('mine.txt', 'w').write('x')\nprint(os.getuid())\n",
                        allow_unisolated=True)
        assert v.verdict == "passed" and int(v.stdout) >= UID_BASE, v
    finally:
        monkeypatch.delenv(isolation.SIMULATE_ENV)
        isolation.reset_probe()


def test_rootless_mode_uses_a_user_namespace():
    """As an ordinary user (no root, no throw-away uids) the sandbox isolates through a user
    namespace: checked by running the library as uid 1000 under the system Python."""
    if not is_root() or not Path("/usr/bin/python3").exists():
        pytest.skip("needs root to switch to an ordinary user, and a system Python")
    import tempfile

    repo = str(Path(__file__).resolve().parents[2])
    tmp_path = Path(tempfile.mkdtemp(prefix="coderforge-rootless-"))  # pytest's tmp is private to root
    script = tmp_path / "rootless.py"
    script.write_text(f"""
import json, sys
sys.path.insert(0, {repo!r})
from coderforge.sandbox import run_program, probe
ok, why = probe()
out = {{"probe": ok}}
for name, code in {{"uid": "import os; print(os.getuid())",
                   "net": "import socket; socket.create_connection(('1.1.1.1', 53), timeout=1)",
                   "loop": "while True: pass",
                   "bomb": "import os\\nwhile True:\\n    os.fork()"}}.items():
    v = run_program(code, timeout_s=2)
    out[name] = [v.verdict, v.isolated, v.stdout.strip()]
print(json.dumps(out))
""")
    os.chmod(tmp_path, 0o755)
    os.chmod(script, 0o644)
    res = subprocess.run(["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "/usr/bin/python3",
                          str(script)], capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    shutil.rmtree(tmp_path, ignore_errors=True)
    if res.returncode != 0 and "Permission denied" in res.stderr:
        pytest.skip(f"uid 1000 cannot read the checkout here: {res.stderr[-200:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["probe"] is True
    assert out["uid"] == ["passed", True, "0"]  # root inside the user namespace only
    assert out["net"][:2] == ["failed", True]
    assert out["loop"][0] == "timeout"
    assert out["bomb"][0] in ("failed", "timeout")
    host_still_works()
