"""Token shards: random access by global index, deterministic shuffled order, exact resume."""

from __future__ import annotations

import numpy as np
import pytest

from coderforge.tokens.shards import (
    IGNORE_INDEX,
    ResumableSampler,
    TokenShards,
    TokenShardWriter,
    labels_for,
    position_ids,
)


@pytest.fixture()
def shards(tmp_path):
    w = TokenShardWriter(tmp_path, seq_len=8, pad_id=0, eos_id=1, vocab_size=100, rows_per_shard=3)
    for r in range(10):
        w.add_row(np.arange(10 * r, 10 * r + 8) % 100, [5, 3], [2 * r, 2 * r + 1])
    w.close()
    return TokenShards(tmp_path)


def test_rows_by_global_index_across_shards(shards):
    assert len(shards) == 10 and len(shards.meta["shards"]) == 4
    for r in (0, 2, 3, 7, 9):
        row = shards.row(r)
        assert row.tokens[0] == (10 * r) % 100 and list(row.doc_index) == [2 * r, 2 * r + 1]
    assert isinstance(shards._tokens[0], np.memmap)
    assert list(position_ids(shards.row(4).doc_lens, 8)) == [0, 1, 2, 3, 4, 0, 1, 2]
    with pytest.raises(IndexError):
        shards.row(10)


def test_sampler_covers_every_row_each_epoch_and_reshuffles(shards):
    s = ResumableSampler(len(shards), seed=5)
    e0 = [row for _, row in s.take(10)]
    e1 = [row for _, row in s.take(10)]
    assert sorted(e0) == sorted(e1) == list(range(10))
    assert e0 != e1
    assert [row for _, row in ResumableSampler(10, seed=5).take(10)] == e0
    assert [row for _, row in ResumableSampler(10, seed=6).take(10)] != e0


def test_sampler_resumes_exactly(shards):
    full = ResumableSampler(10, seed=1).take(35)
    first = ResumableSampler(10, seed=1)
    first.take(13)
    state = first.state_dict()
    resumed = ResumableSampler(10, seed=1)
    resumed.load_state_dict(state)
    assert resumed.take(22) == full[13:]
    assert ResumableSampler(10, seed=1, start=13).take(22) == full[13:]
    with pytest.raises(ValueError):
        ResumableSampler(11, seed=1).load_state_dict(state)


def test_workers_split_the_stream(shards):
    full = ResumableSampler(10, seed=2).take(20)
    w0 = ResumableSampler(10, seed=2, rank=0, world=2).take(10)
    w1 = ResumableSampler(10, seed=2, rank=1, world=2).take(10)
    assert sorted(w0 + w1) == sorted(full)
    assert all(i % 2 == 0 for i, _ in w0) and all(i % 2 == 1 for i, _ in w1)


def test_loss_mask_round_trip_and_labels(tmp_path):
    """The optional per-token loss mask: stored per shard, read per row, padded with zeros, honoured by
    ``labels_for`` on top of the segment boundaries; counted in the meta."""
    w = TokenShardWriter(tmp_path, seq_len=8, pad_id=0, eos_id=1, vocab_size=100, rows_per_shard=2)
    rows = [([10, 11, 12, 13, 20, 21, 22], [4, 3], [0, 0, 1, 1, 0, 1, 1]),
            ([30, 31, 32, 33, 34, 35, 36, 37], [8], [0, 0, 0, 0, 1, 1, 1, 1]),
            ([40, 41], [2], [0, 1])]
    for k, (toks, lens, mask) in enumerate(rows):
        w.add_row(toks, lens, list(range(2 * k, 2 * k + len(lens))), loss_mask=mask)
    meta = w.close()
    assert meta["loss_mask"] is True and meta["tokens_target"] == 4 + 4 + 1
    assert sorted(p.name for p in tmp_path.glob("*.lossmask.npy")) == ["shard-00000.lossmask.npy",
                                                                       "shard-00001.lossmask.npy"]
    sh = TokenShards(tmp_path)
    r0, r2 = sh.row(0), sh.row(2)
    assert list(r0.loss_mask) == [0, 0, 1, 1, 0, 1, 1, 0] and list(r2.loss_mask) == [0, 1, 0, 0, 0, 0, 0, 0]
    x = IGNORE_INDEX
    # targets: mask 1 and not the first token of a segment (22 of the second segment is one, 20 is not)
    assert list(labels_for(r0, 8)) == [x, x, 12, 13, x, 21, 22, x]
    assert list(labels_for(sh.row(1), 8)) == [x, x, x, x, 34, 35, 36, 37]
    assert list(labels_for(r2, 8)) == [x, 41, x, x, x, x, x, x]


def test_loss_mask_is_optional_and_all_or_none(tmp_path, shards):
    # shards written without a mask read as before: no mask, labels from the segments alone
    row = shards.row(3)
    assert row.loss_mask is None and "loss_mask" not in shards.meta
    assert list(labels_for(row, 8)) == [IGNORE_INDEX, *row.tokens[1:5], IGNORE_INDEX, *row.tokens[6:8]]
    w = TokenShardWriter(tmp_path / "a", seq_len=4, pad_id=0, eos_id=1, vocab_size=10)
    w.add_row([2, 3], [2], loss_mask=[0, 1])
    with pytest.raises(ValueError, match="every row"):
        w.add_row([2, 3], [2])
    with pytest.raises(ValueError, match="zeros and ones"):
        w.add_row([2, 3], [2], loss_mask=[0, 1, 1])
    with pytest.raises(ValueError, match="zeros and ones"):
        w.add_row([2, 3], [2], loss_mask=[0, 2])
    w2 = TokenShardWriter(tmp_path / "b", seq_len=4, pad_id=0, eos_id=1, vocab_size=10)
    w2.add_row([2, 3], [2])
    with pytest.raises(ValueError, match="every row"):
        w2.add_row([2, 3], [2], loss_mask=[1, 1])
