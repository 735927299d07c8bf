"""Chunked cross-entropy over the LM head that never materialises full-vocabulary logits.

For a row of 32,768 tokens and Qwen's 151,936-row embedding the logits alone are 10 GB in fp32
(HF's loss upcasts them) plus as much again for their gradient. ``chunked_lm_loss`` walks the
tokens in chunks of ``chunk`` rows: per chunk it computes the logits, the log-sum-exp, the loss and,
right away, the gradients with respect to the hidden states and the head weight (the loss is a
scalar, so they only need scaling by the incoming gradient in backward). Peak extra memory is one
chunk of logits, ``chunk × vocab``; nothing of size ``tokens × vocab`` is saved for backward.
"""

from __future__ import annotations

import torch

IGNORE = -100


def shift_targets(labels: torch.Tensor) -> torch.Tensor:
    """HF-convention (unshifted) labels → per-position targets: position t predicts labels[t+1]."""
    targets = torch.full_like(labels, IGNORE)
    targets[:, :-1] = labels[:, 1:]
    return targets


def _chunk(h, w, y, scale):
    logits = h @ w.t()
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    lse = torch.logsumexp(logits, dim=-1)
    valid = y != IGNORE
    yc = torch.where(valid, y, torch.zeros_like(y))
    tgt = logits.gather(1, yc[:, None])[:, 0]
    loss_sum = torch.where(valid, lse - tgt, torch.zeros_like(lse)).sum()
    g = torch.exp(logits - lse[:, None])
    g.scatter_add_(1, yc[:, None], -torch.ones_like(lse)[:, None])
    g = (g * (valid.to(g.dtype) * scale)[:, None]).to(h.dtype)
    return loss_sum, g @ w, g.t() @ h


_COMPILED = None


def _chunk_fn(compiled: bool):
    global _COMPILED
    if not compiled:
        return _chunk
    if _COMPILED is None:
        _COMPILED = torch.compile(_chunk, dynamic=False)
    return _COMPILED


class _ChunkedCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk: int, n_valid: float, compiled: bool):
        h2 = hidden.reshape(-1, hidden.shape[-1])
        y = targets.reshape(-1)
        fn = _chunk_fn(compiled)
        scale = torch.tensor(1.0 / max(n_valid, 1.0), dtype=torch.promote_types(hidden.dtype, torch.float32),
                             device=hidden.device)
        grad_h = torch.empty_like(h2)
        acc = torch.promote_types(weight.dtype, torch.float32)
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device)
        total = torch.zeros((), dtype=acc, device=hidden.device)
        n = h2.shape[0]
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            loss_sum, gh, gw = fn(h2[s:e], weight, y[s:e], scale)
            total += loss_sum
            grad_h[s:e] = gh
            grad_w += gw
        ctx.save_for_backward(grad_h.view_as(hidden), grad_w)
        ctx.weight_dtype = weight.dtype
        return total * scale

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_out.to(grad_h.dtype), (grad_w * grad_out).to(ctx.weight_dtype), None, None, None, None


def chunked_lm_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = 4096,
                    compiled: bool = False) -> torch.Tensor:
    """Mean next-token cross-entropy of ``hidden @ weight.T`` against ``targets`` (IGNORE skipped)."""
    n_valid = float((targets != IGNORE).sum())
    return _ChunkedCE.apply(hidden, weight, targets, int(chunk), n_valid, bool(compiled))


def token_losses(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-position losses (0 where ignored), full logits: the reference for tests and evaluation."""
    logits = hidden @ weight.t()
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    y = targets.clamp(min=0)
    lp = torch.log_softmax(logits, dim=-1).gather(-1, y[..., None])[..., 0]
    return torch.where(targets != IGNORE, -lp, torch.zeros_like(lp))
