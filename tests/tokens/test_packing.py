"""Packing: every document's tokens are recoverable from the shards; ledger; held-out split; S3."""

from __future__ import annotations

import numpy as np
import pytest

from coderforge import ledger, records, storage
from coderforge.tokens import formats as F
from coderforge.tokens import packing as P
from coderforge.tokens.shards import TokenShards, TokenShardWriter, labels_for
from coderforge.tokens.tokenizer import tokenizer_info
from coderforge.tracking import NullRun
from tests.tokens._corpus import recipe


def _expected_tokens(docs_dir, tokenizer_dir, cfg) -> dict[str, np.ndarray]:
    """Each document's sample encoded independently: text pieces one by one, control tokens by id."""
    tok = P.plain_text_tokenizer(tokenizer_dir)
    info = tokenizer_info(tokenizer_dir)
    ids = {**info.control_ids, "<|endoftext|>": info.eos_id}
    out = {}
    for d in records.read_documents(docs_dir):
        if P.is_heldout(d.id, cfg.data.heldout_fraction):
            pieces = [d.content, F.EOT]
        else:
            pieces, _ = F.file_sample(d.content, d.id, cfg.run.seed, cfg.fim.rate, cfg.fim.spm_rate)
        toks = []
        for p in pieces:
            toks += [ids[p]] if isinstance(p, F.Ctrl) else tok.encode(p, add_special_tokens=False).ids
        if len(toks) > sum(isinstance(p, F.Ctrl) for p in pieces):
            out[d.id] = np.asarray(toks, dtype=np.uint32)
    return out


@pytest.mark.parametrize("mode", ["best_fit", "stream"])
def test_every_document_is_recoverable_from_the_shards(small_docs, small_tokenizer, tmp_path, mode):
    cfg = recipe(pack={"seq_len": 512, "packing": mode, "rows_per_shard": 50, "max_open_rows": 16},
                 fim={"rate": 0.5, "spm_rate": 0.3})
    res = P.run_pack(cfg, small_docs, small_tokenizer, str(tmp_path), NullRun())
    expected = _expected_tokens(small_docs, small_tokenizer, cfg)
    assert res.metrics["samples_psm"] > 0 and res.metrics["samples_spm"] > 0 and res.metrics["samples_plain"] > 0
    seen = {}
    for split in ("train", "heldout"):
        shards = TokenShards(tmp_path / split)
        assert shards.meta["seq_len"] == 512
        index = P.read_index(tmp_path / split)
        recovered = shards.document_tokens()
        assert sorted(recovered) == [r["sample"] for r in index]
        for row in index:
            assert np.array_equal(recovered[row["sample"]], expected[row["id"]]), row["path"]
            assert row["tokens"] == len(expected[row["id"]])
            seen[row["id"]] = split
        for i in range(len(shards)):
            r = shards.row(i)
            assert int(r.doc_lens.sum()) <= 512
            pad = r.tokens[int(r.doc_lens.sum()):]
            assert (pad == shards.pad_id).all()
    assert set(seen) == set(expected)
    assert res.metrics["tokens"] == sum(len(v) for v in expected.values())
    assert 0 < res.metrics["heldout_tokens"] < res.metrics["train_tokens"]
    # both modes: only the last row of each split carries padding (best_fit re-packs open rows at the end)
    assert res.metrics["rows"] * 512 - res.metrics["tokens"] < 2 * 512
    assert res.metrics["padding_fraction"] < 0.005 * 4


def test_ledger_and_control_token_hygiene(small_docs, small_tokenizer, tmp_path):
    res = P.run_pack(recipe(pack={"seq_len": 256}, fim={"rate": 0.0}), small_docs, small_tokenizer,
                     str(tmp_path), NullRun())
    rows = {r["id"]: r for r in ledger.read_ledger(str(tmp_path))}
    assert len(rows) == records.count_documents(small_docs) == res.ledger.inputs
    assert rows["empty-doc"]["status"] == "dropped"
    assert rows["empty-doc"]["reason"] == "empty_after_tokenisation"
    assert rows["control-text"]["status"] == "kept"
    info = tokenizer_info(small_tokenizer)
    control = set(info.control_ids.values()) - {info.eos_id}
    for split in ("train", "heldout"):
        shards = TokenShards(tmp_path / split)
        for toks in shards.document_tokens().values():
            # text that spells a control token is encoded as text; <|endoftext|> only ends samples
            assert not control.intersection(toks.tolist())
            assert toks[-1] == info.eos_id and info.eos_id not in toks[:-1].tolist()


def test_heldout_split_is_deterministic_and_follows_the_fraction(small_docs, small_tokenizer, tmp_path):
    cfg = recipe(pack={"seq_len": 1024})
    P.run_pack(cfg, small_docs, small_tokenizer, str(tmp_path / "a"), NullRun())
    P.run_pack(cfg, small_docs, small_tokenizer, str(tmp_path / "b"), NullRun())
    ida = [r["id"] for r in P.read_index(tmp_path / "a" / "heldout")]
    idb = [r["id"] for r in P.read_index(tmp_path / "b" / "heldout")]
    assert ida == idb and ida
    assert all(P.is_heldout(i, 0.1) for i in ida)
    for name in ("train", "heldout"):
        a = (tmp_path / "a" / name / "shard-00000.tokens.npy").read_bytes()
        assert a == (tmp_path / "b" / name / "shard-00000.tokens.npy").read_bytes()
    n = records.count_documents(small_docs)
    assert 0.02 * n < len(ida) < 0.25 * n


def test_best_fit_keeps_short_samples_whole_and_labels_stay_inside_segments(small_tokenizer, tmp_path):
    w = TokenShardWriter(tmp_path, seq_len=10, pad_id=0, eos_id=1, vocab_size=50)
    p = P.Packer(w, 10, "best_fit", max_open=4)
    for k, n in enumerate([7, 3, 6, 4, 5, 23, 2]):
        p.add(np.arange(2, 2 + n, dtype=np.uint32), k)
    p.close()
    meta = w.close()
    assert meta["tokens_real"] == 50 and meta["num_rows"] == 5 and meta["tokens_pad"] == 0
    shards = TokenShards(tmp_path)
    rows = [shards.row(i) for i in range(len(shards))]
    segs = sorted((int(d), int(n)) for r in rows for d, n in zip(r.doc_index, r.doc_lens, strict=True))
    # sample 5 (23 tokens) is cut into 10 + 10 + 3; the others stay whole
    assert segs == [(0, 7), (1, 3), (2, 6), (3, 4), (4, 5), (5, 3), (5, 10), (5, 10), (6, 2)]
    for r in rows:
        lab = labels_for(r, 10)
        start = 0
        for n in r.doc_lens:
            assert lab[start] == -100
            start += int(n)


def test_pack_to_and_from_s3(s3_env, small_docs, small_tokenizer):
    tok_uri = storage.join(s3_env, "tokenizer")
    storage.upload_dir(small_tokenizer, tok_uri)
    docs_uri = storage.join(s3_env, "docs")
    for uri in records.list_shards(small_docs)[:3]:
        storage.write_bytes(storage.join(docs_uri, uri.rsplit("/", 1)[-1]), storage.read_bytes(uri))
    out = storage.join(s3_env, "tokens")
    res = P.run_pack(recipe(pack={"seq_len": 256}), docs_uri, tok_uri, out, NullRun())
    assert res.ledger.inputs == records.count_documents(docs_uri)
    names = storage.list_uris(out)
    assert any(n.endswith("train/meta.json") for n in names)
    assert any(n.endswith("ledger.json") for n in names)


ADVERSARIAL = [
    "", " ", "\n", "x", "  \n\n  \t\n x", "a\r\nb\r\n\r\n  c", "IT'S it's It'Ll we'VE 'd'", "\x1c\x1d x\x1f",
    "\x0b\x0c\t y",
    "tab\tand  spaces   \n", "trailing   ", "12345 6.78e-9 0x1F", "a+=b**2;//c", "'''doc''' \"\"\"", "  \n",
    "caf\u00e9 na\u0308ive \u00bd \u2163 \u4e2d\u6587", "def f():\n\treturn 1\n\n\n", "<|endoftext|> <|fim_prefix|>",
]


def test_text_encoder_equals_the_tokenizer(small_tokenizer, stdlib_dir):
    tok = P.plain_text_tokenizer(small_tokenizer)
    enc = P.TextEncoder(tok)
    assert enc.fast
    texts = ADVERSARIAL + [p.read_text(encoding="utf-8") for pkg in ("asyncio", "email", "xml", "unittest")
                           for p in sorted((stdlib_dir / pkg).rglob("*.py"))]
    got = enc.encode(texts)
    want = [e.ids for e in tok.encode_batch_fast(texts, add_special_tokens=False)]
    for text, g, w in zip(texts, got, want, strict=True):
        assert g.tolist() == w, repr(text[:80])
    assert len(enc.cache) > 1000
    assert [g.tolist() for g in enc.encode(texts[:30])] == want[:30]  # warm cache, same answer


def test_text_encoder_falls_back_for_other_pipelines(small_tokenizer):
    from tokenizers import pre_tokenizers

    tok = P.plain_text_tokenizer(small_tokenizer)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    enc = P.TextEncoder(tok)
    assert not enc.fast
    assert enc.encode(["a  b"])[0].tolist() == tok.encode("a  b").ids


def test_a_ledger_beside_the_input_documents_is_not_read_as_documents(small_tokenizer, tmp_path):
    from coderforge.ledger import Ledger

    docs = [records.Document(f"d{i}", "r", f"f{i}.py", "python", f"x = {i}\n") for i in range(5)]
    records.write_documents(str(tmp_path / "in"), docs)
    upstream = Ledger("filter")
    for d in docs + [records.Document("gone", "r", "gone.py", "python", "y")]:
        upstream.keep(d) if d.id != "gone" else upstream.drop(d, "max_line_length")
    upstream.close(str(tmp_path / "in"))
    assert (tmp_path / "in" / "ledger.parquet").exists()
    res = P.run_pack(recipe(pack={"seq_len": 64}), str(tmp_path / "in"), small_tokenizer, str(tmp_path / "out"),
                     NullRun())
    assert res.ledger.inputs == 5 and res.ledger.kept == 5
