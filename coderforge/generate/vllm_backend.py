"""``VLLMBackend``: ``GenerationBackend`` over a vLLM server's OpenAI-compatible ``/v1/completions``.

Prompts are sent as already rendered text (a chat prompt is rendered by the caller with the
tokenizer's chat template, e.g. ``coderforge.tokens.tokenizer.chatml``), one request per prompt, many
in flight at once (``concurrency`` daemon worker threads sharing a urllib3 connection pool). Each
request asks for ``config.n`` samples, ``max_tokens``, ``temperature``, ``top_p``, a seed, the caller's
stop strings and ``stop_token_ids`` = the Qwen2.5-Coder stop tokens (``QWEN_STOP_TOKENS``) the served
tokenizer has (looked up once through the server's ``/tokenize``, so attach mode needs no local
tokenizer). Everything ``GenerationConfig`` does not name is sent neutral (top_k 0, min_p 0,
repetition/presence/frequency penalties off), so the server's or model's sampling defaults never leak
in. Prompts are tokenised without added special tokens and completions decoded without skipping them,
as ``TransformersBackend`` does, so greedy outputs of the two backends can be compared.

Decisions:

- Greedy (``temperature == 0``) with ``n > 1``: vLLM refuses it (HTTP 400); all greedy samples of a
  prompt are identical, so one ``n = 1`` request is sent and its completion repeated ``n`` times (the
  same result ``TransformersBackend`` returns).
- Seeds: request ``i`` carries ``seed + i * n`` and vLLM gives its ``j``-th sample ``seed + i * n + j``:
  every sample has its own seed, and a call with the same prompts and config is reproducible whatever
  the server's batching.
- Failures: connection errors, timeouts, HTTP 429 and 5xx are retried ``max_retries`` times with
  exponential back-off (``backoff_s * 2**attempt``, capped, with jitter); other HTTP errors (bad
  request: prompt longer than the context, unknown model) raise ``VLLMRequestError`` at once. The
  first failed request cancels the rest of the call; Ctrl-C in the caller does too.
"""

from __future__ import annotations

import json
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import urllib3

from coderforge.generate.backend import QWEN_STOP_TOKENS, GenerationConfig, Usage, truncate_at_stop

T = TypeVar("T")
R = TypeVar("R")
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# The server's request schema takes at most 4 stop strings (OpenAI's limit). The rest are applied here:
# every completion is cut at the earliest of all the caller's stops, so the result is the same, only
# generation past a later stop string runs on.
MAX_SERVER_STOPS = 4


class VLLMRequestError(RuntimeError):
    """A request the server refused, or one that still failed after every retry."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class _Cancelled(Exception):
    pass


class VLLMBackend:
    """Generation through a running vLLM server (see ``VLLMServer``, or any OpenAI-compatible vLLM)."""

    name = "vllm"

    def __init__(self, base_url: str, model: str | None = None, *, concurrency: int = 64,
                 request_timeout_s: float = 600.0, connect_timeout_s: float = 10.0, max_retries: int = 5,
                 backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                 stop_token_ids: Sequence[int] | None = None):
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.http = urllib3.PoolManager(maxsize=concurrency, block=False, retries=False,
                                        timeout=urllib3.Timeout(connect=connect_timeout_s,
                                                                read=request_timeout_s))
        self._model = model
        self._stop_ids = list(stop_token_ids) if stop_token_ids is not None else None
        self._lock = threading.Lock()
        self.last_usage: Usage | None = None

    @classmethod
    def from_server(cls, server, **kwargs) -> VLLMBackend:
        """A backend for a started (or attached) ``VLLMServer``."""
        if server.base_url is None:
            raise ValueError("start the server first")
        model = None if server.attached else server.config.served_model_name
        return cls(server.base_url, kwargs.pop("model", model), **kwargs)

    # --- HTTP -------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: dict | None = None,
                 cancel: threading.Event | None = None) -> dict:
        cancel = cancel or threading.Event()
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else None
        last = ""
        for attempt in range(self.max_retries + 1):
            if cancel.is_set():
                raise _Cancelled()
            try:
                r = self.http.request(method, self.base_url + path, body=data, headers=headers)
            except urllib3.exceptions.HTTPError as e:  # connection refused/reset, timeouts
                last, status = f"{type(e).__name__}: {e}", None
            else:
                if r.status == 200:
                    return json.loads(r.data)
                last, status = f"HTTP {r.status}: {_error_text(r.data)}", r.status
                if r.status not in RETRY_STATUS:
                    raise VLLMRequestError(f"{method} {path} refused: {last}", status)
            if attempt < self.max_retries:
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** attempt) * random.uniform(0.5, 1.0)
                if cancel.wait(delay):
                    raise _Cancelled()
        raise VLLMRequestError(f"{method} {path} failed after {self.max_retries + 1} attempts: {last}",
                               status)

    @property
    def model(self) -> str:
        """The served model name (asked from ``/v1/models`` when not given)."""
        with self._lock:
            if self._model is None:
                models = self._request("GET", "/v1/models")["data"]
                if not models:
                    raise VLLMRequestError("the server serves no model")
                self._model = models[0]["id"]
            return self._model

    @property
    def stop_token_ids(self) -> list[int]:
        """Ids of the ``QWEN_STOP_TOKENS`` the served tokenizer has as single tokens."""
        model = self.model
        with self._lock:
            if self._stop_ids is None:
                ids = []
                for tok in QWEN_STOP_TOKENS:
                    got = self._request("POST", "/tokenize", {"model": model, "prompt": tok,
                                                              "add_special_tokens": False})["tokens"]
                    if len(got) == 1:
                        ids.append(got[0])
                self._stop_ids = ids
            return list(self._stop_ids)

    # --- generation ---------------------------------------------------------------------------
    def _body(self, prompt: str, config: GenerationConfig, index: int, n: int, stop_ids: list[int]) -> dict:
        greedy = config.temperature <= 0
        body = {
            "model": self.model, "prompt": prompt, "n": n, "max_tokens": config.max_new_tokens,
            "temperature": 0.0 if greedy else config.temperature, "top_p": 1.0 if greedy else config.top_p,
            "top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0, "presence_penalty": 0.0,
            "frequency_penalty": 0.0, "stop": list(config.stop)[:MAX_SERVER_STOPS], "stop_token_ids": stop_ids,
            "add_special_tokens": False, "skip_special_tokens": False,
            "spaces_between_special_tokens": False, "include_stop_str_in_output": False,
        }
        if not greedy:
            body["seed"] = config.seed + index * n
        return body

    def generate_with_usage(self, prompts: list[str],
                            config: GenerationConfig) -> tuple[list[list[str]], Usage]:
        """``generate`` plus the token counts the server reported (summed over requests) and wall time."""
        started = time.perf_counter()
        if config.n < 1:
            raise ValueError("GenerationConfig.n must be at least 1")
        greedy = config.temperature <= 0
        n = 1 if greedy else config.n
        stop_ids = self.stop_token_ids if prompts else []
        stops = tuple(config.stop)
        cancel = threading.Event()

        def one(item: tuple[int, str]) -> tuple[list[str], dict]:
            i, prompt = item
            body = self._body(prompt, config, i, n, stop_ids)
            resp = self._request("POST", "/v1/completions", body, cancel)
            choices = sorted(resp["choices"], key=lambda c: c["index"])
            if len(choices) != n:
                raise VLLMRequestError(f"prompt {i}: asked for {n} completions, got {len(choices)}")
            texts = [truncate_at_stop(c["text"], stops) for c in choices]
            return (texts * config.n if greedy else texts), resp.get("usage") or {}

        results = run_concurrently(one, list(enumerate(prompts)), self.concurrency, cancel)
        usage = Usage(prompts=len(prompts), seconds=0.0)
        out = []
        for texts, u in results:
            out.append(texts)
            usage.completions += len(texts)
            usage.prompt_tokens += int(u.get("prompt_tokens", 0))
            usage.completion_tokens += int(u.get("completion_tokens", 0))
        usage.seconds = time.perf_counter() - started
        self.last_usage = usage
        return out, usage

    def generate(self, prompts: list[str], config: GenerationConfig) -> list[list[str]]:
        """For each prompt, ``config.n`` completions; token counts of the call land in ``last_usage``."""
        return self.generate_with_usage(prompts, config)[0]


def run_concurrently(fn: Callable[[T], R], items: list[T], workers: int, cancel: threading.Event) -> list[R]:
    """``[fn(x) for x in items]`` on up to ``workers`` daemon threads, results in order.

    The first exception cancels the rest (``cancel`` is set; queued items are not started) and is
    re-raised here; so is an interruption of the waiting thread (KeyboardInterrupt). Daemon threads
    never hold up interpreter exit.
    """
    if not items:
        return []
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(len(items)):
        todo.put(i)
    results: list = [None] * len(items)
    errors: list[BaseException] = []
    state = {"left": len(items)}
    lock = threading.Lock()
    finished = threading.Event()

    def worker() -> None:
        while not cancel.is_set():
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            try:
                results[i] = fn(items[i])
            except _Cancelled:
                return
            except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                with lock:
                    errors.append(e)
                cancel.set()
                finished.set()
                return
            with lock:
                state["left"] -= 1
                if state["left"] == 0:
                    finished.set()

    for _ in range(min(workers, len(items))):
        threading.Thread(target=worker, daemon=True, name="vllm-request").start()
    try:
        finished.wait()
    except BaseException:
        cancel.set()
        raise
    if errors:
        raise errors[0]
    return results


def _error_text(data: bytes) -> str:
    try:
        err = json.loads(data)
    except ValueError:
        return data[:500].decode(errors="replace")
    if isinstance(err, dict):
        inner = err.get("error", err)
        if isinstance(inner, dict):
            return str(inner.get("message", inner))[:1000]
        return str(inner)[:1000]
    return str(err)[:1000]
