"""A teacher's response → problem / solution / tests, and the program the sandbox runs for them.

The synthesis prompt (``prompts/oss_instruct.md``) asks for three sections, ``### Problem``,
``### Solution`` (one fenced block in the seed's language) and ``### Tests`` (one fenced block).
Models drift from that, so ``parse_response`` accepts:

* other heading styles (``## Solution``, ``**Tests:**``, ``Problem: ...`` with the text on the same
  line) and synonyms (task / instruction, answer / implementation / code, unit tests / test cases);
* prose anywhere: only the code blocks of the solution and tests sections are taken;
* several code blocks: the solution is the first block in the seed's language (untagged counts),
  the tests are every such block of the tests section; output/text blocks are never code;
* wrong language tags (a Java solution tagged ``c++``): used when no block has the right tag;
* unterminated fences: a block runs to the next fence that opens with a language tag (a section
  heading just before it is moved out of the block) or to the end of the response;
* missing headings: code blocks outside the problem section are told apart by test markers
  (``assert``, ``int main``, ``static void main``).

Each departure is recorded in ``Parsed.issues`` (``no_tests_section``, ``unterminated_fence``,
``language_tag:c++`` ...), so a later step can count format errors apart from wrong code.

``program_for(language, solution, tests)`` builds ``(code, files)`` for
``coderforge.sandbox.run_program``: the solution followed by the tests in one source file, with
what would stop that file from compiling removed: Python's ``if __name__ == "__main__":`` demo in
the solution and test imports of names the solution defines; JavaScript ``import``/``export``
(Node runs CommonJS), requires of the solution by relative path and duplicate requires; C++'s
``main`` in the solution and quoted ``#include``s of it in the tests; Java ``package`` lines, imports
gathered at the top, and ``public`` taken off the solution's top-level types so the tests' public class
(``Main``) names the file the sandbox compiles and runs.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

LANG_TAGS = {
    "python": {"python", "py", "python3", "py3"},
    "javascript": {"javascript", "js", "node", "nodejs", "cjs", "mjs"},
    "java": {"java"},
    "cpp": {"cpp", "c++", "cxx", "cc", "hpp", "h", "c"},
}
FENCE_TAG = {"python": "python", "javascript": "javascript", "java": "java", "cpp": "cpp"}
DISPLAY_NAME = {"python": "Python", "javascript": "JavaScript", "java": "Java", "cpp": "C++"}
NON_CODE_TAGS = {"text", "txt", "plain", "plaintext", "output", "console", "shell", "bash", "sh", "json",
                 "markdown", "md", "diff", "stdout", "log"}
TEST_MARKERS = {
    "python": re.compile(r"^\s*assert\b|\bunittest\b|^\s*def test_", re.M),
    "javascript": re.compile(r"\bassert\b"),
    "java": re.compile(r"\bstatic\s+void\s+main\s*\("),
    "cpp": re.compile(r"\bint\s+main\s*\("),
}

_SECTION_WORDS = {
    "problem statement": "problem", "problem": "problem", "task": "problem", "instruction": "problem",
    "question": "problem", "exercise": "problem",
    "reference solution": "solution", "solution": "solution", "answer": "solution",
    "implementation": "solution", "code": "solution",
    "unit tests": "tests", "test cases": "tests", "test code": "tests", "tests": "tests", "test": "tests",
    "testing": "tests",
}
_HEADING = re.compile(
    r"^\s{0,3}(?P<hash>#{1,6}\s*)?(?:\d+[.)]\s*)?(?P<bold>\*\*|__)?\s*(?:\d+[.)]\s*)?"
    r"(?P<word>" + "|".join(sorted(_SECTION_WORDS, key=len, reverse=True)) + r")\b", re.I)
_BOLD_QUAL = re.compile(r"[^*_]{0,40}(?:\*\*|__)?\s*")
_FENCE = re.compile(r"^\s*(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\n]*?)\s*$")


@dataclass
class Block:
    tag: str  # the fence's language tag, lower case ("" when none)
    code: str
    line: int  # line index of the opening fence
    closed: bool = True


@dataclass
class Parsed:
    problem: str = ""
    solution: str = ""
    tests: str = ""
    issues: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return bool(self.problem and self.solution and self.tests)


def fence_tag(language: str) -> str:
    return FENCE_TAG.get(language, language)


def display_name(language: str) -> str:
    return DISPLAY_NAME.get(language, language)


def fenced(language: str, code: str) -> str:
    """``code`` in a Markdown code block tagged with the language (the assistant turn of a sample); the
    fence is longer than any run of backticks in the code."""
    fence = "`" * max([3, *(len(r) + 1 for r in re.findall(r"`{3,}", code))])
    return f"{fence}{fence_tag(language)}\n{code.strip()}\n{fence}"


# --- scanning ---------------------------------------------------------------------------------------
def heading(line: str) -> tuple[str, str] | None:
    """``(section, text on the same line after a colon)`` when ``line`` is a section heading, else None.

    ``### Solution``, ``## Tests (Java)``, ``**Problem:** text``, ``**Tests**``, ``Problem: text`` are
    headings; ``Solution is below`` and ``**Test** your code`` are not."""
    m = _HEADING.match(line)
    if not m:
        return None
    qual, colon, rest = line[m.end():].partition(":")
    if m["bold"] and not _BOLD_QUAL.fullmatch(qual):
        return None
    qual = qual.strip(" \t*_#")
    if len(qual) > 40 or not (m["hash"] or m["bold"] or colon):
        return None
    if qual and not (m["hash"] or m["bold"] or qual.startswith("(")):
        return None
    return _SECTION_WORDS[m["word"].lower()], rest.strip(" \t*_")


def _tag(info: str) -> str:
    return info.split()[0].strip("{}.").lower() if info.strip() else ""


def scan(lines: list[str]) -> tuple[list[Block], list[tuple[int, str, str]]]:
    """The code blocks of a response and its section headings ``(line, section, rest)`` outside them."""
    blocks: list[Block] = []
    heads: list[tuple[int, str, str]] = []
    open_at, fence, tag = -1, "", ""
    for i, line in enumerate(lines):
        m = _FENCE.match(line)
        if open_at < 0:
            if m:
                open_at, fence, tag = i, m["fence"], _tag(m["info"])
            elif (h := heading(line)) is not None:
                heads.append((i, *h))
            continue
        if m and not m["info"] and m["fence"][0] == fence[0] and len(m["fence"]) >= len(fence):
            blocks.append(Block(tag, "\n".join(lines[open_at + 1:i]), open_at))
            open_at = -1
        elif m and m["info"] and _tag(m["info"]) not in NON_CODE_TAGS:  # the previous fence was never closed
            end = i
            while end - 1 > open_at and not lines[end - 1].strip():
                end -= 1
            if end - 1 > open_at and (h := heading(lines[end - 1])) is not None:
                heads.append((end - 1, *h))
                end -= 1
            blocks.append(Block(tag, "\n".join(lines[open_at + 1:end]).rstrip(), open_at, closed=False))
            open_at, fence, tag = i, m["fence"], _tag(m["info"])
    if open_at >= 0:
        blocks.append(Block(tag, "\n".join(lines[open_at + 1:]).rstrip(), open_at, closed=False))
    heads.sort()
    return blocks, heads


def _spans(heads: list[tuple[int, str, str]], n_lines: int) -> dict[str, tuple[int, int, str]]:
    """Section → (first line, end line, text on the heading line); a repeated heading of the section
    being read (a "Task" sub-heading inside the problem) does not end it; the first run of each wins."""
    spans: dict[str, tuple[int, int, str]] = {}
    k = 0
    while k < len(heads):
        start, section, rest = heads[k]
        j = k + 1
        while j < len(heads) and heads[j][1] == section:
            j += 1
        end = heads[j][0] if j < len(heads) else n_lines
        spans.setdefault(section, (start, end, rest))
        k = j
    return spans


# --- picking ------------------------------------------------------------------------------------------
def _code_blocks(blocks: list[Block], language: str) -> tuple[list[Block], list[Block]]:
    """(blocks tagged with the language or untagged, blocks tagged with another programming language)."""
    tags = LANG_TAGS.get(language, {language})
    right = [b for b in blocks if (b.tag in tags or not b.tag) and b.code.strip()]
    wrong = [b for b in blocks if b.tag and b.tag not in tags and b.tag not in NON_CODE_TAGS and b.code.strip()]
    return right, wrong


def _pick(blocks: list[Block], language: str, issues: list[str], what: str) -> list[Block]:
    right, wrong = _code_blocks(blocks, language)
    if right:
        return right
    if wrong:
        issues.append(f"language_tag:{wrong[0].tag}")
        return wrong
    issues.append(f"no_{what}")
    return []


def _in(block: Block, span: tuple[int, int, str] | None) -> bool:
    return span is not None and span[0] < block.line < span[1]


def _is_test(block: Block, language: str) -> bool:
    marker = TEST_MARKERS.get(language)
    return bool(marker and marker.search(block.code))


def _problem_text(lines: list[str], spans: dict, first_code_line: int, issues: list[str]) -> str:
    if "problem" in spans:
        start, end, rest = spans["problem"]
        body = "\n".join([rest, *lines[start + 1:end]]) if rest else "\n".join(lines[start + 1:end])
    else:
        issues.append("no_problem_section")
        others = [s[0] for s in spans.values()]
        end = min([first_code_line, *others])
        body = "\n".join(lines[:end])
    return re.sub(r"(?:\n\s*(?:-{3,}|\*{3,}|_{3,})\s*)+$", "", body.strip()).strip()


def parse_response(text: str, language: str) -> Parsed:
    """Problem, solution and tests of a teacher ``text`` for a seed in ``language``."""
    lines = text.replace("\r\n", "\n").split("\n")
    blocks, heads = scan(lines)
    spans = _spans(heads, len(lines))
    out = Parsed()
    if any(not b.closed for b in blocks):
        out.issues.append("unterminated_fence")
    sol_span, test_span, prob_span = spans.get("solution"), spans.get("tests"), spans.get("problem")
    loose = [b for b in blocks if not _in(b, prob_span) and not _in(b, sol_span) and not _in(b, test_span)]
    if sol_span is not None:
        sol = _pick([b for b in blocks if _in(b, sol_span)], language, out.issues, "solution")
    else:
        out.issues.append("no_solution_section")
        right, _ = _code_blocks(loose, language)
        sol = [b for b in right if not _is_test(b, language)] or right[:1]
        sol = sol or _pick(loose, language, out.issues, "solution")
    if len(sol) > 1:
        out.issues.append("several_solution_blocks")
    if sol:
        out.solution = sol[0].code.strip("\n")
    if test_span is not None:
        tests = _pick([b for b in blocks if _in(b, test_span)], language, out.issues, "tests")
    else:
        out.issues.append("no_tests_section")
        after = [b for b in loose if not sol or b.line > sol[0].line]
        right, _ = _code_blocks(after, language)
        tests = [b for b in right if _is_test(b, language)] or right[-1:]
        if not tests:
            out.issues.append("no_tests")
    out.tests = "\n\n".join(b.code.strip("\n") for b in tests)
    first_code = min([b.line for b in sol + tests] or [len(lines)])
    out.problem = _problem_text(lines, spans, first_code, out.issues)
    return out


# --- the program the sandbox runs ------------------------------------------------------------------
def program_for(language: str, solution: str, tests: str) -> tuple[str, dict[str, str]]:
    """``(code, files)`` for ``run_program(code, language, files=files)``: solution, then tests."""
    build = {"python": _python_program, "javascript": _js_program, "java": _java_program,
             "cpp": _cpp_program}.get(language)
    if build is None:
        raise ValueError(f"no program layout for language {language!r}")
    return build(solution, tests), {}


def _join(*parts: str) -> str:
    return "\n\n".join(p.strip("\n") for p in parts if p.strip()) + "\n"


_PY_MAIN = re.compile(r"""^if\s+__name__\s*==\s*(['"])__main__\1\s*:.*$""")
_PY_DEF = re.compile(r"^(?:async\s+def|def|class)\s+([A-Za-z_]\w*)|^([A-Za-z_]\w*)\s*(?::[^=\n]*)?=(?!=)")
_PY_FROM = re.compile(r"^from\s+([\w.]+)\s+import\s+\(?([\w\s,*]+?)\)?\s*(?:#.*)?$")


def _strip_python_main(code: str) -> str:
    """Drop a top-level ``if __name__ == "__main__":`` block (demo code the tests must not run)."""
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


def _python_program(solution: str, tests: str) -> str:
    defined = {n for m in map(_PY_DEF.match, solution.split("\n")) if m for n in m.groups() if n}
    kept = []
    for line in tests.split("\n"):
        m = _PY_FROM.match(line)
        if m and m[1].split(".")[0] not in sys.stdlib_module_names:
            names = {p.split(" as ")[0].strip() for p in m[2].split(",") if p.strip()}
            if names <= defined or names == {"*"}:  # importing the solution, which is pasted above
                continue
        kept.append(line)
    return _join(_strip_python_main(solution), "\n".join(kept))


_JS_RELATIVE = re.compile(r"""^\s*(?:(?:const|let|var)\s+[^=]+=\s*require\(\s*(['"])\.{1,2}/[^'"]*\1\s*\)"""
                          r"""|import\s+(?:.+?\s+from\s+)?(['"])\.{1,2}/[^'"]*\2)[^;\n]*;?\s*$""")
_JS_IMPORT = re.compile(r"""^(\s*)import\s+(?P<what>.+?)\s+from\s+(?P<mod>(['"])[^'"]+\4)\s*;?\s*$""")
_JS_REQUIRE = re.compile(r"""^\s*(?:const|let|var)\s+(?P<name>[\w$]+|\{[^}]*\})\s*=\s*require\(""")
_JS_EXPORT = re.compile(r"^(\s*)export\s+(?:default\s+)?(?=(?:async\s+)?function|class|const|let|var)", re.M)


def _esm_to_cjs(line: str) -> str:
    """``import x from "m"`` / ``import {a as b} from "m"`` / ``import * as x from "m"`` → ``require``."""
    m = _JS_IMPORT.match(line)
    if not m:
        return line
    what, mod = m["what"].strip(), m["mod"]
    if what.startswith("* as "):
        return f"{m[1]}const {what[5:].strip()} = require({mod});"
    if what.startswith("{"):
        inner = re.sub(r"\s+as\s+", ": ", what)
        return f"{m[1]}const {inner} = require({mod});"
    if "," in what:  # import def, { a } from "m"
        default, named = what.split(",", 1)
        named = re.sub(r"\s+as\s+", ": ", named.strip())
        return f"{m[1]}const {default.strip()} = require({mod});\n{m[1]}const {named} = require({mod});"
    return f"{m[1]}const {what} = require({mod});"


def _js_lines(code: str) -> list[str]:
    code = _JS_EXPORT.sub(r"\1", code)
    return [_esm_to_cjs(line) for line in code.split("\n") if not _JS_RELATIVE.match(line)]


def _js_program(solution: str, tests: str) -> str:
    sol = _js_lines(solution)
    required = {m["name"] for m in map(_JS_REQUIRE.match, sol) if m}
    test = [line for line in _js_lines(tests)
            if not ((m := _JS_REQUIRE.match(line)) and m["name"] in required)]
    return _join("\n".join(sol), "\n".join(test))


_CPP_MAIN = re.compile(r"^\s*(?:int|auto|signed)\s+main\s*\([^)]*\)\s*(?:->\s*int\s*)?\{?", re.M)
_CPP_LOCAL_INCLUDE = re.compile(r'^\s*#\s*include\s*"[^"]*"\s*$')


def _strip_cpp_main(code: str) -> str:
    """Drop a ``main`` function from the solution (the tests bring theirs)."""
    m = _CPP_MAIN.search(code)
    if not m:
        return code
    open_at = code.find("{", m.start())
    if open_at < 0:
        return code
    depth = 0
    for i in range(open_at, len(code)):
        depth += {"{": 1, "}": -1}.get(code[i], 0)
        if depth == 0:
            return code[:m.start()] + code[i + 1:]
    return code[:m.start()]


def _cpp_program(solution: str, tests: str) -> str:
    test = "\n".join(line for line in tests.split("\n") if not _CPP_LOCAL_INCLUDE.match(line))
    return _join(_strip_cpp_main(solution), test)


_JAVA_IMPORT = re.compile(r"^\s*import\s+(?:static\s+)?[\w.]+(?:\.\*)?\s*;\s*$")
_JAVA_PACKAGE = re.compile(r"^\s*package\s+[\w.]+\s*;\s*$")
_JAVA_PUBLIC_TYPE = re.compile(
    r"^public\s+(?=(?:(?:abstract|final|sealed|non-sealed|static|strictfp)\s+)*(?:class|interface|enum|record|@interface)\b)",
    re.M)


def _java_split(code: str) -> tuple[list[str], str]:
    imports, body = [], []
    for line in code.split("\n"):
        if _JAVA_IMPORT.match(line):
            imports.append(line.strip())
        elif not _JAVA_PACKAGE.match(line):
            body.append(line)
    return imports, "\n".join(body)


def _java_program(solution: str, tests: str) -> str:
    sol_imports, sol_body = _java_split(solution)
    test_imports, test_body = _java_split(tests)
    imports = "\n".join(dict.fromkeys(sol_imports + test_imports))
    return _join(imports, _JAVA_PUBLIC_TYPE.sub("", sol_body), test_body)
