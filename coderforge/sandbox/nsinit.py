"""The sandbox's init, the process that sets up the namespaces and runs the job inside them: started by
the host as ``python -I -S nsinit.py CONFIG_JSON`` with a status pipe (``status_fd`` in the config), or
as a warm zygote (``--serve``, :func:`serve`). Standard library only, no coderforge imports (it must
start fast and see nothing else).

1. ``unshare`` new mount, network, PID, IPC and UTS namespaces (plus a user namespace when not
   root), make every mount private;
2. fork: the child is PID 1 of the new PID namespace. It mounts a fresh ``/proc``, a size-capped
   tmpfs on ``/tmp`` (the scratch directory) owned by the run's uid, copies the staged files in,
   covers the other world-writable directories with tiny tmpfs mounts and private host paths with
   empty read-only ones;
3. for each step (compile, run) PID 1 forks a child that drops to the run's uid (no groups,
   ``no_new_privs``), applies the rlimits, installs the seccomp filter the host built
   (:mod:`coderforge.sandbox.seccomp`, hex in the config), closes every inherited descriptor but 0-2
   and ``execve``s the step with an empty environment; PID 1 reaps everything and reports how the
   step ended on the status pipe as JSON, then exits — and the kernel kills whatever is left in the
   namespace.
"""

import ctypes
import json
import os
import resource
import signal
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REC, MS_PRIVATE = 0x4000, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2

libc = ctypes.CDLL(None, use_errno=True)


def _check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(src, target, fstype, flags, data=""):
    _check(libc.mount(src.encode() if src else None, target.encode(), fstype.encode() if fstype else None,
                      ctypes.c_ulong(flags), data.encode() if data else None), f"mount {target}")


def install_seccomp(raw):
    """Apply the filter program the host built (:mod:`coderforge.sandbox.seccomp`; packed ``struct
    sock_filter`` array) to this thread and its future children; needs ``no_new_privs``."""

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buf = ctypes.create_string_buffer(raw, len(raw))
    prog = SockFprog(len(raw) // 8, ctypes.cast(buf, ctypes.c_void_p))
    _check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0), "seccomp")


STATUS = {"fd": 3}


def report(status):
    try:
        os.write(STATUS["fd"], json.dumps(status).encode())
    except OSError:
        pass


def setup_fs(cfg):
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.chdir(cfg["stage"])  # keeps the staged files reachable once /tmp is covered
    uid = cfg["uid"]
    owner = f",uid={uid},gid={uid}" if uid is not None else ""
    mount("coderforge-scratch", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV,
          f"size={cfg['scratch_mb']}m,mode=0700{owner}")
    for root, dirs, files in os.walk("."):
        dest = os.path.normpath(os.path.join("/tmp", root))
        for d in dirs:
            os.mkdir(os.path.join(dest, d), 0o755)
            if uid is not None:
                os.chown(os.path.join(dest, d), uid, uid)
        for f in files:
            with open(os.path.join(root, f), "rb") as src, open(os.path.join(dest, f), "wb") as dst:
                dst.write(src.read())
            if uid is not None:
                os.chown(os.path.join(dest, f), uid, uid)
    for d in cfg["world_writable"]:
        if os.path.isdir(d):
            mount("none", d, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=1m,mode=0755")
    for d in cfg["run_owned"]:  # e.g. /dev/shm for POSIX semaphores (multiprocessing): the run's own, capped
        if os.path.isdir(d):
            mount("none", d, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                  f"size={min(cfg['scratch_mb'], 64)}m,mode=0700{owner}")
    for d in cfg["hide"]:
        if os.path.isdir(d):
            mount("none", d, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,mode=0755")
    os.chdir("/tmp")


def exec_step(cfg, step):
    uid = cfg["uid"]
    try:
        if cfg["isolate"]:  # unisolated, it stays in the job's process group, which the host kills
            os.setsid()
        if uid is not None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        lim = step["limits"]
        resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu"], lim["cpu"] + 1))
        resource.setrlimit(resource.RLIMIT_AS, (lim["as"], lim["as"]))
        resource.setrlimit(resource.RLIMIT_NPROC, (lim["nproc"], lim["nproc"]))
        resource.setrlimit(resource.RLIMIT_FSIZE, (lim["fsize"], lim["fsize"]))
        resource.setrlimit(resource.RLIMIT_NOFILE, (lim["nofile"], lim["nofile"]))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        if cfg.get("seccomp"):  # None where the host has no syscall table for this architecture
            install_seccomp(bytes.fromhex(cfg["seccomp"]))
        os.closerange(3, 65536)
        if step.get("inprocess"):
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # as a fresh interpreter has them
            signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        else:
            os.execve(step["argv"][0], step["argv"], step["env"])
    except BaseException as exc:  # noqa: BLE001 - report anything, never fall through
        try:
            os.write(2, f"coderforge-sandbox: cannot start {step['argv'][0]}: {exc}\n".encode())
        finally:
            os._exit(127)
    run_python_here(step)


def run_python_here(step):
    """Run the Python program in this (forked, already confined) interpreter: the same isolation
    and limits as exec'ing a new one, without paying its start-up. The init interpreter is the
    same system Python the program would get (``-I -S``: stdlib only)."""
    import runpy

    os.environ.clear()
    os.environ.update(step["env"])
    script = step["argv"][-1]
    sys.argv = [script]
    sys.path.insert(0, os.getcwd())
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = exc.code
    except BaseException:  # noqa: BLE001 - an uncaught exception: traceback and status 1, like python
        import traceback

        etype, exc, tb = sys.exc_info()
        while tb is not None and tb.tb_frame.f_code.co_filename != script:  # drop our and runpy's frames
            tb = tb.tb_next
        traceback.print_exception(etype, exc, tb)
        code = 1
    finish(code)


def finish(code):
    """Leave like an interpreter at the end of a program (exit status rules of ``SystemExit``,
    non-daemon threads joined, atexit handlers run, output flushed), but with ``os._exit`` so that
    nothing of the init's own stack runs afterwards."""
    if code is None:
        code = 0
    elif not isinstance(code, int):
        try:
            print(code, file=sys.stderr)
        except BaseException:  # noqa: BLE001
            pass
        code = 1
    try:
        if "threading" in sys.modules:
            sys.modules["threading"]._shutdown()
        import atexit

        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001
            pass
    os._exit(code & 0xFF)


def run_steps(cfg):
    """PID 1: run the steps in order; returns the status of the last one run."""
    status = {"phase": "setup", "exit": None, "signal": None}
    for step in cfg["steps"]:
        pid = os.fork()
        if pid == 0:
            exec_step(cfg, step)
        while True:  # reap every orphan; stop when our step ends
            try:
                got, st = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            if got == pid:
                break
        status = {"phase": step["phase"], "exit": os.WEXITSTATUS(st) if os.WIFEXITED(st) else None,
                  "signal": os.WTERMSIG(st) if os.WIFSIGNALED(st) else None}
        if status["exit"] != 0:
            break
    return status


def join_cgroups(cfg):
    """Move this process (and so everything it forks) into the run's cgroups, before anything else."""
    for path in cfg.get("cgroup_procs") or []:
        with open(path, "w") as fh:
            fh.write(str(os.getpid()))


def run_job(cfg):
    """Run one job to the end in this process (never returns)."""
    try:
        join_cgroups(cfg)
    except OSError as exc:
        report({"phase": "setup", "error": f"cannot join the run's cgroup: {exc}"})
        os._exit(119)
    if not cfg["isolate"]:  # explicitly allowed unisolated run: limits, session, empty env, scratch cwd only
        os.chdir(cfg["stage"])
        report(run_steps(cfg))
        os._exit(0)
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    if cfg.get("simulate_unshare_failure"):
        flags |= 0x1  # not a namespace flag: the real unshare(2) call fails with EINVAL
    try:
        if cfg["userns"]:
            outer_uid, outer_gid = os.getuid(), os.getgid()
            _check(libc.unshare(flags | CLONE_NEWUSER), "unshare")
            with open("/proc/self/setgroups", "w") as fh:
                fh.write("deny")
            with open("/proc/self/uid_map", "w") as fh:
                fh.write(f"0 {outer_uid} 1")
            with open("/proc/self/gid_map", "w") as fh:
                fh.write(f"0 {outer_gid} 1")
        else:
            _check(libc.unshare(flags), "unshare")
    except OSError as exc:
        report({"phase": "setup", "error": str(exc)})
        os._exit(120)
    pid = os.fork()
    if pid == 0:  # PID 1 of the new namespace
        try:
            _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "pdeathsig")
            setup_fs(cfg)
        except OSError as exc:
            report({"phase": "setup", "error": str(exc)})
            os._exit(121)
        report(run_steps(cfg))
        os._exit(0)
    _, st = os.waitpid(pid, 0)
    os._exit(os.WEXITSTATUS(st) if os.WIFEXITED(st) else 128 + os.WTERMSIG(st))


def serve(sock_fd):
    """Zygote mode: a warm init that forks one job per request. A request is a SOCK_SEQPACKET
    message (the job's JSON config) carrying four descriptors: the job's stdin, stdout, stderr and
    status pipe. The forked job starts a new session, writes ``pid N`` on its status pipe (so the
    host can kill its process group) and runs like a freshly started init. EOF on the socket (the
    host went away) ends the zygote."""
    import fcntl
    import socket

    sock = socket.socket(fileno=sock_fd)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # jobs are reaped automatically
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 1 << 20, 4)
        except OSError:
            os._exit(0)
        if not msg:
            os._exit(0)
        pid = os.fork()
        if pid == 0:
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                os.setsid()
                high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
                for i, fd in enumerate(high):
                    os.dup2(fd, i)  # 0 stdin, 1 stdout, 2 stderr, 3 status
                os.closerange(4, 65536)
                STATUS["fd"] = 3
                os.write(3, f"pid {os.getpid()}\n".encode())
                cfg = json.loads(msg)
                cfg["status_fd"] = 3
                run_job(cfg)
            except BaseException as exc:  # noqa: BLE001
                report({"phase": "setup", "error": f"zygote job: {exc}"})
            os._exit(122)
        for fd in fds:
            os.close(fd)


def main():
    if sys.argv[1] == "--serve":
        serve(int(sys.argv[2]))
    cfg = json.loads(sys.argv[1])
    STATUS["fd"] = cfg["status_fd"]
    run_job(cfg)


if __name__ == "__main__":
    main()
