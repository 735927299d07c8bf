"""Chunked cross-entropy equals the full-logits loss (value and gradients) without full logits."""

from __future__ import annotations

import pytest
import torch

from coderforge.train.loss import IGNORE, chunked_lm_loss, shift_targets, token_losses


@pytest.mark.parametrize("chunk", [7, 64, 1000])
def test_chunked_loss_and_grads_match_full(chunk):
    torch.manual_seed(0)
    b, s, d, v = 2, 50, 16, 97
    h = torch.randn(b, s, d, dtype=torch.float64, requires_grad=True)
    w = torch.randn(v, d, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, v, (b, s))
    labels[0, :5] = IGNORE
    labels[1, 30:] = IGNORE
    targets = shift_targets(labels)
    ref = torch.nn.functional.cross_entropy((h @ w.t()).reshape(-1, v), targets.reshape(-1), ignore_index=IGNORE)
    gh_ref, gw_ref = torch.autograd.grad(ref * 3.0, (h, w))
    loss = chunked_lm_loss(h, w, targets, chunk=chunk)
    gh, gw = torch.autograd.grad(loss * 3.0, (h, w))
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    assert torch.allclose(gh, gh_ref, atol=1e-10) and torch.allclose(gw, gw_ref, atol=1e-10)
    per_tok = token_losses(h.detach(), w.detach(), targets)
    assert per_tok.sum() / (targets != IGNORE).sum() == pytest.approx(ref.item(), rel=1e-9)


def test_shift_targets_never_predicts_the_first_label_slot():
    labels = torch.tensor([[IGNORE, 5, 6, IGNORE, 8]])
    assert shift_targets(labels).tolist() == [[5, 6, IGNORE, 8, IGNORE]]


def test_no_full_vocabulary_logits_are_kept_for_backward():
    """Saved tensors are the input-sized gradients only (tokens x hidden, vocab x hidden)."""
    torch.manual_seed(0)
    n, d, v = 512, 8, 4096
    h = torch.randn(1, n, d, requires_grad=True)
    w = torch.randn(v, d, requires_grad=True)
    t = torch.randint(0, v, (1, n))
    saved = []

    def pack(x):
        saved.append(x.numel())
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        loss = chunked_lm_loss(h, w, t, chunk=64)
    loss.backward()
    assert max(saved) <= max(n * d, v * d) < n * v
