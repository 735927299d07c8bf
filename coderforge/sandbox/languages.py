"""How each language is compiled and run inside the sandbox.

A language is a source file name and a POSIX shell script run as the sandbox user inside the
scratch directory. Scripts use ``$LIMITS`` (the ``prlimit`` prefix with the run's limits) and
``$CLIMITS`` (more generous limits for compilers); a compile failure exits with status
``COMPILE_FAILED`` after printing the compiler's output to stderr.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass

COMPILE_FAILED = 97
COMPILE_MARKER = "coderforge-sandbox: compile error"

_SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def system_python() -> str | None:
    """An interpreter every user can execute (the venv's may live under a private home).

    ``CODERFORGE_SANDBOX_PYTHON`` overrides."""
    env = os.environ.get("CODERFORGE_SANDBOX_PYTHON")
    if env:
        return env
    for name in ("python3", "python"):
        found = shutil.which(name, path=_SYSTEM_PATH)
        if found:
            return found
    return None


@dataclass(frozen=True)
class Language:
    name: str
    source: str
    script: str
    tools: tuple[str, ...]
    as_extra_mb: int = 0  # address space a runtime reserves beyond its heap (V8, JVM)
    nproc: int = 64  # threads count as processes: JVMs start many
    compiles: bool = False

    def available(self) -> bool:
        return all(shutil.which(t, path=_SYSTEM_PATH) or os.path.isabs(t) and os.access(t, os.X_OK)
                   for t in self.tools)


def _compile(cmd: str) -> str:
    return (f'$CLIMITS {cmd} >&2 || {{ echo "{COMPILE_MARKER}" >&2; exit {COMPILE_FAILED}; }}\n')


def java_source_name(code: str) -> str:
    m = re.search(r"public\s+(?:final\s+|abstract\s+)*class\s+([A-Za-z_]\w*)", code)
    return f"{m.group(1) if m else 'Main'}.java"


def get_language(lang: str, memory_mb: int, code: str = "") -> Language:
    lang = {"py": "python", "python3": "python", "js": "javascript", "node": "javascript",
            "c++": "cpp", "cxx": "cpp"}.get(lang.lower(), lang.lower())
    if lang == "python":
        py = system_python() or "python3"
        return Language("python", "prog.py", f'exec $LIMITS {py} -I prog.py\n', (py,))
    if lang == "javascript":
        return Language("javascript", "prog.js",
                        f'exec $LIMITS node --max-old-space-size={memory_mb} prog.js\n', ("node",),
                        as_extra_mb=768)
    if lang == "cpp":
        return Language("cpp", "prog.cpp", _compile("g++ -std=c++17 -O2 -o prog prog.cpp") + "exec $LIMITS ./prog\n",
                        ("g++",), compiles=True)
    if lang == "java":
        src = java_source_name(code)
        cls = src[:-5]
        jvm = (f"-Xmx{memory_mb}m -XX:ReservedCodeCacheSize=32m -XX:CompressedClassSpaceSize=32m "
               "-XX:+UseSerialGC -XX:TieredStopAtLevel=1")
        return Language("java", src,
                        _compile(f"javac -J-Xmx512m -J-XX:+UseSerialGC -J-XX:CompressedClassSpaceSize=64m "
                                 f"-J-XX:ReservedCodeCacheSize=64m -J-XX:TieredStopAtLevel=1 {src}") + f"exec $LIMITS java {jvm} -cp . {cls}\n",
                        ("javac", "java"), as_extra_mb=1024, nproc=256, compiles=True)
    raise ValueError(f"unsupported language {lang!r} (python, javascript, cpp, java)")


LANGUAGES = ("python", "javascript", "cpp", "java")


def available_languages() -> list[str]:
    return [name for name in LANGUAGES if get_language(name, 256).available()]
