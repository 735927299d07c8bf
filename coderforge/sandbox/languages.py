"""How each language is compiled and run inside the sandbox: a source file name and a list of steps
(``compile`` then ``run``), each an absolute ``argv`` executed in the scratch directory."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field

from coderforge.sandbox.host import SYSTEM_PATH, init_python, system_python


def _tool(name: str) -> str | None:
    return shutil.which(name, path=SYSTEM_PATH)


@dataclass(frozen=True)
class Language:
    name: str
    source: str
    steps: list[dict] = field(default_factory=list)  # {"phase": "compile"|"run", "argv": [...]}
    as_extra_mb: int = 0  # address space a runtime reserves beyond its heap (V8, JVM)
    nproc: int = 64  # threads count as processes: JVMs start many

    @property
    def compiles(self) -> bool:
        return any(s["phase"] == "compile" for s in self.steps)

    def available(self) -> bool:
        return all(s["argv"][0] and os.path.isabs(s["argv"][0]) and os.access(s["argv"][0], os.X_OK)
                   for s in self.steps if not s["argv"][0].startswith("./"))


def java_source_name(code: str) -> str:
    m = re.search(r"public\s+(?:final\s+|abstract\s+)*class\s+([A-Za-z_]\w*)", code)
    return f"{m.group(1) if m else 'Main'}.java"


def canonical(lang: str) -> str:
    lang = lang.lower()
    return {"py": "python", "python3": "python", "js": "javascript", "node": "javascript", "c++": "cpp",
            "cxx": "cpp"}.get(lang, lang)


def get_language(lang: str, memory_mb: int, code: str = "") -> Language:
    lang = canonical(lang)
    if lang == "python":
        # -E -s: ignore PYTHON* variables and the user site; -S: no site-packages (stdlib only, fast
        # start). When the sandbox's init runs on this same interpreter the program runs in its
        # forked, confined process instead of a new one ("inprocess"), saving the start-up.
        py = system_python() or ""
        inprocess = bool(py) and os.path.realpath(py) == os.path.realpath(init_python())
        return Language("python", "prog.py", [{"phase": "run", "argv": [py, "-E", "-s", "-S", "prog.py"],
                                               "inprocess": inprocess}])
    if lang == "javascript":
        node = [_tool("node") or "", f"--max-old-space-size={memory_mb}", "prog.js"]
        return Language("javascript", "prog.js", [{"phase": "run", "argv": node}], as_extra_mb=768)
    if lang == "cpp":
        return Language("cpp", "prog.cpp", [
            {"phase": "compile", "argv": [_tool("g++") or "", "-std=c++17", "-O2", "-o", "prog", "prog.cpp"]},
            {"phase": "run", "argv": ["./prog"]}])
    if lang == "java":
        src = java_source_name(code)
        jvm = [f"-Xmx{memory_mb}m", "-XX:ReservedCodeCacheSize=32m", "-XX:CompressedClassSpaceSize=32m",
               "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
        return Language("java", src, [
            {"phase": "compile", "argv": [_tool("javac") or "", "-J-Xmx512m", "-J-XX:+UseSerialGC",
                                          "-J-XX:CompressedClassSpaceSize=64m",
                                          "-J-XX:ReservedCodeCacheSize=64m", "-J-XX:TieredStopAtLevel=1",
                                          src]},
            {"phase": "run", "argv": [_tool("java") or "", *jvm, "-cp", ".", src[:-5]]}],
            as_extra_mb=1024, nproc=256)
    raise ValueError(f"unsupported language {lang!r} (python, javascript, cpp, java)")


LANGUAGES = ("python", "javascript", "cpp", "java")


def available_languages() -> list[str]:
    return [name for name in LANGUAGES if get_language(name, 256).available()]
