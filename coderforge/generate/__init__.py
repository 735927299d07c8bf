"""Batch generation behind ``GenerationBackend``: transformers in-process, or vLLM as a server.

vLLM runs from its own venv (``vllm_env``) as an OpenAI-compatible server process (``vllm_server``)
that ``VLLMBackend`` (``vllm_backend``) drives over HTTP with many concurrent requests.
"""

from coderforge.generate.backend import (
    HUMANEVAL_STOP,
    QWEN_STOP_TOKENS,
    GenerationBackend,
    GenerationConfig,
    TransformersBackend,
    Usage,
    truncate_at_stop,
)
from coderforge.generate.vllm_backend import VLLMBackend, VLLMRequestError
from coderforge.generate.vllm_env import VLLM_REQUIREMENT, ensure_vllm_python
from coderforge.generate.vllm_server import VLLMServer, VLLMServerConfig, VLLMServerError

__all__ = ["GenerationBackend", "GenerationConfig", "TransformersBackend", "truncate_at_stop",
           "QWEN_STOP_TOKENS", "HUMANEVAL_STOP", "Usage", "VLLMBackend", "VLLMRequestError", "VLLMServer",
           "VLLMServerConfig", "VLLMServerError", "ensure_vllm_python", "VLLM_REQUIREMENT"]
