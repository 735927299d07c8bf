"""The program the sandbox runs for a benchmark problem and a model's output, per language.

Completion mode (base models, MultiPL-E's protocol): prompt + completion + ``"\\n"`` + tests, where a
Python HumanEval-style test gets ``check(<entry_point>)`` appended.

Instruct mode (SFT/DPO models): the code extracted from the answer (``coderforge.evals.instruct``)
replaces the prompt, joined to the tests so that the tests still fit:

* Python: the prompt's top-level imports, then the code (a ``if __name__ == "__main__":`` demo
  dropped), then the tests.
* JavaScript: the code (ES ``export`` keywords dropped: Node runs CommonJS), then the tests.
* C++: the prompt's ``#include`` lines, the code (its ``main`` dropped), then the tests without the
  ``}`` that closes the prompt's open function (MultiPL-E tests start with it).
* Java: the prompt up to the method header (imports, ``class Problem {``, the doc comment), then the
  model's method from its header to its last closing brace at the header's indentation (its ``main``
  dropped), then the tests (which close the method and the class): the splice DeepSeek-Coder's and
  Qwen2.5-Coder's MultiPL-E instruct harness make.

Then a completion marker, printed only once the tests have run (so ``exit(0)`` in a completion does
not pass): a last statement in Python and JavaScript, a statement before the end of ``main`` in C++,
and in Java a harness class that enables assertions (MultiPL-E's Java tests are ``assert`` statements,
which the JVM skips without ``-ea``), runs the tests' ``main`` and prints the marker.
``import org.javatuples.*;`` is removed: the sandbox has no javatuples jar, so the few MultiPL-E Java
problems that use its tuples fail to compile.
"""

from __future__ import annotations

import re

JAVA_HARNESS = "CoderforgeMain"

_PY_MAIN = re.compile(r"""^if\s+__name__\s*==\s*(['"])__main__\1\s*:""")
_PY_IMPORT = re.compile(r"^(?:import\s+[\w.]+(?:\s+as\s+\w+)?(?:\s*,\s*[\w.]+(?:\s+as\s+\w+)?)*"
                        r"|from\s+[\w.]+\s+import\s+.+)$")
_CPP_MAIN = re.compile(r"^[ \t]*(?:int|auto|void)\s+main\s*\(", re.M)
_JAVA_MAIN = re.compile(r"^[ \t]*(?:(?:public|static|final)\s+)+void\s+main\s*\(", re.M)
_JAVA_IMPORT = re.compile(r"^[ \t]*import\s+(?:static\s+)?[\w.]+(?:\.\*)?\s*;[ \t]*$", re.M)
_JAVA_TOP_CLASS = re.compile(r"^public\s+((?:final\s+|abstract\s+)*(?:class|interface|enum|record)\s)", re.M)
_JAVA_CLASS = re.compile(r"^(?:(?:final|abstract)\s+)*class\s+([A-Za-z_]\w*)", re.M)
_JS_EXPORT = re.compile(r"^([ \t]*)export\s+(?:default\s+)?(?=(?:async\s+)?function\b|class\b|const\b|let\b|var\b)",
                        re.M)


# --- completion mode -------------------------------------------------------------------------------------
def completion_source(language: str, prompt: str, completion: str, tests: str, entry_point: str = "") -> str:
    """The program of a completion-mode answer (before the marker)."""
    if language == "python":
        check = f"\ncheck({entry_point})\n" if entry_point and "def check(" in tests else "\n"
        return f"{prompt}{completion}\n\n{tests}\n{check}"
    return f"{prompt}{completion}\n{tests}"


# --- instruct mode ---------------------------------------------------------------------------------------
def strip_python_main(code: str) -> str:
    """``code`` without a top-level ``if __name__ == "__main__":`` block."""
    out, skipping = [], False
    for line in code.split("\n"):
        if _PY_MAIN.match(line):
            skipping = True
            continue
        if skipping and (not line.strip() or line[:1].isspace()):
            continue
        skipping = False
        out.append(line)
    return "\n".join(out)


def _cut_at(code: str, pattern: re.Pattern) -> str:
    m = pattern.search(code)
    return code[:m.start()].rstrip() + "\n" if m else code


def _python_imports(prompt: str, code: str) -> str:
    have = set(code.split("\n"))
    return "".join(line + "\n" for line in prompt.split("\n") if _PY_IMPORT.match(line) and line not in have)


def _cpp_includes(prompt: str) -> str:
    return "".join(line + "\n" for line in prompt.split("\n") if line.lstrip().startswith("#include"))


def _drop_leading_brace(tests: str) -> str:
    """MultiPL-E C++/Java tests open with the ``}`` closing the prompt's function; a complete function
    from an instruct answer already has it."""
    stripped = tests.lstrip()
    return stripped[1:] if stripped.startswith("}") else tests


def _header(prompt: str) -> tuple[str, str]:
    """(everything before the function header, the function's name) of a brace-language prompt whose
    last non-blank line is the header (``... name(params) {``)."""
    lines = prompt.rstrip().split("\n")
    head = lines[-1]
    before_paren = head.split("(")[0]
    names = re.findall(r"[A-Za-z_$][\w$]*", before_paren)
    return "\n".join(lines[:-1]), names[-1] if names else ""


def _java_splice(prompt: str, code: str, tests: str) -> str:
    preamble, name = _header(prompt)
    code = _cut_at(code, _JAVA_MAIN)
    m = re.search(rf"^([ \t]*)(?!//|/\*|\*)[^\n;=]*\b{re.escape(name)}\s*\([^;{{]*\)[^;{{]*\{{", code, re.M) \
        if name else None
    start, indent = (m.start(), m.group(1)) if m else (0, "")
    end = code.rfind("\n" + indent + "}", start)
    body = code[start:end if end > start else len(code)]
    return f"{preamble}\n{body}\n{tests}"


def instruct_source(language: str, prompt: str, code: str, tests: str, entry_point: str = "") -> str:
    """The program of an instruct-mode answer whose extracted code is ``code`` (before the marker)."""
    if language == "python":
        code = strip_python_main(code).strip("\n")
        check = f"\ncheck({entry_point})\n" if entry_point and "def check(" in tests else "\n"
        return f"{_python_imports(prompt, code)}{code}\n\n{tests}\n{check}"
    if language == "javascript":
        return _JS_EXPORT.sub(r"\1", code).strip() + "\n" + tests
    if language == "cpp":
        return f"{_cpp_includes(prompt)}{_cut_at(code, _CPP_MAIN).strip()}\n{_drop_leading_brace(tests)}"
    if language == "java":
        return _java_splice(prompt, code, tests)
    raise ValueError(f"no program layout for language {language!r}")


# --- the completion marker -------------------------------------------------------------------------------
def _cpp_marker(source: str, marker: str) -> str:
    """``std::puts(marker)`` as the last statement of ``main`` (before a trailing ``return``)."""
    mains = list(_CPP_MAIN.finditer(source))
    m = mains[-1] if mains else None
    close = source.rfind("}")
    if m is None or close < m.end():
        return "#include <cstdio>\n" + source  # no main: it will not link, and prints no marker
    body = source[:close]
    ret = re.search(r"\breturn\b[^;{}]*;\s*$", body)
    at = ret.start() if ret else close
    return f"#include <cstdio>\n{source[:at]}    std::puts({_c_string(marker)});\n{source[at:]}"


def _c_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def java_program(source: str, marker: str) -> str:
    """The Java program with assertions on and the marker printed after the tests' ``main``."""
    source = re.sub(r"^[ \t]*import\s+org\.javatuples\.\*\s*;[ \t]*\n?", "", source, flags=re.M)
    source = re.sub(r"^[ \t]*package\s+[\w.]+\s*;[ \t]*\n?", "", source, flags=re.M)
    imports = list(dict.fromkeys(m.group(0).strip() for m in _JAVA_IMPORT.finditer(source)))
    body = _JAVA_TOP_CLASS.sub(r"\1", _JAVA_IMPORT.sub("", source))
    main = _JAVA_MAIN.search(body)
    owner = None
    if main:
        owners = [c for c in _JAVA_CLASS.finditer(body) if c.start() < main.start()]
        owner = owners[-1].group(1) if owners else None
    if owner is None:
        return "\n".join(imports) + "\n" + body  # no main method: running it fails, as it should
    harness = (
        f"public class {JAVA_HARNESS} {{\n"
        "    public static void main(String[] args) throws Throwable {\n"
        f"        ClassLoader loader = {JAVA_HARNESS}.class.getClassLoader();\n"
        "        loader.setDefaultAssertionStatus(true);\n"
        f"        Class<?> tests = Class.forName({_c_string(owner)}, true, loader);\n"
        "        try {\n"
        "            tests.getMethod(\"main\", String[].class).invoke(null, (Object) args);\n"
        "        } catch (java.lang.reflect.InvocationTargetException e) {\n"
        "            Throwable cause = e.getCause();\n"  # the tests' failure, without the reflection frames
        "            System.err.println(cause);\n"
        "            for (StackTraceElement frame : cause.getStackTrace()) {\n"
        "                if (frame.getClassName().startsWith(\"jdk.internal.\")) break;\n"
        "                System.err.println(\"\\tat \" + frame);\n"
        "            }\n"
        "            System.exit(1);\n"
        "        }\n"
        f"        System.out.println({_c_string(marker)});\n"
        "    }\n"
        "}\n")
    return "\n".join(imports) + "\n" + harness + "\n" + body


def with_marker(language: str, source: str, marker: str) -> str:
    """``source`` that prints ``marker`` once its tests have all run."""
    if language == "python":
        return f"{source}print({marker!r})\n"
    if language == "javascript":
        return f"{source}\nconsole.log({_c_string(marker)});\n"
    if language == "cpp":
        return _cpp_marker(source, marker)
    if language == "java":
        return java_program(source, marker)
    raise ValueError(f"no program layout for language {language!r}")
