"""The run summary: step rows, training, the post-training funnel and its chart in the parent run."""

from __future__ import annotations

import json

from coderforge import tracking
from coderforge.steps.summary import build_summary, finish_pipeline_run, render_table


def _reports() -> dict[str, dict]:
    ledger = {"in": 10, "kept": 7, "dropped": 3, "quarantined": 0, "reasons": {"no_code": 3},
              "bytes_in": 100, "bytes_kept": 70}
    return {
        "seeds": {"ledger": dict(ledger, kept=10, dropped=0, reasons={}), "metrics": {"seeds": 12.0},
                  "info": {"seconds": 1.5}},
        "verify": {"ledger": ledger, "info": {"seconds": 2.0},
                   "metrics": {"funnel.generated": 12.0, "funnel.verified": 5.0, "funnel.deduplicated": 4.0,
                               "funnel.decontaminated": 3.0, "language.python.samples": 12.0,
                               "language.python.pass_rate": 0.4167}},
        "pretrain": {"metrics": {"final_loss": 2.5, "tokens": 1000.0, "steps": 10.0}, "info": {"model_path": "/m"}},
    }


def test_posttrain_funnel_in_summary_and_table():
    summary = build_summary(_reports(), "sqlite:///x.db", "run1")
    assert summary["posttrain"]["funnel"] == {"seeds": 12.0, "generated": 12.0, "verified": 5.0,
                                              "deduplicated": 4.0, "decontaminated": 3.0}
    assert summary["train"]["final_loss"] == 2.5 and summary["model_path"] == "/m"
    assert summary["posttrain"]["by_language"] == {"python": {"samples": 12.0, "pass_rate": 0.4167}}
    text = render_table(summary)
    assert "python: pass_rate=0.4167  samples=12" in text
    assert "seeds 12 → generated 12 → verified 5 → deduplicated 4 → decontaminated 3" in text
    assert "1000" in text and "e+03" not in text  # whole floats print as integers
    assert build_summary({"pretrain": _reports()["pretrain"]}, "u", "r")["posttrain"] == {}


def test_finish_run_logs_the_posttrain_funnel_and_chart(tmp_path, mlflow_uri):
    recipe = f"data:\n  sources: [{{uri: /tmp}}]\ntracking:\n  uri: {json.dumps(mlflow_uri)}\n"
    parent = tracking.start_parent_run(mlflow_uri, "coderforge", "p", {})
    reports = {k: json.dumps(v) for k, v in _reports().items()}
    summary = finish_pipeline_run(recipe, parent, reports, str(tmp_path / "summary.json"), str(tmp_path / "r.md"))
    client = tracking._client(mlflow_uri)
    run = client.get_run(parent)
    assert run.data.metrics["posttrain.decontaminated"] == 3.0 and run.info.status == "FINISHED"
    arts = {a.path for a in client.list_artifacts(parent)}
    assert "posttrain_funnel.png" in arts and "summary.json" in arts
    assert json.loads((tmp_path / "summary.json").read_text())["posttrain"]["funnel_png"] == \
        summary["posttrain"]["funnel_png"]


def test_training_stages_and_per_model_eval_in_the_table():
    reports = _reports()
    reports["sft"] = {"metrics": {"final_loss": 3.99, "tokens": 500.0, "steps": 4.0, "heldout_loss_before": 6.48,
                                  "heldout_loss_after": 4.76, "phase.overhead_s": 31.5, "data_seconds": 8.6}}
    reports["dpo"] = {"metrics": {"final_loss": 0.02, "steps": 3.0, "heldout.reward_accuracy": 0.8667,
                                  "heldout.margin": 1.861, "train.margin": 5.3}}
    reports["evaluate"] = {"metrics": {"humaneval_pass_at_1": 0.0, "heldout_loss": 6.1, "humaneval_n": 5.0,
                                       "base.humaneval_pass_at_1": 0.0, "base.heldout_loss": 6.1,
                                       "base.needle_yarn_accuracy": 0.5,
                                       "sft.humaneval_pass_at_1": 0.2, "sft.humaneval_n": 5.0,
                                       "dpo.humaneval_pass_at_1": 0.4, "dpo.heldout_loss": 7.4}}
    summary = build_summary(reports, "u", "r")
    assert summary["train"]["stages"]["sft"] == {"final_loss": 3.99, "tokens": 500.0, "steps": 4.0,
                                                 "phase.overhead_s": 31.5, "heldout_loss_before": 6.48,
                                                 "heldout_loss_after": 4.76}
    text = render_table(summary)
    assert "  sft: final_loss=3.99  tokens=500  steps=4  phase.overhead_s=31.5  heldout_loss_before=6.48  " \
           "heldout_loss_after=4.76" in text
    assert "  dpo: final_loss=0.02  steps=3  heldout.reward_accuracy=0.8667  heldout.margin=1.861" in text
    assert "\n  base: heldout_loss=6.1  humaneval_pass_at_1=0  needle_yarn_accuracy=0.5\n" \
           "  sft: humaneval_pass_at_1=0.2\n  dpo: heldout_loss=7.4  humaneval_pass_at_1=0.4" in text
    assert "humaneval_n" not in text  # the headline numbers only; everything else is in MLflow
