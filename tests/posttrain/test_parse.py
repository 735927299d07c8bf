"""Teacher responses → problem / solution / tests, and the programs built from them, on hand-written
responses in the four sandbox languages: the format the prompt asks for, and the ways models drift
from it. The built programs run in the real sandbox (where it isolates and has the toolchain)."""

from __future__ import annotations

import pytest

from coderforge.posttrain.parse import fenced, heading, parse_response, program_for, scan
from coderforge.sandbox import available_languages, probe, run_program

PY_RESPONSE = '''\
### Problem
Write a Python function `merge_sorted(a: list[int], b: list[int]) -> list[int]` that merges two
sorted lists into one sorted list. Either list may be empty.

Example: `merge_sorted([1, 4], [2, 3])` returns `[1, 2, 3, 4]`.

### Solution
```python
def merge_sorted(a, b):
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        if a[i] <= b[j]:
            out.append(a[i])
            i += 1
        else:
            out.append(b[j])
            j += 1
    return out + a[i:] + b[j:]


if __name__ == "__main__":
    print(merge_sorted([1], [0]))
    input()
```

### Tests
```python
from solution import merge_sorted
assert merge_sorted([1, 4], [2, 3]) == [1, 2, 3, 4], "example"
assert merge_sorted([], [1]) == [1], "empty left"
assert merge_sorted([2, 2], [2]) == [2, 2, 2], "duplicates"
```
'''

JS_RESPONSE = '''\
### Problem
Write a JavaScript function `chunk(items, size)` that splits an array into arrays of length `size`
(the last one may be shorter). Throw a `RangeError` when `size` is not a positive integer.

### Solution
```js
export function chunk(items, size) {
  if (!Number.isInteger(size) || size < 1) throw new RangeError("size");
  const out = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}
```

### Tests
```javascript
import assert from "node:assert";
const { chunk } = require("./chunk.js");
assert.deepStrictEqual(chunk([1, 2, 3], 2), [[1, 2], [3]]);
assert.deepStrictEqual(chunk([], 3), []);
assert.throws(() => chunk([1], 0), RangeError);
```
'''

JAVA_RESPONSE = '''\
### Problem
Write a Java class `Intervals` with a static method `int[][] merge(int[][] ranges)` that merges
overlapping closed intervals and returns them sorted by start.

### Solution
```java
package com.example;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

public class Intervals {
    public static int[][] merge(int[][] ranges) {
        int[][] xs = ranges.clone();
        Arrays.sort(xs, (p, q) -> Integer.compare(p[0], q[0]));
        List<int[]> out = new ArrayList<>();
        for (int[] r : xs) {
            if (!out.isEmpty() && out.get(out.size() - 1)[1] >= r[0]) {
                int[] last = out.get(out.size() - 1);
                last[1] = Math.max(last[1], r[1]);
            } else {
                out.add(new int[] {r[0], r[1]});
            }
        }
        return out.toArray(new int[0][]);
    }
}
```

### Tests
```java
import java.util.Arrays;

public class Main {
    static void check(boolean ok, String what) {
        if (!ok) {
            System.err.println("FAILED: " + what);
            System.exit(1);
        }
    }

    public static void main(String[] args) {
        check(Arrays.deepEquals(Intervals.merge(new int[][] {{1, 3}, {2, 6}, {8, 10}}),
                                new int[][] {{1, 6}, {8, 10}}), "overlap");
        check(Intervals.merge(new int[0][]).length == 0, "empty");
        check(Arrays.deepEquals(Intervals.merge(new int[][] {{5, 6}, {1, 2}}),
                                new int[][] {{1, 2}, {5, 6}}), "unsorted input");
    }
}
```
'''

CPP_RESPONSE = '''\
### Problem
Write a C++ function `int count_words(const std::string& s)` that counts the words of `s`
(maximal runs of non-space characters).

### Solution
```cpp
#include <string>
#include <cctype>

int count_words(const std::string& s) {
    int n = 0;
    bool in_word = false;
    for (char c : s) {
        if (std::isspace(static_cast<unsigned char>(c))) {
            in_word = false;
        } else if (!in_word) {
            in_word = true;
            ++n;
        }
    }
    return n;
}

int main() {
    return count_words("demo") == 1 ? 0 : 1;
}
```

### Tests
```cpp
#include <cassert>
#include "count_words.h"

int main() {
    assert(count_words("") == 0);
    assert(count_words("  two words ") == 2);
    assert(count_words("a\\tb\\nc") == 3);
    return 0;
}
```
'''

RESPONSES = {"python": PY_RESPONSE, "javascript": JS_RESPONSE, "java": JAVA_RESPONSE, "cpp": CPP_RESPONSE}


# --- the requested format ---------------------------------------------------------------------------
@pytest.mark.parametrize("language", list(RESPONSES))
def test_well_formed_response_parses_cleanly(language):
    p = parse_response(RESPONSES[language], language)
    assert p.complete and p.issues == []
    assert p.problem.startswith("Write a") and "###" not in p.problem and "```" not in p.problem
    assert "```" not in p.solution and "```" not in p.tests
    assert p.solution.strip() and p.tests.strip()


def test_python_fields_are_the_block_contents():
    p = parse_response(PY_RESPONSE, "python")
    assert p.solution.startswith("def merge_sorted(a, b):") and p.solution.endswith("    input()")
    assert p.tests.splitlines()[0] == "from solution import merge_sorted"
    assert p.problem.endswith("returns `[1, 2, 3, 4]`.")


# --- drift: headings, prose, blocks, tags, fences ------------------------------------------------------
@pytest.mark.parametrize("line, expected", [
    ("### Problem", ("problem", "")),
    ("## Solution (Python)", ("solution", "")),
    ("**Problem:** Write a function", ("problem", "Write a function")),
    ("**Tests**", ("tests", "")),
    ("**Unit tests**:", ("tests", "")),
    ("Problem: reverse a list", ("problem", "reverse a list")),
    ("## 2. Reference solution", ("solution", "")),
    ("1. **Task**", ("problem", "")),
    ("### Test cases ###", ("tests", "")),
    ("Code:", ("solution", "")),
    ("Solution is below", None),
    ("**Test** your code", None),
    ("The problem: nothing", None),
    ("Tests are important", None),
])
def test_heading_styles(line, expected):
    assert heading(line) == expected


def test_prose_bold_headings_and_output_blocks():
    text = """Sure! Here is an exercise based on the code.

**Problem:** Write a Python function `square(x)` that returns `x * x`.

For example:
```text
>>> square(3)
9
```

**Solution**
Here is a simple implementation:
```python
def square(x):
    return x * x
```
It runs in constant time.

**Tests:**
```python
assert square(3) == 9
assert square(-2) == 4
```
Output:
```
(no output)
```
I hope this helps!
"""
    p = parse_response(text, "python")
    assert p.problem.startswith("Write a Python function `square(x)`")
    assert ">>> square(3)" in p.problem and "Here is a simple" not in p.problem
    assert p.solution == "def square(x):\n    return x * x"
    # the untagged "(no output)" block counts as code of the tests section; it is prose-like but harmless
    assert p.tests.startswith("assert square(3) == 9\nassert square(-2) == 4")
    assert p.issues == []


def test_comment_headings_inside_code_do_not_split_sections():
    text = """### Problem
Implement `f`.

### Solution
```python
### Tests
# Solution
def f():
    return 1
```

### Tests
```python
# Tests
assert f() == 1
```
"""
    p = parse_response(text, "python")
    assert p.solution == "### Tests\n# Solution\ndef f():\n    return 1"
    assert p.tests == "# Tests\nassert f() == 1"


def test_problem_sub_headings_and_examples_stay_in_the_problem():
    text = """## Problem
#### Task
Write `add(a, b)`.
#### Example
```python
add(1, 2)  # 3
```
## Solution
```python
def add(a, b):
    return a + b
```
## Tests
```python
assert add(1, 2) == 3
```
"""
    p = parse_response(text, "python")
    assert "Write `add(a, b)`." in p.problem and "#### Example" in p.problem and "add(1, 2)  # 3" in p.problem
    assert p.solution == "def add(a, b):\n    return a + b"


def test_missing_headings_told_apart_by_test_markers():
    text = """Write a function `is_even(n)` that tells whether `n` is even.

```python
def is_even(n):
    return n % 2 == 0
```

And the tests:

```python
assert is_even(2)
assert not is_even(3)
```
"""
    p = parse_response(text, "python")
    assert p.problem == "Write a function `is_even(n)` that tells whether `n` is even."
    assert p.solution == "def is_even(n):\n    return n % 2 == 0"
    assert p.tests == "assert is_even(2)\nassert not is_even(3)"
    assert {"no_problem_section", "no_solution_section", "no_tests_section"} <= set(p.issues)


def test_wrong_language_tags_are_used_when_nothing_else_fits():
    text = JAVA_RESPONSE.replace("```java\npackage", "```c++\npackage")
    p = parse_response(text, "java")
    assert p.solution.startswith("package com.example;")
    assert "language_tag:c++" in p.issues and p.tests.startswith("import java.util.Arrays;")


def test_right_tag_wins_over_a_wrong_one():
    text = """### Problem
Say hi.
### Solution
```python
print("hi")
```
```javascript
console.log("hi");
```
### Tests
```javascript
const assert = require("node:assert");
assert.ok(true);
```
"""
    p = parse_response(text, "javascript")
    assert p.solution == 'console.log("hi");' and p.issues == []


def test_several_test_blocks_are_joined_and_several_solutions_flagged():
    text = """### Problem
Write `inc(x)`.
### Solution
```js
function inc(x) { return x + 1; }
```
```js
console.log(inc(1));
```
### Tests
```js
const assert = require("node:assert");
assert.strictEqual(inc(1), 2);
```
Edge cases:
```js
assert.strictEqual(inc(-1), 0);
```
```text
ok
```
"""
    p = parse_response(text, "javascript")
    assert p.solution == "function inc(x) { return x + 1; }"
    assert p.tests.endswith("assert.strictEqual(inc(1), 2);\n\nassert.strictEqual(inc(-1), 0);")
    assert "several_solution_blocks" in p.issues


def test_unterminated_fences():
    text = """### Problem
Write `int twice(int x)`.

### Solution
```cpp
int twice(int x) { return 2 * x; }

### Tests
```cpp
#include <cassert>
int main() {
    assert(twice(2) == 4);
    return 0;
"""
    p = parse_response(text, "cpp")
    assert p.solution == "int twice(int x) { return 2 * x; }"
    assert p.tests.startswith("#include <cassert>") and p.tests.endswith("return 0;")
    assert "unterminated_fence" in p.issues and "no_tests_section" not in p.issues


def test_tilde_fences_crlf_and_numbered_markdown_headings():
    text = ("## 1. Problem\r\nWrite `neg(x)`.\r\n\r\n## 2. Solution\r\n~~~python\r\ndef neg(x):\r\n"
            "    return -x\r\n~~~\r\n\r\n## 3. Tests\r\n~~~python\r\nassert neg(1) == -1\r\n~~~\r\n")
    p = parse_response(text, "python")
    assert (p.problem, p.solution, p.tests) == ("Write `neg(x)`.", "def neg(x):\n    return -x", "assert neg(1) == -1")


def test_no_code_at_all():
    p = parse_response("I cannot turn this code into an exercise.", "java")
    assert not p.complete and p.solution == "" and p.tests == ""
    assert p.problem == "I cannot turn this code into an exercise."
    assert "no_tests" in p.issues


def test_scan_reports_blocks_and_headings():
    blocks, heads = scan(["### Solution", "```py", "x = 1", "```", "**Tests:**", "```", "assert x"])
    assert [(b.tag, b.code, b.closed) for b in blocks] == [("py", "x = 1", True), ("", "assert x", False)]
    assert [h[:2] for h in heads] == [(0, "solution"), (4, "tests")]


def test_fenced_uses_a_longer_fence_when_the_code_holds_one():
    assert fenced("cpp", "int x;\n") == "```cpp\nint x;\n```"
    assert fenced("python", 'doc = """\n```py\n```\n"""').startswith("````python\n")


# --- programs -----------------------------------------------------------------------------------------------
def test_python_program_drops_demo_and_self_import():
    p = parse_response(PY_RESPONSE, "python")
    code, files = program_for("python", p.solution, p.tests)
    assert files == {}
    assert "__main__" not in code and "input()" not in code and "from solution import" not in code
    assert code.index("def merge_sorted") < code.index("assert merge_sorted")
    keep = program_for("python", "import math\ndef f():\n    return math.pi",
                       "from math import pi\nassert f() == pi")[0]
    assert "from math import pi" in keep  # a standard-library import stays


def test_javascript_program_is_commonjs():
    p = parse_response(JS_RESPONSE, "javascript")
    code, _ = program_for("javascript", p.solution, p.tests)
    assert "export " not in code and "import " not in code and "./chunk.js" not in code
    assert 'const assert = require("node:assert");' in code
    named = program_for("javascript", "const assert = require('assert');\nfunction f() { return 1; }",
                        "import { strictEqual as eq } from 'node:assert';\nconst assert = require('assert');\n"
                        "import * as path from 'node:path';\neq(f(), 1);")[0]
    assert "const { strictEqual: eq } = require('node:assert');" in named
    assert "const path = require('node:path');" in named
    assert named.count("const assert =") == 1


def test_java_program_is_one_compilation_unit_named_by_the_tests():
    p = parse_response(JAVA_RESPONSE, "java")
    code, _ = program_for("java", p.solution, p.tests)
    lines = code.splitlines()
    assert "package" not in code
    assert lines[:3] == ["import java.util.ArrayList;", "import java.util.Arrays;", "import java.util.List;"]
    assert code.count("import java.util.Arrays;") == 1
    assert "\nclass Intervals {" in code and "public class Intervals" not in code
    assert code.count("public class ") == 1 and "public class Main {" in code


def test_cpp_program_drops_the_solutions_main_and_local_include():
    p = parse_response(CPP_RESPONSE, "cpp")
    code, _ = program_for("cpp", p.solution, p.tests)
    assert code.count("int main(") == 1 and '"count_words.h"' not in code
    assert 'count_words("demo")' not in code and "#include <cassert>" in code


def test_unknown_language_is_refused():
    with pytest.raises(ValueError):
        program_for("cobol", "x", "y")


SANDBOX = probe()[0]


@pytest.mark.skipif(not SANDBOX, reason=f"the sandbox does not isolate here: {probe()[1]}")
@pytest.mark.parametrize("language", list(RESPONSES))
def test_programs_pass_in_the_sandbox_and_a_broken_solution_fails(language):
    if language not in available_languages():
        pytest.skip(f"no {language} toolchain")
    p = parse_response(RESPONSES[language], language)
    code, files = program_for(language, p.solution, p.tests)
    v = run_program(code, language, timeout_s=20, memory_mb=512, files=files)
    assert v.verdict == "passed", (v.verdict, v.detail, v.stderr[-800:], code)
    broken = {"python": ("return out + a[i:] + b[j:]", "return out + a[i:]"),
              "javascript": ("i += size", "i += size + 1"),
              "java": ("new int[] {r[0], r[1]}", "new int[] {r[0], r[0]}"),
              "cpp": ("++n;", "n += 2;")}[language]
    assert broken[0] in p.solution
    code, files = program_for(language, p.solution.replace(*broken), p.tests)
    v = run_program(code, language, timeout_s=20, memory_mb=512, files=files)
    # a failed C++ assert aborts (SIGABRT: "crashed", with "Assertion ... failed" on stderr)
    assert v.verdict == ("crashed" if language == "cpp" else "failed"), (v.verdict, v.detail, v.stderr[-800:])
    assert v.stderr.strip()
