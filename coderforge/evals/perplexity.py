"""Held-out loss / perplexity over packed token shards, without attention across documents.

Each row of a ``coderforge-tokens/1`` shard holds several document segments. Feeding the row as one
sequence would let a token attend to the previous document, so every segment is scored as its own
sequence (positions from 0, the first token of a segment never a target): exactly the targets of
``labels_for`` and the positions of ``position_ids``. Segments are batched by length.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from coderforge.tokens.shards import IGNORE_INDEX, TokenShards, labels_for, position_ids


def heldout_segments(shards: TokenShards, max_rows: int) -> tuple[list[np.ndarray], int]:
    """The document segments of the first ``max_rows`` rows, and the number of scored targets
    (checked against ``labels_for``)."""
    segments, targets = [], 0
    for r in range(min(max_rows, len(shards))):
        row = shards.row(r)
        labels = labels_for(row, shards.seq_len)
        pos = position_ids(row.doc_lens, shards.seq_len)
        start = 0
        for n in row.doc_lens:
            n = int(n)
            seg = np.asarray(row.tokens[start:start + n], dtype=np.int64)
            assert pos[start] == 0 and (n == 1 or pos[start + n - 1] == n - 1)
            segments.append(seg)
            start += n
        targets += int((labels != IGNORE_INDEX).sum())
    return segments, targets


def heldout_loss(model, shard_dir: str | Path, max_rows: int = 64, batch_tokens: int = 16384,
                 device: str | None = None) -> dict[str, float]:
    """Mean next-token NLL (nats) over the held-out targets, and its perplexity."""
    import torch
    import torch.nn.functional as F

    shards = TokenShards(shard_dir)
    segments, expected_targets = heldout_segments(shards, max_rows)
    device = device or next(model.parameters()).device
    order = sorted(range(len(segments)), key=lambda i: len(segments[i]))
    total_nll, total_tokens = 0.0, 0
    model.eval()
    batches, batch = [], []
    for idx in order:  # ascending length: the newest segment is the widest
        if batch and (len(batch) + 1) * len(segments[idx]) > batch_tokens:
            batches.append(batch)
            batch = []
        batch.append(segments[idx])
    if batch:
        batches.append(batch)
    for batch in batches:
        width = len(batch[-1])
        if width < 2:
            continue
        ids = torch.full((len(batch), width), 0, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for b, seg in enumerate(batch):
            ids[b, :len(seg)] = torch.from_numpy(seg)
            mask[b, :len(seg)] = 1
        ids, mask = ids.to(device), mask.to(device)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
        nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                              reduction="none").view(len(batch), width - 1)
        valid = mask[:, 1:].bool()
        total_nll += float(nll[valid].sum())
        total_tokens += int(valid.sum())
    if total_tokens != expected_targets:
        raise AssertionError(f"scored {total_tokens} targets, labels_for has {expected_targets}")
    loss = total_nll / total_tokens if total_tokens else float("nan")
    return {"heldout_loss": loss, "heldout_ppl": math.exp(loss) if total_tokens else float("nan"),
            "heldout_tokens": float(total_tokens), "heldout_rows": float(min(max_rows, len(shards))),
            "heldout_segments": float(len(segments))}
