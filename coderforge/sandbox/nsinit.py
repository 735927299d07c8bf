"""The sandbox's init, the process that sets up the namespaces and runs the job inside them: started by
the host as ``python -I -S nsinit.py CONFIG_JSON`` with a status pipe (``status_fd`` in the config), or
as a warm zygote (``--serve``, :func:`serve`). Standard library only, no coderforge imports (it must
start fast and see nothing else).

1. the run's root (:func:`build_root`): a fresh tmpfs holding only the allow-list the host derived
   (:mod:`coderforge.sandbox.rootfs`), read-only, entered with ``pivot_root``, the host's tree detached;
   a zygote builds it once, in a mount (and user) namespace of its own, for all its jobs;
2. ``unshare`` new mount, network, PID, IPC and UTS namespaces (plus a user namespace when not root);
3. fork PID 1 of the new PID namespace: its own ``/proc``, ``/dev/shm`` and scratch ``/tmp`` (a capped
   tmpfs owned by the run's uid, the staged files copied in: :func:`job_fs`);
4. for each step (compile, run) PID 1 forks a child that drops to the run's uid (no groups,
   ``no_new_privs``), applies the rlimits and the host's seccomp filter (:mod:`coderforge.sandbox.seccomp`),
   closes every inherited descriptor but 0-2 and ``execve``s the step with an empty environment; PID 1
   reaps everything, reports how the step ended on the status pipe (JSON) and exits — and the kernel
   kills whatever is left in the namespace.
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
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x20, 0x1000, 0x4000, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_STRICTATIME, MNT_DETACH, ST_RELATIME = 0x400, 0x800, 1 << 24, 2, 0x1000
MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID = 442, -100, 0x8000, 1, 2
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}  # syscall numbers
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 1, 38, 22, 2

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]


def _check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(src, target, fstype, flags, data=""):
    if libc.mount(src.encode() if src else None, target.encode(), fstype.encode() if fstype else None, flags,
                  data.encode() if data else None) != 0:
        _check(-1, f"mount {target}")


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


def pivot(new, put_old):
    """pivot_root(2) into ``new`` (old root at ``put_old``); False where refused (e.g. from an initramfs)."""
    nr = PIVOT_ROOT.get(os.uname().machine)
    if nr is None or libc.syscall(ctypes.c_long(nr), new.encode(), put_old.encode()) != 0:
        return False
    os.chdir("/")
    return True


def copy_stage(dst, uid):
    """Copy the staged program and files (the current directory, perhaps in a detached tree: relative paths
    only) into the scratch directory, owned by the run's uid."""
    for root, dirs, files in os.walk("."):
        for name in dirs + files:
            src, dest = os.path.join(root, name), dst + os.path.join(root, name)[1:]
            if name in dirs:
                os.mkdir(dest, 0o755)
            else:
                with open(src, "rb") as fin, open(dest, "wb") as fout:
                    fout.write(fin.read())
            if uid is not None:
                os.chown(dest, uid, uid)


class MountAttr(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in ("set", "clr", "propagation", "userns_fd")]


def read_only(top, points, compat):
    """Make the root and every mount in it read-only and nosuid: one recursive ``mount_setattr`` (Linux 5.12+),
    else (``compat``) a remount of each of ``points``, keeping the flags a user namespace may not drop."""
    attr = MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0, 0, 0)
    if not compat and libc.syscall(ctypes.c_long(MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), top.encode(),
                                   ctypes.c_uint(AT_RECURSIVE), ctypes.byref(attr),
                                   ctypes.c_size_t(ctypes.sizeof(attr))) == 0:
        return
    for point in [top, *points]:
        kept = os.statvfs(point).f_flag
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID
        flags |= kept & (MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME)
        flags |= 0 if kept & (ST_RELATIME | MS_NOATIME) else MS_STRICTATIME
        mount(None, point, None, flags)


def build_root(root):
    """Switch into the run's root, a fresh tmpfs holding only the allow-list (:mod:`coderforge.sandbox.rootfs`):
    read-only binds at their host paths, the symlinks leading to them, generated /etc files; pivot_root into
    it and detach the host's tree (``compat``, or where pivot_root is refused: chroot; and a remount per
    mount where mount_setattr is missing). A zygote does it once for all its jobs (each copies the result)."""
    os.umask(0o022)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("coderforge-root", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=8m,mode=0755")
    os.mkdir("/tmp/.oldroot", 0o700)
    compat = root.get("compat")
    pivoted = not compat and pivot("/tmp", "/tmp/.oldroot")
    new, old = ("", "/.oldroot") if pivoted else ("/tmp", "")
    for op, path, *target in root["tree"]:
        if op == "dir":
            os.mkdir(new + path, 0o755)
        elif op == "file":
            os.close(os.open(new + path, os.O_CREAT | os.O_WRONLY, 0o644))
        elif op == "bind":
            mount(old + path, new + path, None, MS_BIND | MS_REC)
        else:
            os.symlink(target[0], new + path)
    # each job mounts a proc of its own PID namespace on /proc, which a user namespace may do only while a
    # proc is fully visible in its mount namespace: the host's, kept (writable) under the jobs' own
    mount(old + "/proc", new + "/proc", None, MS_BIND | MS_REC)
    if pivoted:
        _check(libc.umount2(b"/.oldroot", MNT_DETACH), "umount old root")
    os.rmdir(new + "/.oldroot")
    for path, text in root["files"].items():
        with open(new + path, "w") as fh:
            fh.write(text)
    for d in root["hide"]:
        mount("none", new + d, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,mode=0755")
    read_only(new or "/", [new + e[1] for e in root["tree"] if e[0] == "bind"], compat)
    mount(None, new + "/proc", None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | MS_NOEXEC)  # writable
    if not pivoted:
        os.chroot(new)
    os.chdir("/")


def job_fs(cfg, stage):
    """PID 1, inside the root: a /proc of its own PID namespace, the private paths this job covers besides
    the root's, its /dev/shm and the scratch /tmp holding the staged files (``stage``, a descriptor of the
    host's staging directory)."""
    uid = cfg["uid"]
    owner = f",uid={uid},gid={uid}" if uid is not None else ""
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for d in cfg["hide"]:
        mount("none", d, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,mode=0755")
    # /dev/shm for POSIX semaphores (multiprocessing): the run's own, capped
    mount("none", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
          f"size={min(cfg['scratch_mb'], 64)}m,mode=0700{owner}")
    mount("coderforge-scratch", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={cfg['scratch_mb']}m,mode=0700{owner}")
    os.fchdir(stage)  # the staged files: through the descriptor, the host's tree being out of reach
    copy_stage("/tmp", uid)
    os.close(stage)
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
        for name in ("as", "nproc", "fsize", "nofile"):
            resource.setrlimit(getattr(resource, f"RLIMIT_{name.upper()}"), (lim[name], lim[name]))
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
    """Move this process (and so everything it forks) into the run's cgroups, before anything else: through
    the descriptors the host opened (zygote jobs) or the paths."""
    for fd in cfg.get("cgroup_fds") or [os.open(p, os.O_WRONLY) for p in cfg.get("cgroup_procs") or []]:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)


def enter_namespaces(flags, userns):
    """``unshare`` the namespaces in ``flags``, and a user namespace (``userns``) in which we are root, our
    ids outside (the host's, or 0 in a zygote's own user namespace)."""
    uid, gid = os.getuid(), os.getgid()
    _check(libc.unshare(flags | (CLONE_NEWUSER if userns else 0)), "unshare")
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")) if userns else ():
        with open(f"/proc/self/{name}", "w") as fh:
            fh.write(text)


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
        enter_namespaces(flags, cfg["userns"])
    except OSError as exc:
        report({"phase": "setup", "error": str(exc)})
        os._exit(120)
    pid = os.fork()
    if pid == 0:  # PID 1 of the new namespace
        try:
            _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "pdeathsig")
            if cfg.get("root_error"):
                raise OSError(cfg["root_error"])
            stage = cfg.get("stage_fd")
            if cfg.get("root"):  # a fresh init: build the root first (the zygote's jobs start inside it)
                stage = os.open(cfg["stage"], os.O_RDONLY | os.O_DIRECTORY)
                build_root(cfg["root"])
            job_fs(cfg, stage)
        except OSError as exc:
            report({"phase": "setup", "error": str(exc)})
            os._exit(121)
        report(run_steps(cfg))
        os._exit(0)
    _, st = os.waitpid(pid, 0)
    os._exit(os.WEXITSTATUS(st) if os.WIFEXITED(st) else 128 + os.WTERMSIG(st))


def serve(sock_fd, root=None):
    """Zygote mode: a warm init that builds the run's root once (``root``, JSON; :func:`enter_root`) and forks
    one job per request, a SOCK_SEQPACKET message (the job's JSON config) carrying as descriptors the job's
    stdin, stdout, stderr, status pipe, staging directory and cgroup.procs files. The job starts a new
    session, writes ``pid N`` on its status pipe (so the host can kill its process group) and runs like a
    fresh init, inside the root. EOF on the socket (the host went away) ends the zygote."""
    import fcntl
    import socket

    sock = socket.socket(fileno=sock_fd)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # jobs are reaped automatically
    root_error = enter_root(json.loads(root)) if root else None
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 1 << 20, 16)
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
                    os.dup2(fd, i)  # 0 stdin, 1 stdout, 2 stderr, 3 status, 4 staging dir, 5... cgroup.procs
                os.closerange(len(fds), 65536)
                STATUS["fd"] = 3
                os.write(3, f"pid {os.getpid()}\n".encode())
                cfg = json.loads(msg)
                cfg.update(status_fd=3, stage_fd=4, cgroup_fds=list(range(5, len(fds))), root_error=root_error)
                run_job(cfg)
            except BaseException as exc:  # noqa: BLE001
                report({"phase": "setup", "error": f"zygote job: {exc}"})
            os._exit(122)
        for fd in fds:
            os.close(fd)


def enter_root(root):
    """The zygote's own mount (and user) namespace and root; the error, if any, every job then reports."""
    try:
        enter_namespaces(CLONE_NEWNS, root["userns"])
        build_root(root)
        return None
    except OSError as exc:
        return f"cannot build the sandbox root: {exc}"


def main():
    if sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)
    cfg = json.loads(sys.argv[1])
    STATUS["fd"] = cfg["status_fd"]
    run_job(cfg)


if __name__ == "__main__":
    main()
