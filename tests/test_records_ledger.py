import pytest

from coderforge import ledger as ledger_mod
from coderforge.ledger import DocRef, Ledger, LedgerImbalance
from coderforge.records import (
    Document,
    count_documents,
    document_id,
    list_shards,
    read_documents,
    shard_index,
    shard_rows,
    write_documents,
)


def _docs(n):
    return [Document(id=document_id("s", "r", f"f{i}.py"), repo="r", path=f"f{i}.py", lang="python",
                     content=f"x = {i}\n", source="s", meta={"i": i}) for i in range(n)]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_shards_round_trip(where, tmp_path, request):
    base = str(tmp_path) if where == "local" else request.getfixturevalue("s3_env") + "/docs"
    docs = _docs(25)
    uris = write_documents(base, docs, shard_size=10)
    assert len(uris) == 3
    back = list(read_documents(base))
    assert back == docs and count_documents(base) == 25


def test_empty_output_still_writes_a_shard(tmp_path):
    uris = write_documents(str(tmp_path), [])
    assert len(uris) == 1 and list(read_documents(str(tmp_path))) == []


def test_document_id_is_stable():
    assert document_id("a", "b", "c") == document_id("a", "b", "c") != document_id("a", "b", "d")


def test_ledger_balances_and_writes(tmp_path):
    docs = _docs(4)
    led = Ledger("filter")
    led.keep(docs[0])
    led.drop(docs[1], "max_line_length", "1200 > 1000")
    led.drop(docs[2], "exact_duplicate_of:" + docs[0].id)
    led.quarantine(docs[3].id, "UnicodeDecodeError: ...", repo="r", path=docs[3].path)
    s = led.close(str(tmp_path), expected_inputs=4)
    assert (s.inputs, s.kept, s.dropped, s.quarantined) == (4, 1, 2, 1)
    assert s.reasons == {"max_line_length": 1, "exact_duplicate_of": 1, "error": 1}
    rows = ledger_mod.read_ledger(str(tmp_path))
    assert {r["status"] for r in rows} == {"kept", "dropped", "quarantined"}
    assert ledger_mod.read_summary(str(tmp_path))["in"] == 4


def test_ledger_catches_lost_and_double_counted_documents(tmp_path):
    docs = _docs(3)
    led = Ledger("x")
    led.keep(docs[0])
    led.keep(docs[1])
    with pytest.raises(LedgerImbalance, match="3 documents came in"):
        led.close(str(tmp_path), expected_inputs=3)
    led.drop(docs[0], "dup")
    with pytest.raises(LedgerImbalance, match="twice"):
        led.check()
    with pytest.raises(ValueError):
        Ledger("y").drop(docs[0], "")


def test_ledger_beside_shards_is_not_read_as_documents(tmp_path):
    docs = _docs(3)
    write_documents(str(tmp_path), docs)
    led = Ledger("x")
    for d in docs:
        led.keep(d)
    led.close(str(tmp_path), expected_inputs=3)
    (tmp_path / "sub").mkdir()
    write_documents(str(tmp_path / "sub"), _docs(2))
    assert list(read_documents(str(tmp_path))) == docs


def test_list_shards_keeps_to_numbered_shards_directly_under_the_prefix(tmp_path):
    uris = write_documents(str(tmp_path / "out"), _docs(5), shard_size=2)
    for junk in ("ledger.parquet", "part-x.parquet", "part-00001.ledger.json", "_parts/part-00000.parquet"):
        (tmp_path / "out" / junk).parent.mkdir(exist_ok=True)
        (tmp_path / "out" / junk).write_bytes(b"")
    assert list_shards(str(tmp_path / "out")) == uris
    assert list_shards(f"file://{tmp_path}/out") == uris
    assert [shard_index(u) for u in uris] == [0, 1, 2]
    assert shard_index("x/_parts/part-00012.ledger.json") == 12
    assert [shard_rows(u) for u in uris] == [2, 2, 1] and count_documents(f"file://{tmp_path}/out") == 5
    assert list_shards(str(tmp_path / "missing")) == []


def test_replayed_part_ledgers_equal_the_original(tmp_path):
    docs = _docs(4)
    part = Ledger("filter")
    part.keep(docs[0], detail="ok")
    part.drop(docs[1], "max_line_length", "1200 > 1000")
    part.drop(DocRef(docs[2].id, "r", docs[2].path), "binary", nbytes=7)
    part.quarantine(docs[3].id, "UnicodeDecodeError", repo="r", path=docs[3].path, nbytes=3,
                    reason="encoding")
    part.fixed = 2
    merged = Ledger("filter")
    merged.replay(part.entries(), part.fixed)
    assert merged.entries() == part.entries() and merged.summary() == part.summary()
    assert DocRef("a", "r", "p").content == ""
