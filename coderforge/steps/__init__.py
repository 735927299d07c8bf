"""The contract every recipe step function follows.

A step is a plain function in the library (no KFP, no MLflow imports needed by the caller):

    def run_<step>(cfg: RecipeConfig, <input dirs...>, out_dir: str, run) -> StepResult

* inputs and ``out_dir`` are local paths or URIs (``coderforge.storage``); steps never modify inputs;
* document steps write Parquet shards (``coderforge.records``) and a ledger (``coderforge.ledger``)
  into ``out_dir`` and put the ledger summary in ``StepResult.ledger``;
* ``run`` is a ``coderforge.tracking.StepRun`` (or ``NullRun``): a step may log time series
  (``run.log_metrics(..., step=i)``) while it works; the caller logs ``StepResult.metrics``,
  the ledger counts and ``StepResult.artifacts`` at the end.

Every step is declared once, in ``coderforge.steps.table``: its function, inputs, the recipe
sections it reads and its resource class. The KFP components (``components/``), the DAGs
(``pipelines/``), ``coderforge step`` and MLflow parameter logging all read that table; tests call
the functions directly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from coderforge import storage
from coderforge.ledger import LedgerSummary


@dataclass
class StepResult:
    ledger: LedgerSummary | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), default=str)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ledger": self.ledger.as_dict() if self.ledger else None,
            "metrics": self.metrics,
            "info": self.info,
        }


def write_step_report(out_dir: str, step: str, result: StepResult) -> None:
    """``step.json`` beside a step's output: what the run summary and the funnel read back."""
    storage.write_text(storage.join(out_dir, "step.json"), json.dumps({"step": step, **result.as_dict()},
                                                                      indent=2, default=str))


def read_step_report(out_dir: str) -> dict[str, Any]:
    return json.loads(storage.read_text(storage.join(out_dir, "step.json")))


def ledger_of_report(report: dict[str, Any]) -> LedgerSummary | None:
    """The ledger summary a ``step.json`` holds (what a step run elsewhere, e.g. on a RayJob, wrote)."""
    ledger = report.get("ledger")
    if not ledger:
        return None
    return LedgerSummary(step=report.get("step", ""), inputs=ledger["in"], kept=ledger["kept"],
                         dropped=ledger["dropped"], quarantined=ledger["quarantined"], reasons=ledger["reasons"],
                         bytes_in=ledger["bytes_in"], bytes_kept=ledger["bytes_kept"], fixed=ledger.get("fixed", 0))
