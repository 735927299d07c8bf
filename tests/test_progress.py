"""The live view of a DAG run and the per-step logs (``coderforge.progress``, ``coderforge.liveview``),
with real step processes: each step is a Python subprocess that wraps its work in ``step_log``,
reports progress and prints at the Python and the file-descriptor level (and through a grandchild
process and a logging handler), as kfp.local's subprocess runner would run it."""

from __future__ import annotations

import io
import json
import os
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from coderforge.liveview import run_with_live_view
from coderforge.progress import STATUS_DIR_ENV, STEP_ENV, report

STEP_SCRIPT = textwrap.dedent(
    """
    import logging, os, signal, subprocess, sys
    from coderforge.progress import LOG_DIR_ENV, report, step_log

    step, mode = sys.argv[1], sys.argv[2]
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    print(f"{step}: executor input", flush=True)  # before the step's log opens: the driver's log
    with step_log(step, os.environ.get(LOG_DIR_ENV)):
        print(f"{step}: py-out")
        print(f"{step}: py-err", file=sys.stderr)
        os.write(1, f"{step}: fd-out\\n".encode())
        os.write(2, f"{step}: fd-err\\n".encode())
        logging.info("%s: logging", step)
        subprocess.run([sys.executable, "-c", f"print('{step}: grandchild')"], check=True)
        report(docs_in=1200, docs_kept=1000, tokens=2_500_000, loss=2.5, done=3, total=4)
        if mode == "fail":
            for i in range(30):
                print(f"{step}: line {i}")
            raise ValueError(f"{step} broke")
        if mode == "kill":
            print(f"{step}: before kill")
            os.kill(os.getpid(), signal.SIGKILL)
    """
)

SCENARIO = textwrap.dedent(
    """
    import os, subprocess, sys
    from coderforge.liveview import run_with_live_view

    step_script, workdir, verbose = sys.argv[1], sys.argv[2], sys.argv[3] == "verbose"

    def target():
        print("driver: kfp chatter")
        os.write(2, b"driver: fd chatter\\n")
        subprocess.run([sys.executable, step_script, "ingest", "ok"], check=True)
        subprocess.run([sys.executable, step_script, "filter", "fail"], check=True)
        return "unreachable"

    try:
        run_with_live_view(target, ["ingest", "filter", "dedup"], workdir, verbose=verbose)
    except subprocess.CalledProcessError as exc:
        print(f"after: caught {type(exc).__name__}")
    print(f"after: status dir {os.environ.get('CODERFORGE_STATUS_DIR')}")
    os.write(1, b"after: fd-out\\n")
    print("after: py-err", file=sys.stderr)
    os.write(2, b"after: fd-err\\n")
    """
)

CHILD_OUTPUT = ("py-out", "py-err", "fd-out", "fd-err", "logging", "grandchild")
ENV = {**os.environ, "PYTHONIOENCODING": "utf-8"}


@pytest.fixture
def step_script(tmp_path: Path) -> Path:
    path = tmp_path / "step.py"
    path.write_text(STEP_SCRIPT)
    return path


def _run_step(step_script: Path, step: str, mode: str) -> None:
    subprocess.run([sys.executable, str(step_script), step, mode], check=True)


def _scenario(tmp_path: Path, step_script: Path, mode: str, **kwargs) -> subprocess.CompletedProcess:
    script = tmp_path / "scenario.py"
    script.write_text(SCENARIO)
    command = [sys.executable, str(script), str(step_script), str(tmp_path / "work"), mode]
    return subprocess.run(command, env=ENV, timeout=120, **kwargs)


def _status(workdir: Path, step: str) -> dict:
    return json.loads((workdir / "status" / f"{step}.json").read_text())


def test_each_step_logs_to_its_file_and_the_view_names_the_failure(tmp_path, step_script, capfd):
    workdir, view = tmp_path / "work", io.StringIO()

    def target() -> str:
        print("driver: kfp chatter")
        os.write(2, b"driver: fd chatter\n")
        _run_step(step_script, "ingest", "ok")
        _run_step(step_script, "filter", "fail")
        return "unreachable"

    with pytest.raises(subprocess.CalledProcessError):
        run_with_live_view(target, ["ingest", "filter", "dedup"], workdir, stream=view)
    out, err = capfd.readouterr()
    logs = workdir / "logs"

    ingest_log, filter_log = (logs / "ingest.log").read_text(), (logs / "filter.log").read_text()
    assert all(f"ingest: {what}" in ingest_log for what in CHILD_OUTPUT)
    assert all(f"filter: {what}" in filter_log for what in CHILD_OUTPUT)
    assert "filter: line 29" in filter_log and "ValueError: filter broke" in filter_log  # the traceback too
    assert "executor input" not in ingest_log + filter_log
    driver_log = (logs / "driver.log").read_text()
    assert "driver: kfp chatter" in driver_log and "driver: fd chatter" in driver_log
    assert "ingest: executor input" in driver_log and "filter: executor input" in driver_log
    assert not (logs / "dedup.log").exists()

    text = view.getvalue()
    assert "✓ ingest" in text and "✗ filter" in text and "– dedup   skipped" in text
    assert "docs 1,200→1,000" in text and "tokens 2.5M" in text and "loss 2.500" in text
    assert "[########--] 75%" in text and "ValueError: filter broke" in text
    assert "3 steps in" in text and "1 done, 1 failed, 1 skipped" in text and str(logs) in text
    assert len(text.splitlines()) <= 10, text
    assert not any(leak in text for leak in (": py-", ": fd-", "grandchild", "chatter", "executor input"))

    assert out == ""  # nothing reached the real stdout: no child output, no driver chatter
    assert "✗ step filter failed: ValueError: filter broke" in err
    assert f"last 20 lines of {logs / 'filter.log'}" in err and f"full log: {logs / 'filter.log'}" in err
    assert "    filter: line 29" in err and "filter: line 0\n" not in err and "ingest:" not in err
    assert _status(workdir, "ingest")["state"] == "done" and _status(workdir, "filter")["state"] == "failed"
    assert os.environ.get(STATUS_DIR_ENV) is None  # the run's environment is put back


def test_file_descriptors_come_back_after_the_run(tmp_path, step_script):
    done = _scenario(tmp_path, step_script, "quiet", capture_output=True, text=True, encoding="utf-8")
    logs = tmp_path / "work" / "logs"
    out, err = done.stdout, done.stderr
    assert done.returncode == 0, err
    assert "✓ ingest" in out and "✗ filter" in out and "skipped" in out
    assert out.index("1 done, 1 failed, 1 skipped") < out.index("after: caught CalledProcessError")
    assert "after: status dir None" in out and out.endswith("after: fd-out\n")
    assert "✗ step filter failed" in err and f"full log: {logs / 'filter.log'}" in err
    assert err.endswith("after: py-err\nafter: fd-err\n")
    assert not any(f"{step}: {what}" in out + err for step in ("ingest", "filter") for what in CHILD_OUTPUT)
    assert "after:" not in (logs / "driver.log").read_text()


def test_verbose_keeps_the_full_stream_and_writes_no_step_logs(tmp_path, step_script):
    done = _scenario(tmp_path, step_script, "verbose", capture_output=True, text=True, encoding="utf-8")
    workdir = tmp_path / "work"
    assert done.returncode == 0, done.stderr
    for what in ("py-out", "fd-out", "grandchild", "executor input"):
        assert f"ingest: {what}" in done.stdout and f"filter: {what}" in done.stdout
    assert "ingest: py-err" in done.stderr and "ingest: logging" in done.stderr
    assert "ValueError: filter broke" in done.stderr and "driver: kfp chatter" in done.stdout
    assert "✓ ingest" not in done.stdout and "step filter failed" not in done.stderr
    assert list((workdir / "logs").iterdir()) == []
    assert _status(workdir, "filter")["state"] == "failed"  # progress is still reported


def test_terminal_view_redraws_in_place(tmp_path, step_script):
    primary, secondary = os.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", SCENARIO, str(step_script), str(tmp_path / "work"), "quiet"],
            stdout=secondary, stderr=subprocess.DEVNULL, env=ENV,
        )
        os.close(secondary)
        screen, deadline = b"", time.monotonic() + 120
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 1)
            try:
                chunk = os.read(primary, 65536) if ready else b""
            except OSError:  # the terminal's other end closed: the run ended
                break
            if ready and not chunk:
                break
            screen += chunk
        proc.wait(timeout=30)
    finally:
        os.close(primary)
    text = screen.decode("utf-8", "replace")
    assert "· ingest" in text and "pending" in text  # the first frame
    assert text.count("\x1b[4A") >= 1 and "\x1b[2K" in text  # 3 rows and the footer, redrawn in place
    final = text.split("\x1b[4A")[-1]
    assert "✓ ingest" in final and "✗ filter" in final and "– dedup" in final and "skipped" in final
    assert "ingest: py-out" not in text and "after: fd-out" in text


def test_a_killed_step_is_named_with_what_its_log_holds(tmp_path, step_script, capfd):
    workdir, view = tmp_path / "work", io.StringIO()

    def target() -> None:
        _run_step(step_script, "pretrain", "kill")

    with pytest.raises(subprocess.CalledProcessError):
        run_with_live_view(target, ["pretrain", "evaluate"], workdir, stream=view)
    err = capfd.readouterr().err
    log = workdir / "logs" / "pretrain.log"
    assert "pretrain: before kill" in log.read_text()  # nothing lost with the process
    assert "✗ step pretrain did not finish: the run stopped (CalledProcessError" in err
    assert "    pretrain: before kill" in err and f"full log: {log}" in err
    assert "✗ pretrain" in view.getvalue() and "stopped" in view.getvalue()


def test_step_logs_nest_and_put_everything_back(tmp_path):
    script = textwrap.dedent(
        """
        import logging, os, sys
        from coderforge.progress import STEP_ENV, report, step_log

        handler = logging.StreamHandler(sys.stdout)
        logging.getLogger("nested").addHandler(handler)
        log_dir = sys.argv[1]
        os.environ[STEP_ENV] = "caller"
        with step_log("outer", log_dir):
            print("outer: before")
            try:
                with step_log("inner", log_dir):
                    os.write(1, b"inner: fd-out\\n")
                    print("inner: py-out", os.environ[STEP_ENV])
                    logging.getLogger("nested").warning("inner: logged")
                    raise KeyError("inner key")
            except KeyError:
                pass
            report(docs_in=5)
            print("outer: after", os.environ[STEP_ENV])
        logging.getLogger("nested").warning("caller: logged")
        print("caller:", os.environ[STEP_ENV], handler.stream is sys.stdout)
        """
    )
    env = {**ENV, STATUS_DIR_ENV: str(tmp_path / "status")}
    logs = tmp_path / "logs"
    done = subprocess.run([sys.executable, "-c", script, str(logs)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "caller: logged\ncaller: caller True\n" and done.stderr == ""
    outer, inner = (logs / "outer.log").read_text(), (logs / "inner.log").read_text()
    assert "outer: before" in outer and "outer: after outer" in outer and "inner:" not in outer
    assert "inner: fd-out" in inner and "inner: py-out inner" in inner and "inner: logged" in inner
    assert "KeyError: 'inner key'" in inner  # the traceback, written before the streams went back
    status = {name: json.loads((tmp_path / "status" / f"{name}.json").read_text()) for name in ("outer", "inner")}
    assert status["outer"]["state"] == "done" and status["outer"]["docs_in"] == 5
    assert status["inner"]["state"] == "failed" and status["inner"]["message"] == "KeyError: 'inner key'"
    assert status["inner"]["finished"] >= status["inner"]["started"]


class _BrokenStream(io.TextIOBase):
    def write(self, text: str) -> int:
        raise OSError("the terminal went away")


@pytest.mark.parametrize("stream", [io.StringIO(), _BrokenStream()], ids=["string", "broken"])
def test_the_view_never_stops_the_run(tmp_path, stream):
    def target() -> int:
        status = Path(os.environ[STATUS_DIR_ENV])
        (status / "half.json").write_text('{"state": "runn')  # a writer that bypassed the atomic rename
        (status / "list.json").write_text("[1, 2]")
        odd = {"state": "running", "started": "soon", "done": "x", "total": 0, "loss": "nan", "docs_in": [1]}
        (status / "odd.json").write_text(json.dumps(odd))
        time.sleep(1.2)  # a few renderer ticks
        return 42

    assert run_with_live_view(target, ["half"], tmp_path / "work", stream=stream) == 42
    if isinstance(stream, io.StringIO):
        text = stream.getvalue()
        assert "– half  skipped" in text and "✗ odd   stopped" in text and "list" not in text


def test_concurrent_reporters_lose_no_update(tmp_path):
    script = textwrap.dedent(
        """
        import sys
        from coderforge.progress import report
        for i in range(40):
            report(**{f"worker{sys.argv[1]}": i})
        """
    )
    env = {**ENV, STATUS_DIR_ENV: str(tmp_path), STEP_ENV: "pretrain"}
    workers = [subprocess.Popen([sys.executable, "-c", script, str(n)], env=env) for n in range(4)]
    assert [worker.wait(timeout=60) for worker in workers] == [0] * 4
    status = json.loads((tmp_path / "pretrain.json").read_text())
    assert {key: status[key] for key in status if key.startswith("worker")} == {f"worker{n}": 39 for n in range(4)}
    assert not list(tmp_path.glob("*.tmp"))


def test_report_without_a_status_dir_does_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(STATUS_DIR_ENV, raising=False)
    monkeypatch.setenv(STEP_ENV, "ingest")
    monkeypatch.chdir(tmp_path)
    report(state="running")
    assert list(tmp_path.iterdir()) == []


def test_a_run_that_fails_before_any_step_points_at_the_driver_log(tmp_path, capfd):
    workdir, view = tmp_path / "work", io.StringIO()

    def target() -> None:
        print("driver: compiling the pipeline")
        raise RuntimeError("no such component\nsecond line")

    with pytest.raises(RuntimeError, match="no such component"):
        run_with_live_view(target, ["ingest", "filter"], workdir, stream=view)
    out, err = capfd.readouterr()
    driver_log = workdir / "logs" / "driver.log"
    assert out == ""
    assert "✗ the run failed before any step reported: RuntimeError: no such component\n" in err
    assert "    driver: compiling the pipeline" in err and f"full log: {driver_log}" in err
    assert "0 done, 0 failed, 2 skipped" in view.getvalue()


def test_a_step_whose_log_cannot_be_written_still_runs_and_reports(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    script = textwrap.dedent(
        """
        import sys
        from coderforge.progress import step_log
        with step_log("ingest", sys.argv[1]):
            print("ingest: py-out")
        """
    )
    env = {**ENV, STATUS_DIR_ENV: str(tmp_path / "status")}
    done = subprocess.run([sys.executable, "-c", script, str(not_a_dir)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ingest: py-out\n" and "cannot write its log" in done.stderr
    assert _status(tmp_path, "ingest")["state"] == "done"
