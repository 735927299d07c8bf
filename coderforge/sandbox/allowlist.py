"""Where the toolchains the sandbox runs live, as the :class:`~coderforge.sandbox.rootfs.RootPlan` of
what a run's root holds. Derived by asking them (:mod:`coderforge.sandbox.languages`), never from a fixed
list of directories:

- Python: its prefix when it has its own (a pyenv build under ``/root/.pyenv``, ``/opt/python3.x``),
  else its standard library and ``libpython`` (``sysconfig``); its site-packages are covered;
- Java: the JDK ``java``/``javac`` belong to (``java.home``, found as the launcher finds it, from its own
  location) and what its links point at outside it (Debian keeps its configuration in /etc/java-N-openjdk);
- JavaScript: node's binary, or its prefix when that is its own (nvm, /opt/node-vX);
- C++: what ``g++ -###`` runs and links (cc1plus, as, collect2, ld, crt files, libraries) and the include
  directories ``g++ -E -v`` searches;
- ``/bin/sh`` and a few utilities programs spawn (``UTILITIES``), looked up on the sandbox's PATH;
- the loader and the libraries it resolves for all of these (``ldd``), its configured directories
  (``/etc/ld.so.conf``), its cache; the CA certificates the runtimes' TLS stacks read (the Python ssl
  module's OpenSSL paths and the directories their links lead to); time zones; the C.UTF-8 locale.
"""

from __future__ import annotations

import glob
import json
import os
import shlex
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

from coderforge.sandbox.host import SYSTEM_PATH, system_python
from coderforge.sandbox.languages import LANGUAGES, get_language
from coderforge.sandbox.rootfs import BROAD, RootPlan, inside, resolve

SHELL = "/bin/sh"
# what programs commonly spawn (``subprocess.run(["echo", ...])``, ``#!/usr/bin/env``): looked up on PATH
UTILITIES = ("echo", "printf", "cat", "ls", "env", "sleep", "true", "false", "head", "tail", "wc", "sort", "uniq",
             "tr", "cut", "grep", "sed")
LOADER_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d")
LOCALES = ("/usr/lib/locale/C.utf8", "/usr/lib/locale/C.UTF-8", "/usr/lib/locale/locale-archive")
TZ_FILES = ("/etc/localtime", "/etc/timezone")
CA_FALLBACK = ("/etc/ssl/certs", "/etc/pki/tls/certs", "/etc/ssl/cert.pem", "/etc/pki/ca-trust/extracted")

_PY_QUERY = """import json, site, sys, sysconfig
v = sysconfig.get_config_var
out = {"prefix": sys.base_prefix, "exec_prefix": sys.base_exec_prefix, "stdlib": sysconfig.get_path("stdlib"),
       "platstdlib": sysconfig.get_path("platstdlib"), "tzpath": v("TZPATH") or "", "ssl": [],
       "site": site.getsitepackages() + [sysconfig.get_path("purelib"), sysconfig.get_path("platlib")],
       "libpython": f"{v('LIBDIR')}/{v('LDLIBRARY')}" if v("Py_ENABLE_SHARED") else None}
try:
    import ssl
    p = ssl.get_default_verify_paths()
    out["ssl"] = [p.cafile, p.capath, p.openssl_cafile, p.openssl_capath]
except ImportError:
    pass
print(json.dumps(out))"""


def _run(argv: list[str], stdin: str = "") -> tuple[str, str]:
    """(stdout, stderr) of a host tool asked about itself; empty when it cannot run."""
    try:
        res = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60, cwd="/",
                             env={"PATH": SYSTEM_PATH, "LANG": "C"})
        return res.stdout, res.stderr
    except (OSError, subprocess.SubprocessError):
        return "", ""


def _python(plan: RootPlan, py: str) -> None:
    """The interpreter, its own prefix or its standard library, its CA and time-zone paths (it is asked)."""
    plan.add(py, "python")
    out, _ = _run([py, "-I", "-S", "-c", _PY_QUERY])
    try:
        info = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return
    prefix = resolve(info["prefix"], {})
    if prefix not in BROAD:  # its own prefix (pyenv, /opt/python3.x): that tree, no more
        plan.add(info["prefix"], "python")
        plan.add(info["exec_prefix"], "python")
    else:
        for p in (info["stdlib"], info["platstdlib"], info["libpython"]):
            plan.add(p, "python")
    plan.hide.update(os.path.realpath(p) for p in info["site"] if p)
    for d in info["tzpath"].split(os.pathsep):
        plan.add(d, "time zones")
    _ca_certificates(plan, [p for p in info["ssl"] if p])
    capath = info["ssl"][3] if len(info["ssl"]) > 3 else None
    if capath:
        plan.add(os.path.join(os.path.dirname(capath), "openssl.cnf"), "ca certificates")


def _ca_certificates(plan: RootPlan, paths: list[str]) -> None:
    """The CA bundle and hashed directory a TLS stack reads, and the directories their links point into."""
    for p in paths:
        real = plan.add(p, "ca certificates")
        if real and os.path.isdir(real):
            targets = {os.path.dirname(os.path.realpath(e.path)) for e in os.scandir(real) if e.is_symlink()}
            for t in sorted(targets - {real} - BROAD):
                plan.add(t, "ca certificates")


def _java(plan: RootPlan, exe: str) -> None:
    """The JDK the launcher belongs to (java.home is derived the same way by the launcher itself) and
    what its links point at outside it (Debian keeps its configuration under /etc/java-N-openjdk)."""
    real = plan.add(exe, "java")
    home = os.path.dirname(os.path.dirname(real)) if real else ""
    if not home or not os.path.isdir(os.path.join(home, "lib")) or not plan.add(home, "java"):
        return
    for sub in ("bin", "conf", "lib"):
        for root, dirs, files in os.walk(os.path.join(home, sub)):
            for name in dirs + files:
                p = os.path.join(root, name)
                if os.path.islink(p) and os.path.exists(p) and not inside(os.path.realpath(p), home):
                    plan.add_dir_of(p, "java")


# asked of node: where a distribution's build keeps what it loads outside the binary (Debian/Ubuntu's
# `nodejs`: externalized built-ins such as cjs-module-lexer and its global modules, under /usr/share/nodejs)
_NODE_DIRS = "const v = process.config.variables; console.log(JSON.stringify([v.node_prefix || '', " \
             "v.node_relative_path || '']))"


def _node(plan: RootPlan, exe: str) -> None:
    real = plan.add(exe, "javascript")
    prefix = os.path.dirname(os.path.dirname(real)) if real else "/"
    if prefix not in BROAD:  # nvm, /opt/node-vX: its own tree
        plan.add(prefix, "javascript")
        return
    out, _ = _run([exe, "-e", _NODE_DIRS])
    try:
        node_prefix, relative = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return
    for rel in filter(None, str(relative).split(":")):
        path = os.path.join(str(node_prefix), rel)
        if os.path.isdir(path):
            plan.add(path, "javascript")


def _cpp(plan: RootPlan, gxx: str) -> list[str]:
    """What the g++ driver runs for a compile-and-link (``-###``), the files and libraries it links, and
    the include directories it searches; returns the programs (for the loader's closure)."""
    plan.add(gxx, "cpp")
    _, dry = _run([gxx, "-###", "-std=c++17", "-O2", "-x", "c++", "-", "-o", "/nonexistent/prog"])
    programs, libdirs, libs = [], [], []
    for line in dry.splitlines():
        if not line.startswith(" "):
            continue
        argv = shlex.split(line)
        prog = argv[0] if os.path.isabs(argv[0]) else _which(argv[0])
        programs += [prog] if prog else []
        if argv[0].endswith("collect2"):
            programs.append(_which("ld") or "")
        for arg in argv[1:]:
            arg = arg.split("=", 1)[1] if arg.startswith("-plugin-opt=") else arg
            if arg.startswith("-L"):
                libdirs.append(arg[2:])
            elif arg.startswith("-l"):
                libs.append(arg[2:])
            elif os.path.isabs(arg) and os.path.isfile(arg):
                plan.add_dir_of(arg, "cpp")
    for prog in filter(None, programs):  # gcc's own programs: its install directory; as, ld: the tools
        if "/gcc/" in os.path.realpath(prog):
            plan.add_dir_of(prog, "cpp")
        else:
            plan.add(prog, "cpp")
    for lib in dict.fromkeys(libs):
        found = next((f"{d}/lib{lib}{ext}" for d in libdirs for ext in (".so", ".a")
                      if os.path.exists(f"{d}/lib{lib}{ext}")), None)
        if found:
            plan.add_dir_of(found, "cpp")
    _cpp_includes(plan, gxx)
    return [p for p in programs if p]


def _cpp_includes(plan: RootPlan, gxx: str) -> None:
    """The directories ``#include <...>`` searches (``g++ -E -v``)."""
    _, verbose = _run([gxx, "-x", "c++", "-E", "-v", "-", "-o", "/dev/null"])
    in_list = False
    for line in verbose.splitlines():
        if line.startswith("#include <...>"):
            in_list = True
        elif line.startswith("End of search list"):
            in_list = False
        elif in_list and os.path.isdir(line.strip()):
            plan.add(line.strip(), "cpp")


def _which(name: str) -> str | None:
    return shutil.which(name, path=SYSTEM_PATH)


def _ld_so_conf(path: str = "/etc/ld.so.conf", depth: int = 0) -> list[str]:
    """The library directories the dynamic loader is configured with (``include`` globs followed)."""
    dirs: list[str] = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return dirs
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line.startswith("include") and depth < 8:
            for pattern in line.split()[1:]:
                pattern = pattern if pattern.startswith("/") else os.path.join(os.path.dirname(path), pattern)
                for inc in sorted(glob.glob(pattern)):
                    dirs += _ld_so_conf(inc, depth + 1)
        elif line.startswith("/"):
            dirs.append(line.split("=", 1)[0])
    return dirs


def _system(plan: RootPlan, exes: list[str]) -> None:
    """The loader, the libraries it resolves for the runtimes, its configuration, locale and time zones."""
    out, _ = _run(["ldd", *[os.path.realpath(e) for e in exes]]) if _which("ldd") else ("", "")
    for line in out.splitlines():
        parts = line.split()
        lib = parts[2] if len(parts) > 2 and parts[1] == "=>" else parts[0] if parts else ""
        if not lib.startswith("/") or not os.path.exists(lib):
            continue
        if "=>" in parts:
            plan.add_dir_of(lib, "libraries")
        else:
            plan.add(lib, "loader")
    for d in _ld_so_conf():
        if resolve(d, {}) not in BROAD:
            plan.add(d, "libraries")
    for p in LOADER_FILES:
        plan.add(p, "loader")
    for p in LOCALES:
        plan.add(p, "locale")
    for p in TZ_FILES:
        plan.add(p, "time zones")
    zone = os.path.realpath("/etc/localtime")
    if "/zoneinfo/" in zone:
        plan.add(zone[:zone.index("/zoneinfo/") + len("/zoneinfo")], "time zones")
    if not any("ca certificates" in v for v in plan.binds.values()):
        _ca_certificates(plan, [p for p in CA_FALLBACK if os.path.exists(p)])


def toolchains() -> tuple[tuple[str, str], ...]:
    """(language, executable) of every toolchain the languages use here: the key of the plan's cache
    (looked up once per process and ``CODERFORGE_SANDBOX_PYTHON`` setting)."""
    return _toolchains(os.environ.get("CODERFORGE_SANDBOX_PYTHON"))


@lru_cache(maxsize=8)
def _toolchains(_python_override: str | None) -> tuple[tuple[str, str], ...]:
    tools = []
    for name in LANGUAGES:
        for step in get_language(name, 256).steps:
            exe = step["argv"][0]
            if exe and os.path.isabs(exe) and os.access(exe, os.X_OK):
                tools.append((name, exe))
    return tuple(dict.fromkeys(tools))


@lru_cache(maxsize=8)
def _plan_for(tools: tuple[tuple[str, str], ...]) -> RootPlan:
    plan = RootPlan()
    exes = [exe for _, exe in tools]
    for name, exe in tools:
        if name == "python":
            _python(plan, exe)
        elif name == "java":
            _java(plan, exe)
        elif name == "javascript":
            _node(plan, exe)
        elif name == "cpp":
            exes += _cpp(plan, exe)
    plan.shell = plan.add(SHELL, "shell") is not None
    exes += [SHELL] if plan.shell else []
    for exe in filter(None, map(_which, UTILITIES)):
        if plan.add(exe, "shell"):
            exes.append(exe)
    _system(plan, exes)
    return plan


def root_plan() -> RootPlan:
    """The allow-list of this machine's toolchains (derived once per process and configuration)."""
    return _plan_for(toolchains())


def probe_argv() -> list[str]:
    """A trivial program that exists inside the root, for the probe: the shell, else the Python."""
    if root_plan().shell:
        return [SHELL, "-c", "exit 0"]
    return [system_python() or sys.executable, "-I", "-S", "-c", "pass"]
