"""Sample formats: FIM round trips (text and tokens), repo-level samples byte-exact per recipe.md §3.2,
and the repo-level pack stage."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest

from coderforge import records
from coderforge.data.repo_order import order_files
from coderforge.tokens import formats as F
from coderforge.tokens import packing as P
from coderforge.tokens.shards import TokenShards
from coderforge.tokens.tokenizer import load_hf, tokenizer_info
from coderforge.tracking import NullRun
from tests.tokens._corpus import recipe, stdlib_documents


@pytest.fixture(scope="module")
def docs(stdlib_dir):
    return stdlib_documents(stdlib_dir, ["json", "email", "logging", "http", "urllib"])


@pytest.mark.parametrize("spm_rate", [0.0, 0.5, 1.0])
def test_fim_round_trip_recovers_every_document(docs, spm_rate):
    formats = {"plain": 0, "psm": 0, "spm": 0}
    for d in docs:
        pieces, fmt = F.file_sample(d.content, d.id, seed=7, rate=0.5, spm_rate=spm_rate)
        formats[fmt] += 1
        text = F.render(pieces)
        assert text.endswith("<|endoftext|>")
        assert F.unfim_pieces(pieces) == d.content
        if "<|fim_" not in d.content:
            assert F.unfim(text) == d.content
        if fmt == "psm":
            assert text.startswith("<|fim_prefix|>") and pieces[0] == F.PRE and pieces[4] == F.MID
        if fmt == "spm":
            assert text.startswith("<|fim_suffix|>") and pieces[2] == F.PRE
    n = len(docs)
    fim = formats["psm"] + formats["spm"]
    assert 0.4 * n < fim < 0.6 * n  # rate 0.5
    if spm_rate == 0.0:
        assert formats["spm"] == 0
    if spm_rate == 1.0:
        assert formats["psm"] == 0


def test_fim_is_seeded_per_document_not_per_position(docs):
    a = [F.file_sample(d.content, d.id, 3, 0.5) for d in docs]
    b = [F.file_sample(d.content, d.id, 3, 0.5) for d in reversed(docs)][::-1]
    c = [F.file_sample(d.content, d.id, 4, 0.5) for d in docs]
    assert a == b
    assert a != c


def test_fim_round_trip_through_tokens(docs, small_tokenizer):
    hf = load_hf(small_tokenizer)
    tok = P.plain_text_tokenizer(small_tokenizer)
    info = tokenizer_info(small_tokenizer)
    ctrl = {**info.control_ids, "<|endoftext|>": info.eos_id}
    checked = 0
    nonempty = [d for d in docs if d.content]
    for d in nonempty:
        pieces, fmt = F.file_sample(d.content, d.id, 0, 1.0, 0.5)
        sample = P.Sample(pieces, "train", fmt, [d], d.id, d.repo, d.path)
        (ids,) = P.encode_samples(tok, [sample], ctrl)
        text = hf.decode(ids.tolist(), skip_special_tokens=False)
        assert F.unfim(text) == unicodedata.normalize("NFC", d.content)
        checked += 1
    assert checked == len(nonempty) > 40


def test_repo_level_format_is_byte_exact():
    files = [("src/util.py", "def add(a, b):\n    return a + b\n"), ("src/main.py", "from util import add\n")]
    text = F.render(F.repo_sample("acme/calc", files))
    assert text == ("<|repo_name|>acme/calc\n"
                    "<|file_sep|>src/util.py\ndef add(a, b):\n    return a + b\n\n"
                    "<|file_sep|>src/main.py\nfrom util import add\n"
                    "<|endoftext|>")
    rng = np.random.default_rng(1)
    pieces = F.repo_sample("acme/calc", files, fim_last=True, rng=rng)
    text = F.render(pieces)
    head = ("<|repo_name|>acme/calc\n<|file_sep|>src/util.py\ndef add(a, b):\n    return a + b\n\n"
            "<|file_sep|>src/main.py\n")
    assert text.startswith(head + "<|fim_prefix|>")
    tail = text[len(head):]
    assert tail.endswith("<|endoftext|>")
    assert F.unfim(tail) == "from util import add\n"
    pre = tail[len("<|fim_prefix|>"):tail.index("<|fim_suffix|>")]
    assert "from util import add\n".startswith(pre)
    # the FIM'd file is the last; earlier files stay plain
    assert text.count("<|fim_prefix|>") == 1 and text.index("<|fim_prefix|>") > text.rindex("<|file_sep|>")


def test_repo_stage_packs_files_in_dependency_order(docs, small_tokenizer, tmp_path):
    docs_dir = tmp_path / "docs"
    records.write_documents(str(docs_dir), docs)
    cfg = recipe(repo={"seq_len": 4096, "fim_rate": 0.5}, data={"heldout_fraction": 0.0})
    res = P.run_pack(cfg, str(docs_dir), small_tokenizer, str(tmp_path / "out"), NullRun(), stage="repo")
    assert res.ledger.kept == len([d for d in docs if d.content])
    assert res.ledger.reasons == ({"empty_file": res.ledger.dropped} if res.ledger.dropped else {})
    shards = TokenShards(tmp_path / "out" / "train")
    assert shards.seq_len == 4096
    index = P.read_index(tmp_path / "out" / "train")
    assert {r["format"] for r in index} == {"repo", "repo_fim"}
    hf = load_hf(small_tokenizer)
    recovered = shards.document_tokens()
    tok = P.plain_text_tokenizer(small_tokenizer)
    for repo in ("json", "email"):
        rows = [r for r in index if r["repo"] == repo]
        paths = [p for r in sorted(rows, key=lambda r: int(r["id"].split("#")[1])) for p in r["path"].split("\n")]
        rdocs = {d.path: d.content for d in docs if d.repo == repo and d.content}
        assert paths == order_files(rdocs).paths  # every file once, in dependency order, chunks in order
        for r in rows:
            text = hf.decode(recovered[r["sample"]].tolist(), skip_special_tokens=False)
            assert text.startswith(f"<|repo_name|>{repo}\n<|file_sep|>")
            assert text.endswith("<|endoftext|>")
            files_in = r["path"].split("\n")
            assert text.count("<|file_sep|>") == len(files_in)
            # split at file boundaries: a sample exceeds the row only when it is a single file
            if r["tokens"] > 4096:
                assert len(files_in) == 1
            if r["format"] == "repo":
                body = [(p, rdocs[p]) for p in files_in]
                assert text == F.render(F.repo_sample(repo, body))
        # the big email repository was cut into several samples
        if repo == "email":
            assert len(rows) > 1
    assert len(tok.encode("x").ids) == 1


def test_repo_stage_always_holds_out_something_plain(docs, small_tokenizer, tmp_path):
    docs_dir = tmp_path / "docs"
    records.write_documents(str(docs_dir), docs)
    cfg = recipe(repo={"seq_len": 2048, "fim_rate": 1.0}, data={"heldout_fraction": 0.001})
    res = P.run_pack(cfg, str(docs_dir), small_tokenizer, str(tmp_path / "out"), NullRun(), stage="repo")
    held = P.read_index(tmp_path / "out" / "heldout")
    train = P.read_index(tmp_path / "out" / "train")
    assert len(held) == 1 and held[0]["format"] == "repo"
    assert {r["format"] for r in train} == {"repo_fim"}
    assert res.metrics["heldout_rows"] >= 1
    assert {r["id"] for r in held}.isdisjoint(r["id"] for r in train)
