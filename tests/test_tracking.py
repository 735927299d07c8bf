import pytest

from coderforge import tracking


def test_parent_and_child_runs(mlflow_uri, tmp_path):
    rid = tracking.start_parent_run(mlflow_uri, "exp", "run-1", {"train.steps": 3, "data.sources": "[...]"})
    with tracking.StepRun(mlflow_uri, rid, "filter", {"filter.max_lines": 100}) as run:
        run.log_metrics({"docs_in": 10, "docs_kept": 7, "not_a_number": "x"})
        run.log_metrics({"loss": 2.5}, step=5)
        f = tmp_path / "ledger.json"
        f.write_text("{}")
        run.log_artifact(f)
    children = tracking.child_runs(mlflow_uri, rid)
    assert [c.info.run_name for c in children] == ["filter"]
    child = children[0]
    assert child.data.metrics["docs_kept"] == 7 and "not_a_number" not in child.data.metrics
    assert child.data.params["filter.max_lines"] == "100"
    assert child.info.status == "FINISHED"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    assert [a.path for a in client.list_artifacts(child.info.run_id)] == ["ledger.json"]
    assert client.get_run(rid).data.params["train.steps"] == "3"


def test_failed_step_is_marked_failed(mlflow_uri):
    rid = tracking.start_parent_run(mlflow_uri, "exp", "run-2", {})
    with pytest.raises(RuntimeError):
        with tracking.StepRun(mlflow_uri, rid, "dedup"):
            raise RuntimeError("boom")
    (child,) = tracking.child_runs(mlflow_uri, rid)
    assert child.info.status == "FAILED" and "boom" in child.data.tags["coderforge.error"]


def test_tracking_uri_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert tracking.resolve_tracking_uri("http://mlflow:5000", tmp_path) == "http://mlflow:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://other:5000")
    assert tracking.resolve_tracking_uri("http://mlflow:5000", tmp_path) == "http://other:5000"
