"""Held-out loss never lets a document attend to the previous one in its packed row."""

from __future__ import annotations

import math

import numpy as np
import torch

from coderforge.evals.perplexity import heldout_loss, heldout_segments
from coderforge.tokens.shards import IGNORE_INDEX, TokenShards, labels_for


def _reference_loss(model, shards: TokenShards) -> float:
    """Straightforward per-document scoring, one segment at a time."""
    nll, n = 0.0, 0
    for r in range(len(shards)):
        row = shards.row(r)
        start = 0
        for L in row.doc_lens:
            L = int(L)
            seg = torch.tensor(np.asarray(row.tokens[start:start + L], dtype=np.int64))[None]
            start += L
            if L < 2:
                continue
            with torch.no_grad():
                logits = model(input_ids=seg).logits[0]
            nll += float(torch.nn.functional.cross_entropy(logits[:-1], seg[0, 1:], reduction="sum"))
            n += L - 1
    return nll / n


def test_matches_per_document_reference_and_differs_from_cross_document(tiny_model_dir, tiny_data_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    shards = TokenShards(tiny_data_dir / "heldout")
    assert any(len(shards.row(r).doc_lens) > 1 for r in range(len(shards))), "fixture must pack >1 doc per row"
    m = heldout_loss(model, tiny_data_dir / "heldout", max_rows=len(shards), batch_tokens=200)
    ref = _reference_loss(model, shards)
    assert math.isclose(m["heldout_loss"], ref, rel_tol=1e-4)
    # the number of scored targets equals labels_for's non-ignored labels
    expected = sum(int((labels_for(shards.row(r), shards.seq_len) != IGNORE_INDEX).sum()) for r in range(len(shards)))
    assert m["heldout_tokens"] == expected
    # whole-row scoring (attending across documents) gives a different number
    nll, n = 0.0, 0
    for r in range(len(shards)):
        row = shards.row(r)
        labels = torch.tensor(labels_for(row, shards.seq_len))
        ids = torch.tensor(np.asarray(row.tokens, dtype=np.int64))[None]
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
        mask = labels[1:] != IGNORE_INDEX
        nll += float(torch.nn.functional.cross_entropy(logits[:-1][mask], labels[1:][mask], reduction="sum"))
        n += int(mask.sum())
    assert not math.isclose(nll / n, ref, rel_tol=1e-6)


def test_max_rows_limits_the_rows_read(tiny_data_dir):
    shards = TokenShards(tiny_data_dir / "heldout")
    segs_all, _ = heldout_segments(shards, len(shards))
    segs_one, t1 = heldout_segments(shards, 1)
    assert len(segs_one) < len(segs_all)
    assert t1 == int((labels_for(shards.row(0), shards.seq_len) != IGNORE_INDEX).sum())
