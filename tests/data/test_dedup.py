"""Dedup: near-dedup quality on planted near-duplicates, exact dedup and its keep rules."""

from __future__ import annotations

import random
import re

from coderforge.data.dedup import run_dedup
from coderforge.ledger import read_ledger
from coderforge.records import Document, write_documents
from coderforge.tracking import NullRun
from tests.data.conftest import recipe, stdlib_files

CFG = recipe([{"uri": "/nonexistent"}])


def _small_edit(text: str, rng: random.Random) -> str:
    lines = text.split("\n")
    for _ in range(3):
        i = rng.randrange(len(lines))
        lines.insert(i, "    # edited: " + str(rng.random()))
    return "\n".join(lines)


def _rename(text: str) -> str:
    names = [n for n, _ in sorted({m: 0 for m in re.findall(r"def (\w+)\(", text)}.items())][:2]
    for n in names:
        text = re.sub(rf"\b{n}\b", n + "_renamed", text)
    return text


def _reorder(text: str) -> str:
    parts = re.split(r"(?m)^(?=def |class )", text)
    head, blocks = parts[0], parts[1:]
    return head + "".join(reversed(blocks))


def test_near_dedup_precision_recall_f1_on_planted_duplicates(tmp_path, stdlib_dir):
    rng = random.Random(0)
    originals = stdlib_files(stdlib_dir, 40)
    assert len(originals) >= 30
    docs, truth = [], {}
    for i, text in enumerate(originals):
        docs.append(Document(id=f"orig{i}", repo="r", path=f"o{i}.py", lang="python", content=text))
        for kind, fn in (("edit", lambda t: _small_edit(t, rng)), ("rename", _rename), ("reorder", _reorder)):
            if kind == "reorder" and _reorder(text) == text:
                continue
            did = f"{kind}{i}"
            docs.append(Document(id=did, repo="r", path=f"{did}.py", lang="python", content=fn(text)))
            truth[did] = f"orig{i}"
    rng.shuffle(docs[1:])
    write_documents(str(tmp_path / "in"), docs, shard_size=37)
    res = run_dedup(CFG, str(tmp_path / "in"), str(tmp_path / "out"), NullRun())
    assert res.ledger.inputs == len(docs) == res.ledger.kept + res.ledger.dropped
    dropped = {r["id"]: r["reason"] for r in read_ledger(str(tmp_path / "out")) if r["status"] == "dropped"}
    # a drop is correct when it names a member of the same family (original + its variants)
    family = {**{f"orig{i}": i for i in range(len(originals))}, **{k: int(v[4:]) for k, v in truth.items()}}
    planted_pairs_found = sum(1 for d in truth if d in dropped or any(
        dropped.get(f"{k}{family[d]}", "").endswith(d) for k in ("orig",)))
    tp = sum(1 for d, r in dropped.items() if family.get(r.split(":", 1)[1]) == family[d])
    fp = len(dropped) - tp
    fn = len(truth) - tp
    precision = tp / max(1, tp + fp)
    recall = tp / max(1, tp + fn)
    f1 = 2 * precision * recall / max(1e-9, precision + recall)
    print(f"near-dedup planted: P={precision:.3f} R={recall:.3f} F1={f1:.3f} (tp={tp} fp={fp} fn={fn})")
    assert planted_pairs_found >= tp
    assert f1 >= 0.95
    assert all(r.startswith(("near_duplicate_of:", "exact_duplicate_of:")) for r in dropped.values())


def test_exact_dedup_names_kept_twin_and_keep_rules(tmp_path):
    body = "def add(a, b):\n    return a + b\n"
    docs = [Document(id="long-path", repo="r", path="deep/dir/x.py", lang="python", content=body),
            Document(id="short", repo="r", path="x.py", lang="python", content=body + "\n\n   \n"),
            Document(id="other", repo="r", path="y.py", lang="python", content="print(1)\n")]
    write_documents(str(tmp_path / "in"), docs)
    cfg = recipe([{"uri": "/x"}], dedup={"keep": "shortest_path"})
    run_dedup(cfg, str(tmp_path / "in"), str(tmp_path / "out"), NullRun())
    rows = {r["id"]: r for r in read_ledger(str(tmp_path / "out"))}
    assert rows["long-path"]["reason"] == "exact_duplicate_of:short" and rows["short"]["status"] == "kept"
    cfg = recipe([{"uri": "/x"}], dedup={"keep": "first"})
    run_dedup(cfg, str(tmp_path / "in"), str(tmp_path / "out2"), NullRun())
    rows = {r["id"]: r for r in read_ledger(str(tmp_path / "out2"))}
    assert rows["short"]["reason"] == "exact_duplicate_of:long-path"
