"""Tiny packed token shards for the training tests (written with the real TokenShardWriter)."""

from __future__ import annotations

import numpy as np
import pytest

from coderforge.tokens.shards import TokenShardWriter

VOCAB = 96


def write_shards(path, rows: int = 24, seq_len: int = 64, seed: int = 0, vocab: int = VOCAB) -> str:
    """Rows of 2-4 documents each (sometimes a padded tail); documents follow a learnable pattern."""
    rng = np.random.default_rng(seed)
    w = TokenShardWriter(path, seq_len=seq_len, pad_id=0, eos_id=1, vocab_size=vocab, rows_per_shard=10)
    for _ in range(rows):
        lens, left = [], seq_len - int(rng.integers(0, 6))
        while left > 0 and len(lens) < 4:
            n = min(left, int(rng.integers(6, seq_len // 2)))
            lens.append(n)
            left -= n
        toks = []
        for n in lens:
            start = int(rng.integers(2, vocab - 1))
            step = int(rng.integers(1, 4))
            doc = [(start + step * i) % (vocab - 2) + 2 for i in range(n - 1)] + [1]
            toks.extend(doc)
        w.add_row(toks, lens)
    w.close()
    return str(path)


@pytest.fixture
def shard_dir(tmp_path):
    return write_shards(tmp_path / "tokens" / "train")


def tiny_model_config(vocab: int = VOCAB, seq: int = 64) -> dict:
    from coderforge.train.model import qwen2_config_dict

    return qwen2_config_dict("debug-tiny", vocab, seq)


def tiny_recipe(seed: int, **train):
    """A recipe on the debug-tiny shape (positions = the 64-token test rows) with ``train`` set as given
    and ``run.seed = seed``; every other value is the recipe's default."""
    from coderforge.config import RecipeConfig

    return RecipeConfig.model_validate({"data": {"sources": [{"uri": "/nonexistent"}]}, "run": {"seed": seed},
                                        "model": {"size": "debug-tiny", "max_position_embeddings": 64},
                                        "train": train})


def tiny_loop(data_dir: str, seed: int, checkpoint_dir: str | None = None, save_final: bool = True, **train):
    """The loop configuration the recipe DAG would build for ``tiny_recipe(seed, **train)`` on ``data_dir``,
    with checkpoints in ``checkpoint_dir`` (standalone) and the final HF export on or off."""
    from dataclasses import replace

    from coderforge.train.loop_config import loop_config

    loop = loop_config(tiny_recipe(seed, **train), data_dir, "file", None)
    return replace(loop, checkpoint_dir=checkpoint_dir, save_final=save_final)
