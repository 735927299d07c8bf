"""Qwen2.5-Coder shapes, model construction, document-masked attention and the FLOPs count.

Every model is a ``transformers.Qwen2ForCausalLM``, so every checkpoint is a Hugging Face checkpoint.

Document masking (recipe.md §9.7): a packed row holds several documents; each token attends only to
earlier tokens of its own document and positions restart per document. The mask is passed to the
model as ``attention_mask={"full_attention": mask}`` (a dict skips transformers' own mask builder):

* ``dense_doc_mask`` – a boolean ``[B, 1, S, S]`` block-diagonal causal mask for transformers'
  ``sdpa`` attention (CPU, short rows, tests);
* ``varlen.segments_from_docs`` – per-document causal sdpa segment by segment (``attention: varlen``;
  CPU rows longer than ``VARLEN_FROM`` by default): no ``S×S`` mask, ``Σ len²`` work;
* ``doc_block_mask`` – a FlexAttention ``BlockMask`` built directly from the document ids at
  128×128-block granularity (no ``S×S`` tensor is ever made): blocks wholly inside one document
  below the diagonal are "full" (no mask evaluation), blocks that straddle a boundary or lie on the
  diagonal are "partial", all others are skipped, so attention work scales with Σ len(doc)², not S².
  Used with the ``cf_flex`` attention function registered here (GPU).

Long context (recipe.md §5.1): ``released_config`` is the config a trained model is saved with (plain
RoPE, ``max_position_embeddings`` = the trained length, no ``rope_scaling``, as Qwen ships it);
``yarn_overrides`` are the config keys that turn YaRN on when a model is loaded or served for long inputs.

This module imports neither Ray nor pydantic: the benchmark runs it on a machine that has neither.
"""

from __future__ import annotations

import math

import numpy as np

# size: (layers, hidden, heads, kv_heads, intermediate, tied, padded vocab) — recipe.md §1 (config values)
QWEN25_CODER_SHAPES = {
    "0.5B": (24, 896, 14, 2, 4864, True, 151936),
    "1.5B": (28, 1536, 12, 2, 8960, True, 151936),
    "3B": (36, 2048, 16, 2, 11008, True, 151936),
    "7B": (28, 3584, 28, 4, 18944, False, 152064),
    "14B": (48, 5120, 40, 8, 13824, False, 152064),
    "32B": (64, 5120, 40, 8, 27648, False, 152064),
}
# Debug sizes: same architecture, small enough for CPU tests and the embedded default.
DEBUG_SHAPES = {
    "debug-tiny": (2, 64, 4, 2, 176, True, None),
    "debug-small": (4, 128, 4, 2, 352, True, None),
    "debug-medium": (8, 256, 8, 2, 704, True, None),
}
LONG_CONTEXT_ROPE_THETA = 1_000_000.0
YARN_FACTOR = 4.0
FLEX_BLOCK = 128
VARLEN_FROM = 2048  # attention "auto" on CPU: dense sdpa mask below this row length, varlen from it
ATTN_FLEX = "cf_flex"


def shape_of(size: str, explicit: dict | None = None) -> dict:
    """The shape of a named size, or ``explicit`` (keys of ``ModelSection``) for debug/custom."""
    if size in QWEN25_CODER_SHAPES or size in DEBUG_SHAPES:
        layers, hidden, heads, kv, inter, tied, vocab = {**QWEN25_CODER_SHAPES, **DEBUG_SHAPES}[size]
        return {"num_hidden_layers": layers, "hidden_size": hidden, "num_attention_heads": heads,
                "num_key_value_heads": kv, "intermediate_size": inter, "tie_word_embeddings": tied,
                "padded_vocab": vocab}
    e = dict(explicit or {})
    return {k: e[k] for k in ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
                              "intermediate_size", "tie_word_embeddings")} | {"padded_vocab": None}


def qwen2_config_dict(size: str, vocab_size: int, max_positions: int, rope_theta: float = 10_000.0,
                      explicit: dict | None = None, rms_norm_eps: float = 1e-6) -> dict:
    """``Qwen2Config`` keyword arguments; named sizes pad the embedding like Qwen (151,936 / 152,064 rows)."""
    s = shape_of(size, explicit)
    hidden, heads, kv = s["hidden_size"], s["num_attention_heads"], s["num_key_value_heads"]
    if hidden % heads or heads % kv:
        raise ValueError(f"model shape: hidden {hidden} / heads {heads} / kv heads {kv} do not divide")
    vocab = max(vocab_size, s["padded_vocab"] or 0)
    return dict(
        vocab_size=int(vocab), hidden_size=hidden, num_hidden_layers=s["num_hidden_layers"],
        num_attention_heads=heads, num_key_value_heads=kv, intermediate_size=s["intermediate_size"],
        tie_word_embeddings=s["tie_word_embeddings"], max_position_embeddings=int(max_positions),
        rope_parameters={"rope_type": "default", "rope_theta": float(rope_theta)}, rms_norm_eps=rms_norm_eps,
        hidden_act="silu", attention_dropout=0.0, initializer_range=0.02, use_sliding_window=False,
        bos_token_id=None, use_cache=False,
    )


def build_model(config: dict | None = None, init_from: str | None = None, overrides: dict | None = None,
                attention: str = "sdpa", dtype=None):
    """A ``Qwen2ForCausalLM`` from a config dict or a checkpoint directory, with ``overrides`` applied."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    register_attention()
    from coderforge.train import varlen

    varlen.register()
    impl = {"flex": ATTN_FLEX, "varlen": varlen.ATTN_VARLEN}.get(attention, "sdpa")
    if init_from:
        model = Qwen2ForCausalLM.from_pretrained(init_from, attn_implementation="sdpa",
                                                 dtype=dtype or torch.float32)
        overrides = dict(overrides or {})
        for key, value in overrides.items():
            setattr(model.config, key, value)
        if "rope_parameters" in overrides:  # recompute inv_freq for the new RoPE base
            model.model.rotary_emb = type(model.model.rotary_emb)(config=model.config)
    else:
        cfg = Qwen2Config(**config)
        model = Qwen2ForCausalLM(cfg)
        if dtype is not None:
            model = model.to(dtype)
    model.config.use_cache = False
    model.config._attn_implementation = impl
    for module in model.modules():  # attention modules read the implementation from their config
        if hasattr(module, "config") and module.config is not model.config:
            module.config._attn_implementation = impl
    return model


# ---------------------------------------------------------------- document ids and masks

def doc_ids(doc_lens, seq_len: int) -> np.ndarray:
    """Per-token document ordinal; padding after the last document gets its own id (len(doc_lens))."""
    out = np.full(seq_len, len(doc_lens), dtype=np.int64)
    start = 0
    for k, n in enumerate(doc_lens):
        out[start:start + int(n)] = k
        start += int(n)
    return out


def dense_doc_mask(docs):
    """Boolean ``[B, 1, S, S]``: True where query q may attend key k (same document, k <= q)."""
    import torch

    s = docs.shape[-1]
    same = docs[:, :, None] == docs[:, None, :]
    causal = torch.ones(s, s, dtype=torch.bool, device=docs.device).tril()
    return (same & causal)[:, None]


def doc_block_mask(docs, block: int = FLEX_BLOCK):
    """A FlexAttention ``BlockMask`` for document-causal attention, from ``docs`` ``[B, S]`` (monotone ids)."""
    import torch
    from torch.nn.attention.flex_attention import BlockMask

    b, s = docs.shape
    if s % block:
        raise ValueError(f"row length {s} is not a multiple of the attention block {block}")
    nb = s // block
    blocks = docs.view(b, nb, block)
    lo, hi = blocks[..., 0], blocks[..., -1]  # ids are non-decreasing along a row
    qi = torch.arange(nb, device=docs.device)
    below = qi[None, :, None] > qi[None, None, :]  # kv block strictly before q block
    diag = qi[None, :, None] == qi[None, None, :]
    # kv block k precedes q block q: they share a document iff hi[k] >= lo[q]
    overlap = hi[:, None, :] >= lo[:, :, None]
    single = (lo == hi)
    full = below & overlap & single[:, :, None] & single[:, None, :] & (lo[:, :, None] == lo[:, None, :])
    partial = ((below & overlap) | diag) & ~full

    def pack(m):
        m = m[:, None]  # [B, 1, QB, KB]
        num = m.sum(-1, dtype=torch.int32)
        idx = torch.argsort((~m).to(torch.int8), dim=-1, stable=True).to(torch.int32)
        return num, idx

    kv_num, kv_idx = pack(partial)
    full_num, full_idx = pack(full)
    docs_c = docs.contiguous()

    def mask_mod(bi, h, q, kv):
        return (docs_c[bi, q] == docs_c[bi, kv]) & (q >= kv)

    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block, mask_mod=mask_mod,
                                    seq_lengths=(s, s))


_FLEX = None


def _flex():
    global _FLEX
    if _FLEX is None:
        import torch
        from torch.nn.attention.flex_attention import flex_attention

        _FLEX = torch.compile(flex_attention, dynamic=False) if torch.cuda.is_available() else flex_attention
    return _FLEX


def cf_flex_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention function: FlexAttention with a document ``BlockMask`` (GQA native)."""
    out = _flex()(query, key, value, block_mask=attention_mask, scale=scaling,
                  enable_gqa=query.shape[1] != key.shape[1])
    return out.transpose(1, 2).contiguous(), None


def register_attention() -> None:
    from transformers import AttentionInterface

    if ATTN_FLEX not in AttentionInterface._global_mapping:
        AttentionInterface.register(ATTN_FLEX, cf_flex_attention)


def attention_mask_for(docs, attention: str):
    """The ``attention_mask`` argument for a batch of document ids under the chosen attention."""
    if attention == "varlen":
        from coderforge.train.varlen import segments_from_docs

        return {"full_attention": segments_from_docs(docs)}
    mask = doc_block_mask(docs) if attention == "flex" else dense_doc_mask(docs)
    return {"full_attention": mask}


# ---------------------------------------------------------------- FLOPs

def param_count(config: dict) -> int:
    """Parameters of a Qwen2 config (tied embeddings counted once), computed from the shape."""
    h, layers = config["hidden_size"], config["num_hidden_layers"]
    heads, kv, inter, vocab = (config["num_attention_heads"], config["num_key_value_heads"],
                               config["intermediate_size"], config["vocab_size"])
    hd = h // heads
    attn = h * heads * hd + heads * hd + 2 * (h * kv * hd + kv * hd) + heads * hd * h
    mlp = 3 * h * inter
    per_layer = attn + mlp + 2 * h
    emb = vocab * h * (1 if config.get("tie_word_embeddings", True) else 2)
    return layers * per_layer + emb + h


def flops_per_token(config: dict, seq_len: int) -> float:
    """Training FLOPs per token, the PaLM / torchtitan convention: ``6·N + 12·L·d·S``.

    N = all parameters (tied embedding once; the LM head matmul is real work), L layers, d hidden
    size, S the row length. The attention term counts full (non-causal, non-document-masked)
    score and value products, as the baseline's 31 % MFU was computed; document masking does less
    attention work than this, so it is reported beside it (``attn_fraction``).
    """
    return 6.0 * param_count(config) + 12.0 * config["num_hidden_layers"] * config["hidden_size"] * seq_len


def peak_flops(device_name: str | None) -> float | None:
    """Dense bf16 peak of known accelerators (no sparsity), or None (CPU: MFU not reported)."""
    if not device_name:
        return None
    name = device_name.upper()
    for key, value in (("H200", 989e12), ("H100", 989e12), ("H800", 989e12), ("A100", 312e12),
                       ("A800", 312e12), ("L40S", 362e12), ("B200", 2250e12)):
        if key in name:
            return value
    return None


def yarn_rope_parameters(theta: float, original: int, factor: float = YARN_FACTOR) -> dict:
    return {"rope_type": "yarn", "rope_theta": float(theta), "factor": float(factor),
            "original_max_position_embeddings": int(original)}


def rope_theta_of(conf: dict) -> float:
    """The RoPE base of a config dict (``rope_parameters`` of transformers 5, or the older ``rope_theta``)."""
    theta = (conf.get("rope_parameters") or {}).get("rope_theta") or conf.get("rope_theta")
    if not theta:
        raise ValueError("model config has no RoPE base (rope_parameters.rope_theta / rope_theta)")
    return float(theta)


def released_config(conf: dict, trained_len: int) -> dict:
    """``conf`` as Qwen ships a trained model (recipe.md §5.1): plain RoPE with the trained base, no
    ``rope_scaling``, ``max_position_embeddings`` = the trained length. YaRN is chosen at inference time
    (``yarn_overrides``), never saved: static YaRN also changes every short input's attention."""
    out = {k: v for k, v in conf.items() if k not in ("rope_scaling", "rope_theta")}
    out["rope_parameters"] = {"rope_type": "default", "rope_theta": rope_theta_of(conf)}
    out["max_position_embeddings"] = int(trained_len)
    return out


def yarn_overrides(conf: dict, factor: float = YARN_FACTOR, original: int | None = None,
                   beta_fast: float | None = None, beta_slow: float | None = None) -> dict:
    """The config keys that turn YaRN on for a model saved without RoPE scaling: ``rope_parameters``
    (yarn, the model's base, ``factor``, ``original`` = its trained length, default its
    ``max_position_embeddings``; ``beta_fast``/``beta_slow`` when given, else the YaRN defaults 32/1) and
    ``max_position_embeddings`` = factor x original, the length served (vLLM does not multiply it for
    yarn). For transformers' config kwargs and vLLM's ``--hf-overrides``."""
    rope = conf.get("rope_parameters") or conf.get("rope_scaling") or {}
    kind = rope.get("rope_type") or rope.get("type") or "default"
    if kind != "default":
        raise ValueError(f"model config already scales RoPE ({kind}); long-context YaRN applies to a model "
                         f"saved without rope scaling (max_position_embeddings = its trained length)")
    if factor <= 1:
        raise ValueError(f"YaRN factor must be > 1, got {factor}")
    original = int(original or conf.get("max_position_embeddings") or 0)
    if original <= 0:
        raise ValueError("YaRN needs the trained length: original_max_position_embeddings or the model's "
                         "max_position_embeddings")
    rope_parameters = yarn_rope_parameters(rope_theta_of(conf), original, factor)
    rope_parameters.update({k: float(v) for k, v in (("beta_fast", beta_fast), ("beta_slow", beta_slow)) if v})
    return {"rope_parameters": rope_parameters, "max_position_embeddings": int(round(original * factor))}


def mean_doc_attention_fraction(doc_lens_rows, seq_len: int) -> float:
    """Σ len² / S² over rows: the share of full-row causal attention work a document mask leaves."""
    if not doc_lens_rows:
        return 1.0
    vals = [sum(int(n) ** 2 for n in lens) / float(seq_len) ** 2 for lens in doc_lens_rows]
    return float(sum(vals) / len(vals)) if not math.isnan(sum(vals)) else 1.0
