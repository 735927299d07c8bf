"""A tiny real model vLLM's CPU attention accepts (head_dim 64; stack-notes "vLLM"): a Qwen-layout
byte-level BPE trained here with ``coderforge.tokens.tokenizer.train_bpe`` (so it has the 22 Qwen2.5
control tokens and the ChatML template) and a randomly initialised 2-layer ``Qwen2ForCausalLM``
(hidden 128, 2 heads, 2 KV heads), saved together in one Hugging Face directory. Nothing is
downloaded."""

from __future__ import annotations

import sysconfig
from pathlib import Path

STDLIB = Path(sysconfig.get_paths()["stdlib"])
CORPUS = [STDLIB / n for n in ("textwrap.py", "bisect.py", "heapq.py", "fnmatch.py", "colorsys.py", "keyword.py")]


def build_vllm_test_model(out: Path, seed: int = 0, vocab_size: int = 600, hidden: int = 128, heads: int = 2,
                          kv_heads: int = 2, layers: int = 2, intermediate: int = 256) -> Path:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from coderforge.tokens.tokenizer import save_hf, train_bpe

    save_hf(train_bpe([p.read_text() for p in CORPUS], vocab_size, 2), out, model_max_length=4096)
    tok = AutoTokenizer.from_pretrained(out)
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, intermediate_size=intermediate,
                      max_position_embeddings=4096, tie_word_embeddings=True, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.eos_token_id)
    Qwen2ForCausalLM(cfg).save_pretrained(out)
    return out
