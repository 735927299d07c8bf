"""MLflow tracking: one parent run per pipeline run, one child run per step.

The tracking URI is ``MLFLOW_TRACKING_URI`` if set, else the recipe's ``tracking.uri``, else a
SQLite store under the work directory (``sqlite:///WORKDIR/mlflow.db``, artifacts in
``WORKDIR/mlartifacts``). Steps run in separate processes (KFP tasks), so the parent run id travels
between them as a pipeline parameter and each step opens its child run with ``StepRun``.
Only recipe values are logged as parameters: credentials live in the environment and are never
read here.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PARENT_TAG = "mlflow.parentRunId"
_MAX_PARAM = 6000


def default_tracking_uri(workdir: str | os.PathLike) -> str:
    return f"sqlite:///{Path(workdir).resolve() / 'mlflow.db'}"


def resolve_tracking_uri(configured: str | None, workdir: str | os.PathLike) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or configured or default_tracking_uri(workdir)


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def ensure_experiment(uri: str, name: str, artifact_root: str | None = None) -> str:
    client = _client(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    kwargs = {}
    if artifact_root is None and uri.startswith("sqlite:///"):
        artifact_root = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
    if artifact_root:
        kwargs["artifact_location"] = artifact_root
    try:
        return client.create_experiment(name, **kwargs)
    except Exception:  # created concurrently by another task
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _params(params: dict[str, Any]) -> dict[str, str]:
    return {k[:250]: str(v)[:_MAX_PARAM] for k, v in params.items()}


def start_parent_run(uri: str, experiment: str, run_name: str, params: dict[str, Any],
                     tags: dict[str, str] | None = None) -> str:
    client = _client(uri)
    exp_id = ensure_experiment(uri, experiment)
    run = client.create_run(exp_id, run_name=run_name, tags={"coderforge.kind": "pipeline", **(tags or {})})
    log_params(client, run.info.run_id, params)
    return run.info.run_id


def log_params(client, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in _params(params).items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i:i + 100])


def finish_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    _client(uri).set_terminated(run_id, status=status)


class RunLogger:
    """Logs to an existing MLflow run."""

    def __init__(self, uri: str, run_id: str):
        self.uri, self.run_id = uri, run_id
        self.client = _client(uri)

    def log_params(self, params: dict[str, Any]) -> None:
        log_params(self.client, self.run_id, params)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k[:250], float(v), ts, step or 0) for k, v in metrics.items() if _is_number(v)]
        for i in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[i:i + 500])

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        elif path.exists():
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, data: Any, name: str) -> None:
        self.client.log_text(self.run_id, json.dumps(data, indent=2, default=str), name)

    def set_tag(self, key: str, value: str) -> None:
        self.client.set_tag(self.run_id, key, value)


class StepRun(RunLogger):
    """A child run for one pipeline step; use as a context manager."""

    def __init__(self, uri: str, parent_run_id: str | None, step: str, params: dict[str, Any] | None = None,
                 experiment: str = "coderforge"):
        self.uri = uri
        self.client = _client(uri)
        self.step = step
        if parent_run_id:
            exp_id = self.client.get_run(parent_run_id).info.experiment_id
        else:
            exp_id = ensure_experiment(uri, experiment)
        tags = {"coderforge.step": step, "coderforge.kind": "step"}
        if parent_run_id:
            tags[PARENT_TAG] = parent_run_id
        self.run_id = self.client.create_run(exp_id, run_name=step, tags=tags).info.run_id
        self.parent_run_id = parent_run_id
        self._t0 = time.time()
        if params:
            log_params(self.client, self.run_id, params)

    def __enter__(self) -> StepRun:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.log_metrics({"step_seconds": time.time() - self._t0})
        if exc is not None:
            self.set_tag("coderforge.error", f"{exc_type.__name__}: {exc}"[:5000])
        self.client.set_terminated(self.run_id, status="FAILED" if exc else "FINISHED")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


@contextmanager
def maybe_step_run(uri: str | None, parent_run_id: str | None, step: str, params: dict[str, Any] | None = None):
    """A StepRun when a tracking URI is given, else a no-op logger (library use without MLflow)."""
    if not uri:
        yield NullRun()
        return
    with StepRun(uri, parent_run_id, step, params) as run:
        yield run


class NullRun:
    run_id = None

    def log_params(self, params):
        pass

    def log_metrics(self, metrics, step=None):
        pass

    def log_artifact(self, path, artifact_path=None):
        pass

    def log_dict(self, data, name):
        pass

    def set_tag(self, key, value):
        pass


def child_runs(uri: str, parent_run_id: str) -> list:
    client = _client(uri)
    parent = client.get_run(parent_run_id)
    return client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'", max_results=1000
    )
