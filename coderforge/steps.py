"""The contract every recipe step function follows.

A step is a plain function in the library (no KFP, no MLflow imports needed by the caller):

    def run_<step>(cfg: RecipeConfig, <input dirs...>, out_dir: str, run) -> StepResult

* inputs and ``out_dir`` are local paths or URIs (``coderforge.storage``); steps never modify inputs;
* document steps write Parquet shards (``coderforge.records``) and a ledger (``coderforge.ledger``)
  into ``out_dir`` and put the ledger summary in ``StepResult.ledger``;
* ``run`` is a ``coderforge.tracking.StepRun`` (or ``NullRun``): a step may log time series
  (``run.log_metrics(..., step=i)``) while it works; the caller logs ``StepResult.metrics``,
  the ledger counts and ``StepResult.artifacts`` at the end.

KFP components (``components/``) and ``coderforge run`` call these functions; tests call them
directly.
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


# Every step by name: "module:function" and the names of its input-directory arguments, in order.
# `coderforge step NAME` (what a RayJob runs on a cluster) and the components use this table.
STEP_FUNCTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ingest": ("coderforge.data.ingest:run_ingest", ()),
    "filter": ("coderforge.data.filters:run_filter", ("in_dir",)),
    "dedup": ("coderforge.data.dedup:run_dedup", ("in_dir",)),
    "decontam": ("coderforge.data.decontam:run_decontam", ("in_dir",)),
    "tokenizer": ("coderforge.tokens.tokenizer:run_tokenizer", ("docs_dir",)),
    "pack": ("coderforge.tokens.packing:run_pack", ("docs_dir", "tokenizer_dir")),
    "pretrain": ("coderforge.train.pretrain:run_pretrain", ("data_dir", "tokenizer_dir")),
    "evaluate": ("coderforge.evals.step:run_evaluate", ("model_dir", "data_dir")),
}


def step_function(name: str):
    import importlib

    if name not in STEP_FUNCTIONS:
        raise KeyError(f"unknown step {name!r}; steps: {', '.join(STEP_FUNCTIONS)}")
    module, func = STEP_FUNCTIONS[name][0].split(":")
    return getattr(importlib.import_module(module), func)
