"""The evaluate step end to end on a tiny random Qwen2 model built here."""

from __future__ import annotations

import json
import math
import shutil

from coderforge.config import load_recipe_text
from coderforge.evals.step import run_evaluate
from coderforge.sandbox import probe
from coderforge.tracking import NullRun, StepRun


def _cfg(extra: str = ""):
    return load_recipe_text("data:\n  sources: [{uri: /tmp}]\neval:\n  humaneval_problems: 3\n  max_new_tokens: 24\n"
                            "  backend: transformers\n" + extra)


def test_run_evaluate_writes_metrics_results_and_summary(tiny_model_dir, tiny_data_dir, tmp_path, mlflow_uri):
    run = StepRun(mlflow_uri, None, "evaluate")
    res = run_evaluate(_cfg(), str(tiny_model_dir), str(tmp_path / "out"), run, data_dir=str(tiny_data_dir))
    m = res.metrics
    assert m["humaneval_n"] == 3
    assert 0.0 <= m["humaneval_pass_at_1"] <= 1.0
    # a random model: per-token loss near ln(vocab), and ppl = exp(loss)
    assert 3.0 < m["heldout_loss"] < 10.0 and math.isclose(m["heldout_ppl"], math.exp(m["heldout_loss"]))
    rows = [json.loads(x) for x in (tmp_path / "out" / "humaneval_results.jsonl").read_text().splitlines()]
    assert [r["task_id"] for r in rows] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    if probe()[0]:
        assert all(r["isolated"] for r in rows)
        assert all(r["verdict"] in {"passed", "failed", "timeout", "oom", "crashed"} for r in rows)
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "humaneval_pass_at_1" in summary and "HumanEval/2" in summary
    assert str(tmp_path / "out" / "summary.md") in res.artifacts
    assert str(tmp_path / "out" / "humaneval_results.jsonl") in res.artifacts
    # per-problem table logged to MLflow as a table artifact
    arts = [a.path for a in run.client.list_artifacts(run.run_id, "tables")]
    assert "tables/humaneval_results.json" in arts


def test_missing_heldout_is_skipped_and_said(tiny_model_dir, tmp_path):
    empty = tmp_path / "pack-without-heldout"
    empty.mkdir()
    res = run_evaluate(_cfg("  suite: [heldout]\n"), str(tiny_model_dir), str(tmp_path / "o"), NullRun(),
                       data_dir=str(empty))
    assert "heldout_loss" not in res.metrics
    assert "heldout" in res.info["skipped"]
    assert "Skipped" in (tmp_path / "o" / "summary.md").read_text()


def test_evaluate_reads_model_and_writes_output_on_s3(tiny_model_dir, tiny_data_dir, s3_env, tmp_path):
    from coderforge import storage

    storage.upload_dir(tiny_model_dir, f"{s3_env}/model")
    storage.upload_dir(tiny_data_dir / "heldout", f"{s3_env}/pack/heldout")
    res = run_evaluate(_cfg("  humaneval_problems: 1\n"), f"{s3_env}/model", f"{s3_env}/eval", NullRun(),
                       data_dir=f"{s3_env}/pack")
    assert "heldout_loss" in res.metrics and res.metrics["humaneval_n"] == 1
    assert storage.exists(f"{s3_env}/eval/summary.md")
    assert storage.exists(f"{s3_env}/eval/humaneval_results.jsonl")
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_evaluate_fails_loudly_when_the_sandbox_cannot_isolate(tiny_model_dir, tiny_data_dir, tmp_path, monkeypatch):
    """No namespaces on this node (simulated): the step stops with the reason instead of reporting pass@1 = 0
    over programs that never ran; with the explicit opt-in it runs them, marked unisolated."""
    import pytest

    from coderforge.sandbox import isolation

    monkeypatch.setenv(isolation.SIMULATE_ENV, "1")
    isolation.reset_probe()
    try:
        with pytest.raises(RuntimeError, match="sandbox refused 1 of 1 programs.*namespace setup failed"):
            run_evaluate(_cfg("  humaneval_problems: 1\n  suite: [humaneval]\n"), str(tiny_model_dir),
                         str(tmp_path / "o"), NullRun(), data_dir=str(tiny_data_dir))
        res = run_evaluate(_cfg("  humaneval_problems: 1\n  suite: [humaneval]\nsandbox:\n  allow_unisolated: true\n"),
                           str(tiny_model_dir), str(tmp_path / "o2"), NullRun(), data_dir=str(tiny_data_dir))
        assert "humaneval_pass_at_1" in res.metrics and "humaneval_verdict_refused" not in res.metrics
    finally:
        monkeypatch.delenv(isolation.SIMULATE_ENV)
        isolation.reset_probe()
