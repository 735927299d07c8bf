"""Two evaluation runs of tiny models, tracked in a real MLflow store, compared side by side."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from coderforge import tracking
from coderforge.evals.cli import app, compare
from coderforge.steps.execute import execute_step
from tests.evals.conftest import build_tiny_model


def _recipe(uri: str) -> str:
    return (f"data:\n  sources: [{{uri: /tmp}}]\ntracking:\n  uri: {json.dumps(uri)}\n"
            "eval:\n  humaneval_problems: 2\n  max_new_tokens: 16\n  suite: [heldout, humaneval, fim]\n"
            "  backend: transformers\n"
            "  fim_problems: 3\n")


def test_two_runs_compared_in_a_table_and_chart(tiny_model_dir, tiny_data_dir, tmp_path, mlflow_uri):
    other_model = build_tiny_model(tmp_path / "other", seed=7)
    parents = []
    for name, model in (("model-a", tiny_model_dir), ("model-b", other_model)):
        parent = tracking.start_parent_run(mlflow_uri, "coderforge", name, {"model": str(model)},
                                           tags={"coderforge.kind": "pipeline"})
        execute_step("evaluate", _recipe(mlflow_uri), parent, str(tmp_path / name / "eval"),
                     model_dir=str(model), data_dir=str(tiny_data_dir))
        tracking.finish_run(mlflow_uri, parent)
        parents.append(parent)
    # the evaluate child runs hold the metrics and the per-problem table
    client = tracking._client(mlflow_uri)
    child = [r for r in tracking.child_runs(mlflow_uri, parents[0]) if r.data.tags["coderforge.step"] == "evaluate"][0]
    assert {"heldout_loss", "humaneval_pass_at_1", "fim_exact_match"} <= set(child.data.metrics)
    arts = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"summary.md", "humaneval_results.jsonl"} <= arts
    chart = tmp_path / "cmp.png"
    res = CliRunner().invoke(app, ["compare", *parents, "--tracking-uri", mlflow_uri, "--chart", str(chart)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert "model-a" in lines[0] and "model-b" in lines[0]
    loss_line = next(ln for ln in lines if ln.startswith("heldout_loss"))
    losses = [float(x) for x in loss_line.split()[1:3]]
    assert losses[0] != losses[1]  # different weights, different held-out loss
    assert any(ln.startswith("humaneval_pass_at_1") for ln in lines)
    assert chart.exists() and chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a step run id works as well as a pipeline run id
    res2 = CliRunner().invoke(app, ["compare", child.info.run_id, "--tracking-uri", mlflow_uri])
    assert res2.exit_code == 0 and "heldout_loss" in res2.output


def test_compare_without_tracking_uri_or_with_bad_id(monkeypatch, mlflow_uri):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    res = CliRunner().invoke(app, ["compare", "abc"])
    assert res.exit_code != 0 and "tracking" in res.output.lower()
    tracking.ensure_experiment(mlflow_uri, "coderforge")
    res = CliRunner().invoke(app, ["compare", "0" * 32, "--tracking-uri", mlflow_uri])
    assert res.exit_code == 2
    assert callable(compare)


def test_compare_lists_the_needle_with_yarn_beside_the_plain_needle(tmp_path, mlflow_uri):
    """The evaluate step logs the needle past the trained length (with YaRN, eval.long_context) as
    ``needle_yarn_accuracy``: compare shows it among the headline metrics, right after the plain needle,
    and charts it; a run without YaRN has no value there."""
    from coderforge.evals.compare import HEADLINE

    model = build_tiny_model(tmp_path / "short")
    conf = json.loads((model / "config.json").read_text())
    conf.update(rope_parameters={"rope_type": "default", "rope_theta": 10_000.0}, max_position_embeddings=256)
    (model / "config.json").write_text(json.dumps(conf))
    recipe = (f"data:\n  sources: [{{uri: /tmp}}]\ntracking:\n  uri: {json.dumps(mlflow_uri)}\n"
              "eval:\n  backend: transformers\n  suite: [needle]\n  max_new_tokens: 8\n"
              "  needle_lengths: [120, 900]\n  needle_depths: [0.5]\n")
    parents = []
    for name, extra in (("plain", ""), ("yarn", "  long_context: {enabled: true, yarn_factor: 4.0}\n")):
        parent = tracking.start_parent_run(mlflow_uri, "coderforge", name, {}, tags={"coderforge.kind": "pipeline"})
        execute_step("evaluate", recipe + extra, parent, str(tmp_path / name), model_dir=str(model))
        tracking.finish_run(mlflow_uri, parent)
        parents.append(parent)
    chart = tmp_path / "needle.png"
    res = CliRunner().invoke(app, ["compare", *parents, "--tracking-uri", mlflow_uri, "--chart", str(chart)])
    assert res.exit_code == 0, res.output
    rows = [ln.split() for ln in res.output.splitlines()[2:] if ln and not ln.startswith("chart:")]
    names = [r[0] for r in rows]
    assert names[:2] == ["needle_accuracy", "needle_yarn_accuracy"]
    assert names.index("needle_yarn_accuracy") < names.index("needle_yarn_n")
    yarn_row = rows[1]
    assert yarn_row[1] == "-" and 0.0 <= float(yarn_row[2]) <= 1.0  # only the YaRN run measured it
    drawn = res.output.splitlines()[-1]
    assert drawn.startswith(f"chart: {chart}") and "needle_yarn_accuracy" in drawn
    assert HEADLINE.index("needle_yarn_accuracy") == HEADLINE.index("needle_accuracy") + 1
