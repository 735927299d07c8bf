"""Text-code grounding chain: real fastText stages trained on this machine's seed data, 4 by default,
the seed set widening stage by stage, every stage measured on held-out seeds and logged to MLflow."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from pydantic import ValidationError

from coderforge import ledger, records
from coderforge.config import RecipeConfig
from coderforge.data import grounding_seeds as G
from coderforge.data import quality as Q
from coderforge.tracking import NullRun, StepRun

PER_SOURCE = 300


@pytest.fixture(scope="module")
def seeds():
    return G.seed_corpus(max_per_source=PER_SOURCE, seed=0)


@pytest.fixture(scope="module")
def trained(seeds, tmp_path_factory):
    corpus, _ = seeds
    train, held = G.split_heldout(corpus, 0.25)
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    with StepRun(uri, None, "quality-test") as run:
        chain, metrics = Q.train_chain(train, held, seed=0, run=run)
        run_id = run.run_id
    return chain, metrics, MlflowClient(uri).get_run(run_id).data.metrics, held


def test_seed_groups_come_from_this_machine(seeds):
    corpus, counts = seeds
    # stdlib docstrings, JDK javadoc, npm docs and JSDoc, man pages; /usr/share/doc licences and changelogs
    for group in ("python_docstrings", "javadoc", "npm_markdown", "jsdoc_npm", "man_programming", "legal",
                  "admin_man", "debian_changelogs", "upstream_changelogs"):
        assert counts[group] >= 100, (group, counts)
    assert all(200 <= len(s.text) <= 1200 for s in corpus)
    assert len({s.text for s in corpus}) == len(corpus)  # deduplicated across files and groups
    assert any(s.origin.endswith(".java") and "src.zip!" in s.origin for s in corpus)
    assert G.seed_corpus.__wrapped__(20, 3) == G.seed_corpus.__wrapped__(20, 3)  # deterministic (uncached)
    train, held = G.split_heldout(corpus, 0.25)
    assert not {s.origin for s in train} & {s.origin for s in held}  # held-out seeds are whole files
    assert {s.group for s in held} == set(counts)


def test_comments_and_man_pages_become_prose():
    java = ("/**\n * Returns the {@code String} form of this <b>list</b>, one element a line.\n"
            + " * More words here to pass the length floor of two hundred characters for a window.\n" * 3
            + " */\npublic String toString() { /* not a doc comment, long enough? no */ return x; }\n")
    (text,) = G.comment_windows(java)
    assert text.startswith("Returns the String form of this list") and "*" not in text and "<b>" not in text
    roff = ('.de URL\n\\\\$2 <\\\\$1>\n..\n.TH GIT 1\n.SH NAME\ngit \\- the stupid content tracker\n'
            '.ds Aq \\(aq\n.SH SYNOPSIS\n.B git\n\\fI--version\\fR\n')
    text = G.roff_to_text(roff)
    assert "git - the stupid content tracker" in text and "--version" in text
    assert "\\f" not in text and "URL" not in text and "Aq" not in text and "GIT 1" not in text


def test_groups_join_the_seed_set_stage_by_stage():
    assert [G.join_stage(d, 4) for d in (1, 2, 3, 4)] == [0, 1, 2, 3]
    assert [G.join_stage(d, 2) for d in (1, 2, 3, 4)] == [0, 0, 1, 1]
    assert [G.join_stage(d, 1) for d in (1, 2, 3, 4)] == [0, 0, 0, 0]
    assert [G.join_stage(d, 8) for d in (1, 2, 3, 4)] == [0, 2, 4, 6]
    assert [s.name for s in Q.default_stages()] == ["stage1", "stage2", "stage3", "stage4"]
    th = [s.threshold for s in Q.default_stages(4)]
    assert th == sorted(th) and th[0] == 0.3 and th[-1] == 0.6


def test_the_recipe_has_four_stages_by_default():
    q = RecipeConfig.model_validate({"data": {"sources": [{"uri": "/x"}]}}).quality
    assert q.num_stages == 4
    with pytest.raises(ValidationError, match="lists 1 stages but quality.num_stages is 4"):
        RecipeConfig.model_validate({"data": {"sources": [{"uri": "/x"}]},
                                     "quality": {"stages": [{"name": "only"}]}})
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        RecipeConfig.model_validate({"data": {"sources": [{"uri": "/x"}]}, "quality": {"num_stages": 0}})


def test_four_stages_widen_the_seed_set_and_raise_precision(trained):
    chain, metrics, logged, held = trained
    assert [m.name for m in metrics] == ["stage1", "stage2", "stage3", "stage4"] == [s.name for s in chain.stages]
    # the seed set widens at every stage; each stage trains on the part of it that reaches the stage
    sizes = [m.seed_examples for m in metrics]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4 and all(m.new_seeds > 0 for m in metrics)
    assert all(m.train_examples <= m.seed_examples for m in metrics)
    assert metrics[0].train_examples == metrics[0].seed_examples
    # held-out seeds: precision rises from the coarse stage to the fine one, recall stays high at every stage
    assert metrics[-1].chain_precision > metrics[0].chain_precision + 0.15
    assert all(m.chain_recall >= 0.85 and m.recall >= 0.9 for m in metrics)
    assert metrics[0].chain_recall >= 0.97  # the coarse stage is there for recall
    # each stage removes the negatives that join at it: its group's held-out survival drops there
    for k, group in ((1, "admin_man"), (2, "debian_changelogs"), (3, "upstream_changelogs")):
        assert metrics[k].group_kept[group] < metrics[k - 1].group_kept[group] - 0.25, (group, k)
    assert metrics[0].group_kept["legal"] < 0.1
    # every stage's numbers are in MLflow
    for m in metrics:
        for key in ("precision", "recall", "chain_precision", "chain_recall", "seed_examples", "kept.javadoc"):
            assert logged[f"quality.{m.name}.{key}"] == pytest.approx(m.log_keys()[f"quality.{m.name}.{key}"])
    # the verdicts on text: code-related prose passes, a licence and a release note do not
    code_text = ("Use git rebase --interactive to squash commits before pushing; the command opens "
                 "your editor with the list of commits, and each line starts with pick. Python's "
                 "subprocess.run returns a CompletedProcess whose returncode attribute holds the exit status "
                 "of the child process; pass check=True to raise CalledProcessError on failure.")
    legal = ("THE SOFTWARE IS PROVIDED AS IS, WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING "
             "BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND "
             "NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM.")
    verdict = chain.first_rejecting_stage([code_text, legal])
    assert verdict[0] is None and verdict[1] is not None


def test_chain_recall_floor_fails_training_naming_the_stage(seeds):
    train, held = G.split_heldout(seeds[0], 0.25)
    with pytest.raises(ValueError, match=r"quality stage stage\d: the chain keeps .* below quality.min_chain_recall"):
        Q.train_chain(train, held, Q.default_stages(2), seed=0, min_chain_recall=0.9999)


def test_run_quality_with_two_stages_filters_text_documents_only(seeds, tmp_path):
    corpus, _ = seeds
    _, held = G.split_heldout(corpus, 0.2)
    pos = [s.text for s in held if s.positive][:30]
    neg = [s.text for s in held if s.group in ("legal", "debian_changelogs")][:30]
    docs = [records.Document(f"p{i}", "web", f"p{i}.md", "markdown", t) for i, t in enumerate(pos)]
    docs += [records.Document(f"n{i}", "web", f"n{i}.txt", "text", t) for i, t in enumerate(neg)]
    docs += [records.Document("code", "repo", "a.py", "python", "LICENSE = 'no warranty of any kind'\n")]
    records.write_documents(str(tmp_path / "in"), docs)
    cfg = RecipeConfig.model_validate({"data": {"sources": [{"uri": "/x"}]},
                                       "quality": {"enabled": True, "seed_max_per_source": PER_SOURCE,
                                                   "num_stages": 2}})
    res = Q.run_quality(cfg, str(tmp_path / "in"), str(tmp_path / "out"), NullRun())
    # two stages; the changelog groups (difficulty 3 and 4) joined at the second
    assert [s["name"] for s in res.info["stages"]] == ["stage1", "stage2"]
    assert res.info["stages"][1]["new_seeds"] > 0
    rows = {r["id"]: r for r in ledger.read_ledger(str(tmp_path / "out"))}
    assert len(rows) == len(docs)
    assert rows["code"]["status"] == "kept" and rows["code"]["detail"] == "not_text"
    kept_pos = sum(rows[f"p{i}"]["status"] == "kept" for i in range(len(pos)))
    kept_neg = sum(rows[f"n{i}"]["status"] == "kept" for i in range(len(neg)))
    assert kept_pos >= 0.8 * len(pos) and kept_neg <= 0.2 * len(neg)
    assert all(r["reason"].startswith("quality_rejected:stage") for r in rows.values() if r["status"] == "dropped")
    out_ids = {d.id for d in records.read_documents(str(tmp_path / "out"))}
    assert out_ids == {i for i, r in rows.items() if r["status"] == "kept"}
    assert res.metrics["quality.stage1.documents_reaching"] == len(pos) + len(neg)
    assert res.metrics["quality.stage2.documents_reaching"] < len(pos) + len(neg)
    assert "quality.stage2.chain_precision" in res.metrics
    # the saved chain loads and gives the same verdicts
    again = Q.ClassifierChain.load(tmp_path / "out" / "models")
    texts = docs[:-1]
    assert again.first_rejecting_stage([d.content for d in texts]) == \
        [None if rows[d.id]["status"] == "kept" else
         [s.name for s in again.stages].index(rows[d.id]["reason"].split(":")[1]) for d in texts]
