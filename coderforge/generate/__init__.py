"""Batch generation backends (transformers now; vLLM later) behind ``GenerationBackend``."""

from coderforge.generate.backend import (
    HUMANEVAL_STOP,
    QWEN_STOP_TOKENS,
    GenerationBackend,
    GenerationConfig,
    TransformersBackend,
    truncate_at_stop,
)

__all__ = ["GenerationBackend", "GenerationConfig", "TransformersBackend", "truncate_at_stop",
           "QWEN_STOP_TOKENS", "HUMANEVAL_STOP"]
