"""The seccomp filter: the kernel interfaces it closes, with the errno it assigns, and the ordinary
programs (threads, subprocesses, sockets, every toolchain) that still work under it."""

from __future__ import annotations

import pytest

from coderforge.sandbox import probe, run_program
from coderforge.sandbox.isolation import init_config
from coderforge.sandbox.seccomp import seccomp_filter
from tests.sandbox.helpers import host_still_works

pytestmark = pytest.mark.skipif(not probe()[0], reason=f"namespaces unavailable here: {probe()[1]}")


def test_seccomp_closes_kernel_attack_surface():
    """Without the filter these succeed inside the namespaces (checked when it was added: a new user
    namespace gave the program capabilities in it; io_uring_setup returned a ring): now each is refused,
    with the errno the filter assigns (EPERM, ENOSYS, EAFNOSUPPORT), not the kernel's own."""
    code = r"""
import ctypes, errno, os, socket
libc = ctypes.CDLL(None, use_errno=True)
def call(*args):
    r = libc.syscall(*args)
    return r, ctypes.get_errno()
results = {}
results["unshare_user"] = (libc.unshare(0x10000000), ctypes.get_errno())
results["setns"] = call(308, -1, 0)
buf = ctypes.create_string_buffer(120)
results["io_uring_setup"] = call(425, 4, buf)
results["bpf"] = call(321, 0, 0, 0)
results["keyctl"] = call(250, 0, 0, 0, 0, 0)
results["userfaultfd"] = call(323, 0)
results["perf_event_open"] = call(298, 0, 0, -1, -1, 0)
results["ptrace_traceme"] = call(101, 0, 0, 0, 0)
results["process_vm_readv"] = call(310, os.getppid(), 0, 0, 0, 0, 0)
r = libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0)  # raw clone(CLONE_NEWUSER | SIGCHLD)
if r == 0:
    os._exit(0)
results["clone_newuser"] = (r, ctypes.get_errno())
try:
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    results["netlink"] = (0, 0)
except OSError as exc:
    results["netlink"] = (-1, exc.errno)
try:
    socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    results["packet"] = (0, 0)
except OSError as exc:
    results["packet"] = (-1, exc.errno)
for k, (r, e) in sorted(results.items()):
    print(k, r, errno.errorcode.get(e, e))
assert any(r >= 0 for r, _ in results.values()), "every escape refused"
"""
    v = run_program(code, timeout_s=10)
    assert v.verdict == "failed" and "every escape refused" in v.stderr, v
    got = dict((line.split()[0], line.split()[1:]) for line in v.stdout.splitlines())
    for name in ("unshare_user", "setns", "bpf", "keyctl", "userfaultfd", "perf_event_open", "ptrace_traceme",
                 "process_vm_readv", "clone_newuser"):
        assert got[name] == ["-1", "EPERM"], (name, got[name])
    assert got["io_uring_setup"] == ["-1", "ENOSYS"]
    assert got["netlink"] == ["-1", "EAFNOSUPPORT"] and got["packet"] == ["-1", "EAFNOSUPPORT"]
    host_still_works()


def test_ordinary_programs_still_work_under_the_filter():
    """Threads, subprocesses, multiprocessing (POSIX semaphores in the run's own /dev/shm), unix and
    inet sockets (in the empty network namespace), and the C++/Java/JavaScript toolchains."""
    code = """
import multiprocessing, socket, subprocess, threading
def sq(x):
    return x * x
if __name__ == "__main__":
    t = threading.Thread(target=print, args=("thread",)); t.start(); t.join()
    print(subprocess.run(["echo", "child"], capture_output=True, text=True).stdout.strip())
    with multiprocessing.Pool(2) as pool:
        print(pool.map(sq, [1, 2, 3]))
    a, b = socket.socketpair(); a.send(b"u"); print(b.recv(1).decode())
    socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
    socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
"""
    v = run_program(code, timeout_s=20)
    assert v.verdict == "passed", v
    assert v.stdout.split() == ["thread", "child", "[1,", "4,", "9]", "u"]
    from coderforge.sandbox import available_languages

    langs = available_languages()
    samples = {"cpp": '#include <cstdio>\n#include <thread>\nint main(){std::thread t([]{std::puts("cpp");});'
                      't.join();}\n',
               "javascript": "console.log('js')\n",
               "java": 'public class Main { public static void main(String[] a) throws Exception {'
                       ' Thread t = new Thread(() -> System.out.println("java")); t.start(); t.join(); } }\n'}
    for lang, src in samples.items():
        if lang in langs:
            r = run_program(src, lang=lang, timeout_s=60, memory_mb=2048)
            assert r.verdict == "passed" and r.stdout.strip() == {"cpp": "cpp", "javascript": "js",
                                                                   "java": "java"}[lang], (lang, r)


def test_seccomp_program_shape():
    raw = seccomp_filter("x86_64")
    assert raw is not None and len(raw) % 8 == 0 and 40 < len(raw) // 8 < 200
    assert seccomp_filter("riscv64") is None  # no table: no filter, and `sandbox check` says so


def test_the_init_is_handed_this_machines_filter():
    """The host builds the program; the init's configuration carries it (hex) for each step to install."""
    cfg = init_config("/nonexistent", [], uid=None, scratch_mb=1, hide=[], isolate=True, status_fd=-1)
    raw = seccomp_filter()
    assert cfg["seccomp"] == (raw.hex() if raw is not None else None)
