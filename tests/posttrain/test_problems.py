"""Problem files (``synth.problems``): every line kept, dropped or quarantined with its error; kept
problems become samples that the verify step runs in the real sandbox (a wrong solution is caught);
the shipped tiny problem set passes verification in full."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coderforge.config import RecipeConfig, load_recipe
from coderforge.ledger import Ledger, read_ledger
from coderforge.posttrain.problems import count_problems, read_problems
from coderforge.posttrain.samples import read_samples, write_samples
from coderforge.posttrain.verify import run_verify
from coderforge.sandbox import probe
from coderforge.tracking import NullRun

ROOT = Path(__file__).resolve().parents[2]
needs_sandbox = pytest.mark.skipif(not probe()[0], reason="namespaces unavailable here")

GOOD = {"id": "twice", "language": "python", "problem": "Write twice(x) returning 2 * x.",
        "solution": "def twice(x):\n    return 2 * x", "tests": "assert twice(2) == 4\nassert twice(-1) == -2"}
WRONG = {**GOOD, "id": "twice-wrong", "solution": "def twice(x):\n    return x + 2"}


def lines() -> list[str]:
    return [
        json.dumps(GOOD), json.dumps(WRONG), "",
        "{not json",
        json.dumps({**GOOD, "id": "no-tests", "tests": "  "}),
        json.dumps({**GOOD, "id": "cobol", "language": "cobol"}),
        json.dumps(["a", "list"]),
        json.dumps({**GOOD, "id": "twice"}),  # repeats the first id
        json.dumps({**GOOD, "id": "js-one", "language": "javascript",
                    "solution": "function twice(x) { return 2 * x; }",
                    "tests": "const assert = require('node:assert');\nassert.strictEqual(twice(2), 4);"}),
        json.dumps({k: v for k, v in GOOD.items() if k != "id"} | {"problem": "No id: the line number stands in."}),
    ]


def cfg_for(path: Path, languages=("python",)) -> RecipeConfig:
    return RecipeConfig.model_validate({
        "data": {"sources": [{"uri": "/x"}]},
        "synth": {"languages": list(languages), "problems": [{"path": str(path), "name": "mine"}]},
        "verify": {"timeout_s": 5, "memory_mb": 256, "workers": 2}})


def test_every_line_is_accounted_for(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text("\n".join(lines()) + "\n")
    cfg = cfg_for(f)
    ledger = Ledger("synthesise")
    samples = read_problems(cfg.synth.problems, cfg.synth.languages, ledger)
    assert count_problems(cfg.synth.problems) == 9  # the blank line is not a problem
    summary = ledger.check(expected_inputs=9)
    assert (summary.kept, summary.dropped, summary.quarantined) == (3, 1, 5)
    errors = sorted(r["detail"].split(": ", 1)[1] for r in ledger.entries() if r["status"] == "quarantined")
    assert any(e.startswith("invalid JSON") for e in errors)
    assert "'tests' must be a non-empty string" in errors
    assert any("cobol" in e and "sandbox" in e for e in errors)
    assert "a line must be a JSON object" in errors
    assert any("repeats an earlier line" in e for e in errors)
    dropped = [r for r in ledger.entries() if r["status"] == "dropped"]
    assert [r["reason"] for r in dropped] == ["language_not_selected"]
    s = {x.symbol: x for x in samples}
    assert set(s) == {"twice", "twice-wrong", "10"}
    assert s["twice"].teacher == "file:mine" and s["twice"].repo == "mine"
    assert s["twice"].messages == [{"role": "user", "content": GOOD["problem"]},
                                   {"role": "assistant", "content": "```python\n" + GOOD["solution"] + "\n```"}]
    assert len({x.id for x in samples}) == 3


@needs_sandbox
def test_verify_keeps_the_right_solution_and_fails_the_wrong_one(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps(GOOD) + "\n" + json.dumps(WRONG) + "\n")
    cfg = cfg_for(f)
    samples = read_problems(cfg.synth.problems, cfg.synth.languages, Ledger("synthesise"))
    write_samples(str(tmp_path / "in"), samples)
    run_verify(cfg, str(tmp_path / "in"), str(tmp_path / "out"), NullRun())
    rows = {r["id"]: r for r in read_ledger(str(tmp_path / "out"))}
    by_symbol = {x.symbol: x.id for x in samples}
    assert rows[by_symbol["twice"]]["status"] == "kept"
    assert rows[by_symbol["twice-wrong"]]["status"] == "dropped"
    assert rows[by_symbol["twice-wrong"]]["reason"] == "test_failed"
    assert [x.symbol for x in read_samples(str(tmp_path / "out"))] == ["twice"]


@needs_sandbox
def test_the_tiny_recipes_problem_set_verifies_in_full(tmp_path):
    cfg = load_recipe(ROOT / "configs" / "tiny.yaml")
    assert cfg.synth.problems, "the tiny recipe names its problem set"
    ledger = Ledger("synthesise")
    samples = read_problems(cfg.synth.problems, cfg.synth.languages, ledger)
    assert ledger.check(expected_inputs=count_problems(cfg.synth.problems)).kept == len(samples) >= 40
    write_samples(str(tmp_path / "in"), samples)
    cfg = cfg.model_copy(update={"verify": cfg.verify.model_copy(update={"workers": 2})})
    res = run_verify(cfg, str(tmp_path / "in"), str(tmp_path / "out"), NullRun())
    assert res.ledger.kept == len(samples), [r for r in read_ledger(str(tmp_path / "out")) if r["status"] != "kept"]
