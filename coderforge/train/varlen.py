"""Variable-length ("varlen") document attention for CPU and any device without FlexAttention.

A packed row's documents are attended one segment at a time: for each row and each document
segment ``[start, start + n)`` the queries, keys and values of that segment go through
``scaled_dot_product_attention(is_causal=True)`` and the outputs are concatenated back into the row.
No ``S×S`` mask is ever built (the dense ``dense_doc_mask`` path costs ``B·S²`` bytes of mask plus
``B·H·S²`` scores); the work and memory are ``Σ len²`` per row, as with FlashAttention's
``cu_seqlens`` varlen kernels, which this mirrors with plain PyTorch ops. Padding after the last
document is a segment of its own (it attends only to itself and is never a training target), the
same semantics as ``model.dense_doc_mask``.

Use: ``register()`` once, set the model's attention implementation to ``ATTN_VARLEN`` (see
``use_varlen``), and pass ``attention_mask={"full_attention": segments_from_docs(docs)}`` (a dict, so
transformers does not build its own mask).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ATTN_VARLEN = "cf_varlen"


@dataclass(frozen=True)
class DocSegments:
    """Per row, the ``(start, length)`` of each document segment (padding included), in order."""

    rows: tuple[tuple[tuple[int, int], ...], ...]

    def __len__(self) -> int:
        return len(self.rows)


def segments_from_docs(docs: torch.Tensor) -> DocSegments:
    """``docs`` ``[B, S]`` non-decreasing document ids (``model.doc_ids``) → segments per row."""
    rows = []
    d = docs.detach().cpu()
    for b in range(d.shape[0]):
        ids, counts = torch.unique_consecutive(d[b], return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        rows.append(tuple((int(s), int(n)) for s, n in zip(starts.tolist(), counts.tolist(), strict=True)))
    return DocSegments(tuple(rows))


def segments_from_lengths(doc_lens_rows, seq_len: int) -> DocSegments:
    """Segments straight from each row's document lengths (the rest of the row: one padding segment)."""
    rows = []
    for lens in doc_lens_rows:
        segs, start = [], 0
        for n in lens:
            n = int(n)
            if n > 0:
                segs.append((start, n))
                start += n
        if start < seq_len:
            segs.append((start, seq_len - start))
        rows.append(tuple(segs))
    return DocSegments(tuple(rows))


def varlen_attention(query, key, value, segments: DocSegments, scale: float | None = None) -> torch.Tensor:
    """``query`` ``[B, H, S, D]``, ``key``/``value`` ``[B, Hkv, S, D]`` (GQA) → ``[B, H, S, D]``."""
    if len(segments) != query.shape[0]:
        raise ValueError(f"{len(segments)} segment rows for a batch of {query.shape[0]}")
    gqa = query.shape[1] != key.shape[1]
    out_rows = []
    for b, segs in enumerate(segments.rows):
        pieces = []
        for start, n in segs:
            end = start + n
            pieces.append(torch.nn.functional.scaled_dot_product_attention(
                query[b:b + 1, :, start:end], key[b:b + 1, :, start:end], value[b:b + 1, :, start:end],
                is_causal=True, scale=scale, enable_gqa=gqa))
        if sum(n for _, n in segs) != query.shape[2]:
            raise ValueError(f"row {b}: segments cover {sum(n for _, n in segs)} of {query.shape[2]} positions")
        out_rows.append(torch.cat(pieces, dim=2))
    return torch.cat(out_rows, dim=0)


def cf_varlen_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention function (``AttentionInterface``) over ``DocSegments``."""
    if not isinstance(attention_mask, DocSegments):
        raise TypeError(f"{ATTN_VARLEN} needs DocSegments as the attention mask, got {type(attention_mask)}")
    out = varlen_attention(query, key, value, attention_mask, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    from transformers import AttentionInterface

    if ATTN_VARLEN not in AttentionInterface._global_mapping:
        AttentionInterface.register(ATTN_VARLEN, cf_varlen_attention)


def use_varlen(model) -> None:
    """Switch a built transformers model (and every sub-config) to the varlen attention."""
    register()
    model.config._attn_implementation = ATTN_VARLEN
    for module in model.modules():
        if hasattr(module, "config") and module.config is not model.config:
            module.config._attn_implementation = ATTN_VARLEN
