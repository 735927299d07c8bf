"""``coderforge sandbox run FILE`` prints the verdict as JSON (typer app, run in-process and as a
real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from coderforge.sandbox import probe
from coderforge.sandbox.cli import app

pytestmark = pytest.mark.skipif(not probe()[0], reason="namespaces unavailable here")


def test_run_prints_json_verdict(tmp_path):
    prog = tmp_path / "ok.py"
    prog.write_text("print('hi from the sandbox')\n")
    res = CliRunner().invoke(app, ["run", str(prog), "--timeout", "5", "--memory", "256"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["verdict"] == "passed" and out["exit_code"] == 0 and out["stdout"] == "hi from the sandbox\n"
    assert set(out) >= {"verdict", "exit_code", "stdout", "stderr", "seconds"}


def test_run_timeout_and_exit_status(tmp_path):
    prog = tmp_path / "loop.py"
    prog.write_text("while True: pass\n")
    res = subprocess.run([sys.executable, "-c", "from coderforge.sandbox.cli import app; app()", "run",
                          str(prog), "--timeout", "1"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert json.loads(res.stdout)["verdict"] == "timeout"


def test_run_language_from_extension(tmp_path):
    prog = tmp_path / "a.js"
    prog.write_text("console.log(6 * 7)\n")
    res = CliRunner().invoke(app, ["run", str(prog)])
    out = json.loads(res.output)
    if out["verdict"] == "passed":
        assert out["stdout"].strip() == "42" and out["lang"] == "javascript"


def test_check_reports_isolation():
    res = CliRunner().invoke(app, ["check"])
    out = json.loads(res.output)
    assert res.exit_code == 0 and out["isolated"] is True and out["network_blocked"] is True
    assert "python" in out["languages"]
