"""The filesystem a sandboxed program sees: an allow-list, not the host.

Each run's root is a fresh tmpfs (built by :mod:`coderforge.sandbox.nsinit`) into which only the paths
of a :class:`RootPlan` are bind-mounted, read-only, at their host locations, with the symlinks leading to
them, a few device nodes, a fresh ``/proc``, the run's scratch ``/tmp``, its own ``/dev/shm`` and
generated ``/etc/passwd``, ``group``, ``hosts`` and ``nsswitch.conf``. Nothing else of the host exists in
there: no checkouts, homes, mounted secrets, service-account tokens, package indexes or host configuration.
What goes into the plan is derived from the toolchains in use by :mod:`coderforge.sandbox.allowlist`.

Refused whatever a derivation asks for: a top-level system directory whole (``/usr``, ``/etc``, ``/opt``
...), anything inside this checkout, the running virtualenv or a secrets mount, and any directory holding
one of them or a home (``/root`` itself; a runtime prefix inside it is fine). Private paths inside an
allowed directory (site-packages, an installed copy of this package) are covered with empty read-only
tmpfs.
"""

from __future__ import annotations

import os

from coderforge.sandbox.host import private_host_paths

BROAD = frozenset({"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/media", "/mnt", "/opt", "/proc", "/root",
                   "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/usr/bin", "/usr/lib", "/usr/libexec",
                   "/usr/local", "/usr/local/bin", "/usr/local/share", "/usr/sbin", "/usr/share", "/usr/src",
                   "/var", "/var/lib", "/var/run"})
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
             ("stderr", "/proc/self/fd/2"))
WRITABLE = ("/tmp", "/dev/shm")
SITE_DIRS = ("site-packages", "dist-packages")


def resolve(path: str, links: dict[str, str]) -> str:
    """The real path of ``path``, recording every symlink met on the way (its location -> its target, as
    written) in ``links``: the sandbox recreates those links, so the same names lead to the same files."""
    todo = list(reversed(os.path.abspath(path).split("/")))
    cur, hops = "/", 0
    while todo:
        part = todo.pop()
        if part in ("", "."):
            continue
        if part == "..":
            cur = os.path.dirname(cur)
            continue
        nxt = os.path.join(cur, part)
        if os.path.islink(nxt):
            hops += 1
            if hops > 40:
                raise OSError(f"too many symlinks resolving {path}")
            target = os.readlink(nxt)
            links[nxt] = target
            todo.extend(reversed(target.split("/")))
            if target.startswith("/"):
                cur = "/"
        else:
            cur = nxt
    return cur


def inside(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


class RootPlan:
    """The allow-list of one configuration of toolchains: read-only binds (real host paths, with the
    purposes that asked for them), the symlinks leading to them, and the private paths to cover inside."""

    def __init__(self):
        self.binds: dict[str, set[str]] = {}
        self.links: dict[str, str] = {}
        self.hide: set[str] = set()
        self.refused: dict[str, str] = {}
        self.shell = False
        self._configs: dict[tuple[str, ...], dict] = {}
        private = [os.path.realpath(p) for p in private_host_paths()]
        homes = [os.path.realpath(p) for p in ("/root", "/home", os.path.expanduser("~"))]
        self._inside_refused = [p for p in private if p not in homes]  # a runtime prefix may live in a home
        # an installed copy of this package (in site-packages) is covered instead: its parents hold the stdlib
        self._holder_refused = homes + [p for p in private if os.path.basename(p) not in SITE_DIRS]

    def _refusal(self, real: str, whole: bool = True) -> str | None:
        if whole and real in BROAD and os.path.isdir(real):
            return "a top-level system directory is never mounted whole"
        for p in self._inside_refused:
            if inside(real, p):
                return f"inside private path {p}"
        for p in self._holder_refused:
            if whole and inside(p, real):
                return f"holds private path {p}"
        return None

    def add(self, path: str | None, purpose: str) -> str | None:
        """Allow ``path`` (file or directory) and the symlinks leading to it; its real path, or None."""
        if not path:
            return None
        links: dict[str, str] = {}
        try:
            real = resolve(path, links)
        except OSError:
            return None
        if not os.path.exists(real):
            return None
        why = self._refusal(real) or next(filter(None, (self._refusal(p, whole=False) for p in links)), None)
        if why:
            self.refused[real] = why
            return None
        self.links.update(links)
        self.binds.setdefault(real, set()).add(purpose)
        return real

    def add_dir_of(self, path: str, purpose: str) -> None:
        """Allow the directory holding ``path`` (not when that is a top-level one) and the file itself,
        with the links leading to it."""
        real = resolve(path, {})
        if os.path.exists(real) and os.path.dirname(real) not in BROAD:
            self.add(os.path.dirname(real), purpose)
        self.add(path, purpose)

    def _kept(self) -> list[str]:
        kept: list[str] = []
        for p in sorted(self.binds):
            if not any(os.path.isdir(k) and inside(p, k) for k in kept):
                kept.append(p)
        return kept

    def config(self, extra_hide: tuple[str, ...] = ()) -> dict:
        """What the init needs (JSON): binds ``[path, is_dir]``, symlinks, device nodes, and the private
        paths (ours and ``extra_hide``) that lie inside an allowed directory, to cover."""
        key = tuple(extra_hide)
        if key not in self._configs:
            kept = self._kept()
            dirs = [k for k in kept if os.path.isdir(k)]
            links = sorted((p, t) for p, t in self.links.items()
                           if p not in kept and not any(inside(p, d) for d in dirs))
            hide: list[str] = []
            for h in sorted(self.hide | {os.path.realpath(p) for p in key}):
                if os.path.isdir(h) and any(inside(h, d) and h != d for d in dirs) \
                        and not any(inside(h, x) for x in hide):
                    hide.append(h)
            self._configs[key] = {"tree": _tree(kept, links), "hide": hide}
        return self._configs[key]

    def report(self) -> dict:
        """The allow-list in words, for ``coderforge sandbox check``."""
        cfg = self.config(tuple(private_host_paths()))
        binds = [e[1] for e in cfg["tree"] if e[0] == "bind"]
        return {"root": "fresh tmpfs, read-only; nothing of the host but what is listed here",
                "read_only": {p: ", ".join(sorted(self.binds[p])) for p in binds if p in self.binds},
                "symlinks": {e[1]: e[2] for e in cfg["tree"] if e[0] == "link" and not e[1].startswith("/dev/")},
                "devices": [p for p in binds if p.startswith("/dev/")], "covered_inside": cfg["hide"],
                "generated": sorted(etc_files()), "writable": list(WRITABLE), "proc": "fresh, own PID namespace",
                "refused": self.refused}


def _tree(binds: list[str], links: list[tuple[str, str]]) -> list[list]:
    """The init's build steps, in order: directories (parents first), empty files to mount on, binds, then
    symlinks (last, so that building never follows one)."""
    devices = [d for d in DEVICES if os.path.exists(d)]
    links = links + [(f"/dev/{n}", t) for n, t in DEV_LINKS]
    points = [(p, os.path.isdir(p)) for p in binds] + [(d, False) for d in devices]
    dirs = {"/proc", "/tmp", "/dev/shm", "/etc"} | {p for p, is_dir in points if is_dir}
    dirs |= {os.path.dirname(p) for p, _ in points} | {os.path.dirname(p) for p, _ in links}
    for d in list(dirs):
        while d not in ("/", ""):
            dirs.add(d)
            d = os.path.dirname(d)
    dirs.discard("/")
    return ([["dir", d] for d in sorted(dirs, key=lambda d: (d.count("/"), d))]
            + [["file", p] for p, is_dir in points if not is_dir]
            + [["bind", p] for p, _ in points] + [["link", p, t] for p, t in links])


def etc_files() -> dict[str, str]:
    """The generated host configuration of every run: root and nobody (a run's throw-away uid has no
    name, as on the host); localhost; the files databases only."""
    return {"/etc/passwd": "root:x:0:0:root:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n",
            "/etc/group": "root:x:0:\nnogroup:x:65534:\n",
            "/etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
            "/etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n"}
