"""The transformers backend: greedy determinism, Qwen stop tokens and stop strings."""

from __future__ import annotations

import pytest

from coderforge.generate import GenerationBackend, GenerationConfig, TransformersBackend, truncate_at_stop
from tests.evals.conftest import build_tiny_model


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    return TransformersBackend(str(build_tiny_model(tmp_path_factory.mktemp("m"), seed=1)), batch_size=2)


def test_protocol_and_stop_tokens(backend):
    assert isinstance(backend, GenerationBackend)
    vocab = backend.tokenizer.get_vocab()
    for t in ("<|endoftext|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_pad|>", "<|file_sep|>", "<|repo_name|>",
              "<|im_end|>"):
        assert vocab[t] in backend.stop_token_ids


def test_greedy_is_deterministic_and_batch_independent(backend):
    prompts = ["def add(a, b):\n", "import os\n", "class Foo:\n    def __init__(self):\n"]
    cfg = GenerationConfig(max_new_tokens=12)
    a = backend.generate(prompts, cfg)
    b = backend.generate(prompts[::-1], cfg)[::-1]
    single = [backend.generate([p], cfg)[0] for p in prompts]
    assert a == b == single
    assert all(len(x) == 1 for x in a)


def test_stop_strings_cut_the_completion(backend):
    free = backend.generate(["def f(x):\n"], GenerationConfig(max_new_tokens=40))[0][0]
    assert len(free) > 3
    stop = free[2:4]
    cut = backend.generate(["def f(x):\n"], GenerationConfig(max_new_tokens=40, stop=(stop,)))[0][0]
    assert cut == truncate_at_stop(free, (stop,)) and stop not in cut


def test_sampling_gives_n_completions(backend):
    out = backend.generate(["x = "], GenerationConfig(max_new_tokens=8, temperature=1.0, n=3, seed=5))
    assert len(out) == 1 and len(out[0]) == 3
    again = backend.generate(["x = "], GenerationConfig(max_new_tokens=8, temperature=1.0, n=3, seed=5))
    assert out == again


def test_truncate_at_stop():
    assert truncate_at_stop("    return 1\ndef g():", ("\ndef ", "\nclass ")) == "    return 1"
    assert truncate_at_stop("abc", ()) == "abc"
