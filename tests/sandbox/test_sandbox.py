"""The sandbox's verdicts, limits and isolation, on real programs."""

from __future__ import annotations

import pytest

from coderforge.sandbox import available_languages, probe, run_many, run_program
from coderforge.sandbox.verdict import failure_detail

pytestmark = pytest.mark.skipif(not probe()[0], reason=f"namespaces unavailable here: {probe()[1]}")


def test_passed_with_output_and_stdin():
    v = run_program("import sys\nprint(sys.stdin.read().upper())", stdin="hello")
    assert v.verdict == "passed" and v.exit_code == 0 and v.isolated
    assert v.stdout.strip() == "HELLO"


def test_failed_reports_the_failing_assertion():
    v = run_program("def f(x):\n    return x + 1\n\nassert f(1) == 3, 'f(1) should be 3'\n")
    assert v.verdict == "failed"
    assert "assert f(1) == 3" in v.detail and "AssertionError: f(1) should be 3" in v.detail


def test_timeout_on_infinite_loop():
    v = run_program("while True:\n    pass\n", timeout_s=1)
    assert v.verdict == "timeout"
    assert v.seconds < 5


def test_timeout_on_sleep_is_wall_clock():
    v = run_program("import time\ntime.sleep(60)\n", timeout_s=1)
    assert v.verdict == "timeout" and v.seconds < 5


def test_oom_on_unbounded_allocation():
    v = run_program("x = []\nwhile True:\n    x.append(bytearray(10**7))\n", memory_mb=256)
    assert v.verdict == "oom", v


def test_crash_on_segfault():
    v = run_program("import ctypes\nctypes.string_at(0)\n")
    assert v.verdict == "crashed" and "SIGSEGV" in v.detail


def test_output_is_truncated_keeping_head_and_tail():
    v = run_program("print('A' * 100000)\nprint('END')\n", max_output=1000)
    assert v.truncated and v.stdout.startswith("A" * 1000) and v.stdout.rstrip().endswith("END")
    assert "bytes truncated" in v.stdout


def test_success_marker_catches_early_exit():
    v = run_program("import os\nos._exit(0)\nprint('MARK')\n", success_marker="MARK")
    assert v.verdict == "failed" and "marker" in v.detail
    ok = run_program("print('x')\nprint('MARK')\n", success_marker="MARK")
    assert ok.verdict == "passed" and "MARK" not in ok.stdout


def test_files_are_placed_in_scratch_and_bad_names_rejected():
    v = run_program("print(open('data/in.txt').read())", files={"data/in.txt": "payload"})
    assert v.stdout.strip() == "payload"
    with pytest.raises(ValueError):
        run_program("print(1)", files={"../escape.txt": "x"})


def test_run_many_keeps_order_and_runs_in_parallel():
    jobs = [dict(code=f"print({i})") for i in range(8)] + [dict(code="assert False")]
    vs = run_many(jobs, workers=2)
    assert [v.stdout.strip() for v in vs[:8]] == [str(i) for i in range(8)]
    assert vs[-1].verdict == "failed"
    assert len({v.meta["uid"] for v in vs}) >= 1


def test_failure_detail_without_traceback():
    assert failure_detail("line1\nline2\n") == "line1 | line2"


@pytest.mark.parametrize("lang,code,expected,out", [
    ("javascript", "console.log([1,2,3].map(x => x * 2).join(','))", "passed", "2,4,6"),
    ("javascript", "const assert = require('assert'); assert.strictEqual(1, 2);", "failed", ""),
    ("cpp", "#include <cstdio>\nint main(){ std::printf(\"%d\\n\", 6*7); }", "passed", "42"),
    ("cpp", "int main(){ return 3; }", "failed", ""),
    ("cpp", "int main(){ this is not c++ }", "failed", ""),
    ("java", "public class Sol { public static void main(String[] a){ System.out.println(6*7); } }",
     "passed", "42"),
    ("java", "public class Main { public static void main(String[] a){ int[] x = new int[1]; x[2] = 0; } }",
     "failed", ""),
])
def test_other_languages(lang, code, expected, out):
    if lang not in available_languages():
        pytest.skip(f"no {lang} toolchain")
    v = run_program(code, lang=lang, timeout_s=10)
    assert v.verdict == expected, v
    assert out in v.stdout


def test_cpp_compile_error_is_reported():
    if "cpp" not in available_languages():
        pytest.skip("no g++")
    v = run_program("int main(){ this is not c++ }", lang="cpp")
    assert v.detail.startswith("compile error")


def test_fresh_init_path_without_zygote(monkeypatch):
    """The same verdicts when every run starts its own init (no warm zygote)."""
    monkeypatch.setenv("CODERFORGE_SANDBOX_ZYGOTE", "0")
    assert run_program("print('cold')").stdout == "cold\n"
    assert run_program("assert 1 == 2").verdict == "failed"
    assert run_program("import time\ntime.sleep(30)", timeout_s=1).verdict == "timeout"
    assert run_program("x = bytearray(10**10)").verdict == "oom"


def test_zygote_restarts_after_dying():
    from coderforge.sandbox.isolation import Zygote

    assert run_program("print(1)").passed
    z = Zygote.get()
    z.proc.kill()
    z.proc.wait()
    assert run_program("print(2)").stdout == "2\n"
    assert Zygote.get() is not z


def test_python_program_exit_semantics():
    import textwrap

    v = run_program(textwrap.dedent("""
        import atexit, sys, threading, time
        atexit.register(lambda: print("atexit ran"))
        def late():
            time.sleep(0.1)
            print("thread done")
        threading.Thread(target=late).start()
        print(__name__, sys.argv)
        sys.exit("bye")
    """))
    assert v.verdict == "failed" and v.exit_code == 1 and v.detail == "bye"
    assert v.stdout.splitlines() == ["__main__ ['prog.py']", "thread done", "atexit ran"]
    assert "Traceback" not in v.stderr
    tb = run_program("def f():\n    raise ValueError('boom')\nf()\n").stderr
    assert tb.startswith("Traceback") and "runpy" not in tb and "nsinit.py" not in tb
    assert "ValueError: boom" in tb
