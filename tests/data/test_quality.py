"""Text-code grounding chain: real fastText stages trained on this machine's seed data."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from coderforge import ledger, records
from coderforge.config import RecipeConfig
from coderforge.data import quality as Q
from coderforge.tracking import StepRun


@pytest.fixture(scope="module")
def seed():
    pos, neg, counts = Q.seed_corpus(max_per_source=600, seed=0)
    return pos, neg, counts


def test_seed_corpus_comes_from_this_machine(seed):
    pos, neg, counts = seed
    assert counts["python_docstrings"] > 100 and counts["man_programming_tools"] > 100
    assert counts["licenses_copyright"] > 100
    assert all(200 <= len(t) <= 1200 for t in pos + neg)
    assert Q.seed_corpus.__wrapped__(600, 0)[0] == pos  # deterministic (uncached call)


def test_roff_is_rendered_to_text():
    src = '.TH GIT 1\n.SH NAME\ngit \\- the stupid content tracker\n.SH SYNOPSIS\n.B git\n\\fI--version\\fR\n'
    text = Q.roff_to_text(src)
    assert "git - the stupid content tracker" in text and "--version" in text and "\\f" not in text


def test_chain_stages_train_on_what_the_previous_kept_and_log_pr(seed, mlflow_uri):
    pos, neg, _ = seed
    train, held = Q.split_heldout(pos, neg, 0.25)
    with StepRun(mlflow_uri, None, "quality-test") as run:
        chain, metrics = Q.train_chain(train, held, seed=0, run=run)
        run_id = run.run_id
    assert [m.name for m in metrics] == ["coarse", "fine"]
    coarse, fine = metrics
    assert coarse.train_examples == len(train)
    # stage 2's training set is what stage 1 kept (out of fold): smaller, and mostly positives
    assert fine.train_examples == round(coarse.kept_fraction * coarse.train_examples)
    assert fine.train_positive / fine.train_examples > coarse.train_positive / coarse.train_examples
    for m in metrics:
        assert 0.8 < m.precision <= 1.0 and 0.8 < m.recall <= 1.0
    assert fine.chain_precision >= coarse.chain_precision  # the fine stage removes false positives
    assert fine.chain_recall <= coarse.chain_recall
    logged = MlflowClient(mlflow_uri).get_run(run_id).data.metrics
    assert logged["quality.fine.precision"] == pytest.approx(fine.precision)
    assert logged["quality.coarse.chain_recall"] == pytest.approx(coarse.chain_recall)
    # a code-related paragraph passes, a license paragraph does not
    code_text = ("Use git rebase --interactive to squash commits before pushing; the command opens "
                 "your editor with the list of commits, and each line starts with pick. Python's "
                 "subprocess.run returns a CompletedProcess whose returncode attribute holds the exit status "
                 "of the child process; pass check=True to raise CalledProcessError on failure.")
    legal = ("THE SOFTWARE IS PROVIDED AS IS, WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING "
             "BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND "
             "NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM.")
    assert chain.first_rejecting_stage([code_text, legal]) == [None, 0] or \
        chain.first_rejecting_stage([code_text, legal])[0] is None and \
        chain.first_rejecting_stage([code_text, legal])[1] is not None


def test_run_quality_filters_text_documents_only(seed, tmp_path, mlflow_uri):
    pos, neg, _ = seed
    docs = [records.Document(f"p{i}", "web", f"p{i}.md", "markdown", t) for i, t in enumerate(pos[:30])]
    docs += [records.Document(f"n{i}", "web", f"n{i}.txt", "text", t) for i, t in enumerate(neg[:30])]
    docs += [records.Document("code", "repo", "a.py", "python", "LICENSE = 'no warranty of any kind'\n")]
    records.write_documents(str(tmp_path / "in"), docs)
    cfg = RecipeConfig.model_validate({"data": {"sources": [{"uri": "/x"}]},
                                       "quality": {"enabled": True, "seed_max_per_source": 600}})
    with StepRun(mlflow_uri, None, "quality") as run:
        res = Q.run_quality(cfg, str(tmp_path / "in"), str(tmp_path / "out"), run)
    rows = {r["id"]: r for r in ledger.read_ledger(str(tmp_path / "out"))}
    assert len(rows) == len(docs)
    assert rows["code"]["status"] == "kept" and rows["code"]["detail"] == "not_text"
    kept_pos = sum(rows[f"p{i}"]["status"] == "kept" for i in range(30))
    kept_neg = sum(rows[f"n{i}"]["status"] == "kept" for i in range(30))
    assert kept_pos >= 24 and kept_neg <= 6
    assert all(r["reason"].startswith("quality_rejected:") for r in rows.values() if r["status"] == "dropped")
    out_ids = {d.id for d in records.read_documents(str(tmp_path / "out"))}
    assert out_ids == {i for i, r in rows.items() if r["status"] == "kept"}
    assert "quality.fine.precision" in res.metrics
    # the saved chain loads and gives the same verdicts
    again = Q.ClassifierChain.load(tmp_path / "out" / "models")
    assert again.first_rejecting_stage([d.content for d in docs[:60]]) == \
        [None if rows[d.id]["status"] == "kept" else
         [s.name for s in again.stages].index(rows[d.id]["reason"].split(":")[1]) for d in docs[:60]]
