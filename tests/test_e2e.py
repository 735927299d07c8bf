"""End to end through `coderforge run` (kfp.local subprocesses, local Ray, SQLite MLflow)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "coderforge.cli"]


def _run_cli(args, cwd, timeout=900):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run(CLI + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def _hostile_corpus(root: Path) -> Path:
    good = root / "corpus" / "goodrepo"
    good.mkdir(parents=True)
    (good / "main.py").write_text("import os\n\n\ndef main():\n    return os.getcwd()\n")
    (good / "util.py").write_text("def add(a, b):\n    return a + b\n")
    (good / "copy_of_util.py").write_text("def add(a, b):\n    return a + b\n")
    (good / "latin1.py").write_bytes(b"# caf\xe9 \xff\xfe\x80\x81\n" + bytes(range(0x80, 0xA0)) + b"\nx = 1\n")
    (good / "blob.py").write_bytes(b"\x00\x01\x02\x03PK\x05\x06" * 64)
    (good / "dangling.py").symlink_to(root / "does-not-exist.py")
    (good / "one_long_line.js").write_text("var x = '" + "a" * 5000 + "';\n")
    (root / "corpus" / "emptyrepo").mkdir()
    return root / "corpus"


def _write_recipe(path: Path, corpus: Path, extra: str = "") -> Path:
    path.write_text(f"""
run:
  name: e2e
data:
  sources:
    - uri: {corpus}
      kind: dir
      name: hostile
tracking:
  experiment: e2e
{extra}
""")
    return path


def test_data_pipeline_on_hostile_corpus_loses_nothing(tmp_path):
    corpus = _hostile_corpus(tmp_path)
    recipe = _write_recipe(tmp_path / "recipe.yaml", corpus)
    workdir = tmp_path / "work"
    proc = _run_cli(["run", str(recipe), "--pipeline", "data", "--workdir", str(workdir)], cwd=REPO)
    summary = json.loads((workdir / "summary.json").read_text())
    assert list(summary["steps"]) == ["ingest", "filter", "dedup", "decontam"]
    for name, row in summary["steps"].items():
        assert row["in"] == row["kept"] + row["dropped"] + row["quarantined"], (name, row)
    ingest = summary["steps"]["ingest"]
    assert ingest["in"] == 7  # every file seen, the empty repository contributes none
    assert ingest["reasons"].get("binary", 0) >= 1
    assert ingest["quarantined"] >= 1  # the dangling symlink cannot be read
    assert summary["steps"]["filter"]["in"] == ingest["kept"]
    assert summary["steps"]["dedup"]["in"] == summary["steps"]["filter"]["kept"]
    assert summary["steps"]["dedup"]["reasons"].get("exact_duplicate_of", 0) == 1
    assert "ingest" in proc.stdout and "decontam" in proc.stdout
    assert (workdir / "data_funnel.png").stat().st_size > 1000


def test_bad_recipe_fails_before_anything_runs(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("data:\n  sources:\n    - uri: /x\ntrain:\n  stepz: 1\n")
    proc = subprocess.run(CLI + ["run", str(recipe), "--workdir", str(tmp_path / "w")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "train.stepz" in proc.stderr and "unknown key" in proc.stderr and str(recipe) in proc.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.timeout(1800)  # the whole recipe, pretraining through DPO: ~7 min on 2 quiet cores, 13 loaded
def test_tiny_recipe_end_to_end(tmp_path):
    workdir = tmp_path / "tiny"
    _run_cli(["run", "configs/tiny.yaml", "--workdir", str(workdir)], cwd=REPO, timeout=1700)
    summary = json.loads((workdir / "summary.json").read_text())
    expected = ["ingest", "filter", "dedup", "decontam", "tokenizer", "pack", "pretrain", "pack_repo",
                "pretrain_repo", "seeds", "synthesise", "verify", "sft", "dpo_pairs", "dpo", "evaluate"]
    assert sorted(summary["steps"]) == sorted(expected)
    for name in ("ingest", "filter", "dedup", "decontam", "pack", "seeds", "synthesise", "verify", "sft",
                 "dpo_pairs", "dpo"):
        row = summary["steps"][name]
        assert row["in"] == row["kept"] + row["dropped"] + row["quarantined"] > 0, (name, row)
    assert summary["train"]["final_loss"] < 8.0 and summary["train"]["tokens"] > 0
    assert "heldout_loss" in summary["eval"] and "humaneval_pass_at_1" in summary["eval"]
    # post-training data with real vLLM and the sandbox: every generated sample accounted for
    funnel = summary["posttrain"]["funnel"]
    assert funnel["seeds"] > 0 and funnel["generated"] == summary["steps"]["verify"]["in"] > 0
    assert funnel["verified"] >= funnel["deduplicated"] >= funnel["decontaminated"]
    assert summary["steps"]["synthesise"]["in"] == funnel["seeds"] + 60  # + the recipe's 60 problems
    # post-training learns: SFT's held-out loss falls, DPO ranks held-out pairs right more often than chance
    stages = summary["train"]["stages"]
    assert stages["sft"]["heldout_loss_after"] < stages["sft"]["heldout_loss_before"]
    assert stages["dpo"]["heldout.reward_accuracy"] > 0.5 and stages["dpo"]["heldout.margin"] > 0
    assert {"base.humaneval_pass_at_1", "sft.humaneval_pass_at_1", "dpo.humaneval_pass_at_1"} <= set(summary["eval"])
    # the training steps attached to the run's one local Ray instead of starting their own
    assert all(stages[s]["phase.overhead_s"] > 0 for s in ("pretrain", "pretrain_repo", "sft", "dpo"))

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(summary["model_path"])
    tok = AutoTokenizer.from_pretrained(summary["model_path"])
    assert model.config.model_type == "qwen2"
    rope = model.config.rope_parameters  # the repo stage's model: RoPE base 1M, saved without YaRN (as Qwen)
    assert rope == {"rope_type": "default", "rope_theta": 1_000_000.0}
    assert tok.convert_tokens_to_ids("<|fim_middle|>") is not None

    from mlflow.tracking import MlflowClient

    uri = summary["mlflow"]["tracking_uri"]
    client = MlflowClient(uri)
    parent = client.get_run(summary["mlflow"]["run_id"])
    assert parent.info.status == "FINISHED"
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    by_name = {c.info.run_name: c for c in children}
    assert set(by_name) == set(expected)
    assert by_name["ingest"].data.metrics["docs_in"] == summary["steps"]["ingest"]["in"]
    stages = summary["train"]["stages"]
    assert by_name["pretrain"].data.metrics["final_loss"] == pytest.approx(stages["pretrain"]["final_loss"])
    assert by_name["dpo"].data.metrics["final_loss"] == pytest.approx(summary["train"]["final_loss"])
    loss_history = client.get_metric_history(by_name["pretrain"].info.run_id, "loss")
    assert len(loss_history) >= 2
    for step in ("pretrain", "pretrain_repo", "sft", "dpo"):
        assert by_name[step].data.metrics["phase.ray_start_s"] < 2.0, step  # attached, not started
        (version,) = client.search_model_versions(f"name='tiny-{step}'")  # every stage's model registered
        assert version.tags["coderforge.recipe_fingerprint"] == parent.data.tags["coderforge.recipe_fingerprint"]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_recipe_with_quality_and_mixture_steps(tmp_path):
    """The optional steps through the whole DAG on kfp.local: the grounding classifiers judge the prose
    documents (and only those), the mixture samples curated code + licences (text) + sympy (math) to
    70/20/10, and the packed rows the model trains on are the mixture's."""
    import sympy

    from coderforge import records

    def docs(paths, root, source, lang):
        return [records.Document(records.document_id(source, "", p.relative_to(root).as_posix()), source,
                                 p.relative_to(root).as_posix(), lang, p.read_text("utf-8", "replace"), source)
                for p in paths]

    lic = Path("/usr/share/common-licenses")
    records.write_documents(str(tmp_path / "text"), docs(sorted(p for p in lic.iterdir() if p.is_file()), lic,
                                                         "licenses", "text"))
    sym = Path(sympy.__file__).parent
    records.write_documents(str(tmp_path / "math"), docs(sorted((sym / "ntheory").glob("*.py")), sym, "sympy",
                                                         "python"))
    prose = tmp_path / "prose" / "notes"  # one repository of prose: code documentation and unrelated text
    prose.mkdir(parents=True)
    (prose / "usage.md").write_text("# Using the parser\n\nCall `parse(text)` to get an AST; the function "
                                    "raises `SyntaxError` on invalid input. Use `ast.dump(tree)` to inspect "
                                    "nodes, and `compile(tree, filename, 'exec')` to run it.\n")
    (prose / "legal.md").write_text((lic / "GPL-3").read_text()[:6000])  # prose, but not about code
    recipe = tmp_path / "recipe.yaml"
    tiny = (REPO / "configs" / "tiny.yaml").read_text().replace("${recipe_dir}", str(REPO / "configs"))
    recipe.write_text(tiny.replace(
        "      repos: [json, email, http, urllib, logging, concurrent, importlib, xml, sqlite3, wsgiref, zoneinfo, "
        "tomllib]",
        "      repos: [json, email, http, urllib, logging, concurrent, importlib, xml, sqlite3, wsgiref, zoneinfo, "
        f"tomllib]\n    - uri: {tmp_path / 'prose'}\n      kind: dir\n      name: prose") + f"""
quality:
  enabled: true
  seed_max_per_source: 300
mixture:
  enabled: true
  sources:
    - {{path: {tmp_path / 'text'}, category: text, name: licenses}}
    - {{path: {tmp_path / 'math'}, category: math, name: sympy-ntheory}}
""")
    workdir = tmp_path / "run"
    _run_cli(["run", str(recipe), "--workdir", str(workdir), "--set", "train.steps=10", "--set", "repo.enabled=false",
              "--set", "eval.humaneval_problems=1", "--set", "synth.enabled=false", "--set", "sft.enabled=false",
              "--set", "dpo.enabled=false"], cwd=REPO, timeout=1200)
    summary = json.loads((workdir / "summary.json").read_text())
    steps = summary["steps"]
    assert list(steps)[:6] == ["ingest", "filter", "dedup", "decontam", "quality", "tokenizer"]
    assert {"mixture", "pack", "pretrain", "evaluate"} <= set(steps) and "pretrain_repo" not in steps
    for name in ("ingest", "filter", "dedup", "decontam", "quality", "mixture", "pack"):
        row = steps[name]
        assert row["in"] == row["kept"] + row["dropped"] + row["quarantined"] > 0, (name, row)
    assert steps["quality"]["in"] == steps["decontam"]["kept"]
    assert steps["mixture"]["in"] > steps["quality"]["kept"]  # + the text and math sources
    assert steps["pack"]["in"] == steps["mixture"]["kept"]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(summary["mlflow"]["tracking_uri"])
    parent = client.get_run(summary["mlflow"]["run_id"])
    children = {c.info.run_name: c for c in client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")}
    mix, qual = children["mixture"].data.metrics, children["quality"].data.metrics
    assert mix["ratio.code"] == pytest.approx(0.7, abs=0.03) and mix["ratio.text"] == pytest.approx(0.2, abs=0.03)
    assert mix["ratio.math"] == pytest.approx(0.1, abs=0.03)
    assert qual["quality.stage4.chain_precision"] > 0.8 and qual["quality.stage4.chain_recall"] > 0.8
    ledger = {r["path"]: r for r in records_ledger(workdir, "quality")}
    assert ledger["usage.md"]["status"] == "kept"
    assert ledger["legal.md"]["status"] == "dropped" and ledger["legal.md"]["reason"].startswith(
        "quality_rejected")


def records_ledger(workdir: Path, task: str) -> list[dict]:
    """The ledger rows of one KFP task of the (single) pipeline run under ``workdir``."""
    from coderforge.ledger import read_ledger

    summary = json.loads((workdir / "summary.json").read_text())
    (out,) = Path(summary["outputs"]).glob(f"{task}/*/ledger.parquet")
    return read_ledger(str(out.parent))
