"""Token shards: random access by global index, deterministic shuffled order, exact resume."""

from __future__ import annotations

import numpy as np
import pytest

from coderforge.tokens.shards import ResumableSampler, TokenShards, TokenShardWriter, position_ids


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
