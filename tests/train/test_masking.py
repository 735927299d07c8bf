"""Document masking: a packed row gives the same per-token losses as its documents run one by one.

Uses the engine's own path (``task.make_batch`` → ``model.attention_mask_for`` → the model's core
forward → ``loss.token_losses`` / ``loss.chunked_lm_loss``) for every attention the engine offers on
CPU: sdpa with the dense block-diagonal mask, and FlexAttention with the document ``BlockMask``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coderforge.tokens.shards import TokenShards
from coderforge.train.loss import chunked_lm_loss, shift_targets, token_losses
from coderforge.train.model import build_model, dense_doc_mask, doc_block_mask, doc_ids
from coderforge.train.task import make_batch

from .conftest import VOCAB, tiny_model_config, write_shards


def _per_token(model, batch):
    with torch.no_grad():
        h = model.model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                        attention_mask=batch["attention_mask"], use_cache=False).last_hidden_state
        return token_losses(h, model.lm_head.weight, batch["targets"])


def _alone(model, tokens):
    """Per-token losses of one document run by itself: positions 0..n-1, plain causal attention."""
    ids = torch.as_tensor(tokens, dtype=torch.long)[None]
    n = ids.shape[1]
    labels = ids.clone()
    labels[0, 0] = -100
    with torch.no_grad():
        h = model.model(input_ids=ids, position_ids=torch.arange(n)[None], use_cache=False).last_hidden_state
        return token_losses(h, model.lm_head.weight, shift_targets(labels))[0]


@pytest.mark.parametrize("attention", ["sdpa", "flex"])
def test_packed_row_equals_documents_one_by_one(tmp_path, attention):
    seq = 256  # a multiple of the 128-token FlexAttention block
    shards = TokenShards(write_shards(tmp_path / "t", rows=3, seq_len=seq, seed=3))
    torch.manual_seed(0)
    packed_model = build_model(tiny_model_config(seq=seq), attention=attention).eval()
    torch.manual_seed(0)
    ref_model = build_model(tiny_model_config(seq=seq), attention="sdpa").eval()
    rows = [0, 1, 2]
    batch = make_batch(shards, rows, torch.device("cpu"), attention)
    packed = _per_token(packed_model, batch)
    checked = 0
    for b, r in enumerate(rows):
        row = shards.row(r)
        start = 0
        assert len(row.doc_lens) >= 2  # the test needs real packing
        for n in map(int, row.doc_lens):
            alone = _alone(ref_model, row.tokens[start:start + n])
            # packed position t predicts token t+1 of the same document; the last one predicts nothing
            got = packed[b, start:start + n]
            assert torch.allclose(got[:-1], alone[:-1], atol=1e-5, rtol=1e-5), (attention, r, start)
            assert float(got[-1]) == 0.0  # never trained across the boundary into the next document
            checked += n - 1
            start += n
        assert float(packed[b, start:].abs().sum()) == 0.0  # padding is never a target
    assert checked > 3 * seq // 2


def test_without_document_mask_the_losses_differ(tmp_path):
    """Control: plain causal attention over the packed row leaks across documents (the test can fail)."""
    seq = 128
    shards = TokenShards(write_shards(tmp_path / "t", rows=1, seq_len=seq, seed=5))
    torch.manual_seed(0)
    model = build_model(tiny_model_config(seq=seq)).eval()
    batch = make_batch(shards, [0], torch.device("cpu"), "sdpa")
    masked = _per_token(model, batch)
    leaky = dict(batch)
    leaky["attention_mask"] = {"full_attention": torch.ones(seq, seq, dtype=torch.bool).tril()[None, None]}
    leaky["position_ids"] = torch.arange(seq)[None]
    unmasked = _per_token(model, leaky)
    first = int(shards.row(0).doc_lens[0])
    assert torch.allclose(masked[0, :first - 1], unmasked[0, :first - 1], atol=1e-5)
    assert not torch.allclose(masked[0, first:], unmasked[0, first:], atol=1e-3)


def test_block_mask_matches_dense_document_mask():
    """The FlexAttention BlockMask, evaluated densely, is exactly the block-diagonal causal mask."""
    rng = np.random.default_rng(0)
    seq = 512
    lens = []
    while sum(lens) < seq - 40:
        lens.append(int(rng.integers(1, 300)))
    lens[-1] -= max(0, sum(lens) - (seq - 17))  # leave a padded tail
    docs = torch.from_numpy(np.stack([doc_ids([n for n in lens if n > 0], seq), doc_ids([seq], seq)]))
    bm = doc_block_mask(docs)
    dense = dense_doc_mask(docs)[:, 0]
    got = bm.to_dense()  # [B, 1, QB, KB] block occupancy
    qb = seq // 128
    for b in range(2):
        for i in range(qb):
            for j in range(qb):
                blk = dense[b, i * 128:(i + 1) * 128, j * 128:(j + 1) * 128]
                assert bool(got[b, 0, i, j]) == bool(blk.any()), (b, i, j)  # no needed block skipped, no waste
    # full blocks (no mask evaluation) only where the dense block is entirely allowed
    full = torch.zeros(2, qb, qb, dtype=torch.bool)
    for b in range(2):
        for i in range(qb):
            for k in range(int(bm.full_kv_num_blocks[b, 0, i])):
                full[b, i, int(bm.full_kv_indices[b, 0, i, k])] = True
    for b in range(2):
        for i in range(qb):
            for j in range(qb):
                if full[b, i, j]:
                    assert bool(dense[b, i * 128:(i + 1) * 128, j * 128:(j + 1) * 128].all())
    assert full[1].sum() == qb * (qb - 1) // 2  # one long document: every block below the diagonal is full


def test_chunked_loss_matches_full_logits_loss_and_grads():
    torch.manual_seed(0)
    h = torch.randn(2, 50, 16, requires_grad=True)
    w = torch.randn(VOCAB, 16, requires_grad=True)
    labels = torch.randint(0, VOCAB, (2, 50))
    labels[:, :3] = -100
    labels[1, 20:25] = -100
    targets = shift_targets(labels)
    ref = torch.nn.functional.cross_entropy((h @ w.t()).reshape(-1, VOCAB), targets.reshape(-1), ignore_index=-100)
    gh, gw = torch.autograd.grad(ref * 3.0, (h, w))
    got = chunked_lm_loss(h, w, targets, chunk=7)
    ch, cw = torch.autograd.grad(got * 3.0, (h, w))
    assert abs(float(got.detach()) - float(ref.detach())) < 1e-5 * float(ref.detach())
    assert torch.allclose(ch, gh, atol=1e-6, rtol=1e-4) and torch.allclose(cw, gw, atol=1e-6, rtol=1e-4)
    per_token = token_losses(h, w, targets).detach()
    assert torch.allclose(per_token.sum() / (targets != -100).sum(), ref.detach(), rtol=1e-5)


def test_varlen_attention_packed_row_equals_documents_one_by_one(tmp_path):
    """The CPU varlen path (per-document causal sdpa, no S×S mask) gives the per-document losses too."""
    from coderforge.train.varlen import segments_from_docs, segments_from_lengths, use_varlen

    seq = 192
    shards = TokenShards(write_shards(tmp_path / "t", rows=2, seq_len=seq, seed=7))
    torch.manual_seed(0)
    model = build_model(tiny_model_config(seq=seq), attention="sdpa").eval()
    torch.manual_seed(0)
    ref_model = build_model(tiny_model_config(seq=seq), attention="sdpa").eval()
    use_varlen(model)
    batch = make_batch(shards, [0, 1], torch.device("cpu"), "sdpa")
    docs = torch.from_numpy(np.stack([doc_ids(shards.row(r).doc_lens, seq) for r in (0, 1)]))
    segs = segments_from_docs(docs)
    assert segs == segments_from_lengths([shards.row(r).doc_lens for r in (0, 1)], seq)
    varlen_batch = dict(batch, attention_mask={"full_attention": segs})
    got = _per_token(model, varlen_batch)
    dense = _per_token(ref_model, batch)
    assert torch.allclose(got, dense, atol=1e-5, rtol=1e-5)
    for b, r in enumerate((0, 1)):
        row, start = shards.row(r), 0
        for n in map(int, row.doc_lens):
            alone = _alone(ref_model, row.tokens[start:start + n])
            assert torch.allclose(got[b, start:start + n - 1], alone[:-1], atol=1e-5, rtol=1e-5)
            start += n


def test_varlen_attention_gradients_match_dense_mask():
    """Training through the varlen path: same gradients as sdpa with the dense block-diagonal mask."""
    from coderforge.train.varlen import segments_from_lengths, varlen_attention

    torch.manual_seed(1)
    b, h, hkv, s, d = 2, 4, 2, 40, 8
    q = torch.randn(b, h, s, d, dtype=torch.float64, requires_grad=True)
    k = torch.randn(b, hkv, s, d, dtype=torch.float64, requires_grad=True)
    v = torch.randn(b, hkv, s, d, dtype=torch.float64, requires_grad=True)
    lens = [[10, 25], [40]]
    segs = segments_from_lengths(lens, s)
    out = varlen_attention(q, k, v, segs)
    docs = torch.from_numpy(np.stack([doc_ids(x, s) for x in lens]))
    mask = dense_doc_mask(docs)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    assert torch.allclose(out, ref, atol=1e-12)
    w = torch.randn_like(out)
    g = torch.autograd.grad((out * w).sum(), (q, k, v))
    gr = torch.autograd.grad((ref * w).sum(), (q, k, v))
    for a, c in zip(g, gr, strict=True):
        assert torch.allclose(a, c, atol=1e-12)
