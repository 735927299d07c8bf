"""A tiny real model for evaluation tests: a byte-level BPE trained here on standard-library code
(with the Qwen2.5-Coder control tokens) and a randomly initialised 2-layer Qwen2ForCausalLM, saved
together in one Hugging Face directory. Nothing is downloaded."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np
import pytest

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
           "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]
STDLIB = Path(sysconfig.get_paths()["stdlib"])
CORPUS = [STDLIB / n for n in ("textwrap.py", "bisect.py", "heapq.py", "fnmatch.py", "colorsys.py", "keyword.py")]


def build_tiny_model(out: Path, seed: int = 0, vocab_size: int = 600) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([p.read_text() for p in CORPUS], trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    hf.save_pretrained(out)
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=len(hf), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=4096,
                      tie_word_embeddings=True, eos_token_id=hf.eos_token_id, pad_token_id=hf.pad_token_id,
                      bos_token_id=hf.eos_token_id)
    Qwen2ForCausalLM(cfg).save_pretrained(out)
    return out


def write_heldout(out: Path, tokenizer_dir: Path, seq_len: int = 64, max_docs: int = 4) -> Path:
    from transformers import AutoTokenizer

    from coderforge.tokens.shards import TokenShardWriter

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    w = TokenShardWriter(out, seq_len=seq_len, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id,
                         vocab_size=len(tok), rows_per_shard=3)
    row, lens = [], []
    for p in CORPUS[:max_docs]:
        ids = tok.encode(p.read_text()[:400], add_special_tokens=False) + [tok.eos_token_id]
        while ids:
            room = seq_len - len(row)
            take = ids[:room]
            row += take
            lens.append(len(take))
            ids = ids[room:]
            if len(row) == seq_len:
                w.add_row(np.asarray(row), lens)
                row, lens = [], []
    if row:
        w.add_row(np.asarray(row), lens)
    w.close()
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory, tiny_model_dir) -> Path:
    data = tmp_path_factory.mktemp("pack-out")
    write_heldout(data / "heldout", tiny_model_dir)
    return data
