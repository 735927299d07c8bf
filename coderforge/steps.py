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


# Every step by name: "module:function", the names of its input-directory arguments, and fixed
# keyword arguments. `coderforge step NAME` (what a RayJob runs on a cluster) uses this table.
STEP_FUNCTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ingest": ("coderforge.data.ingest:run_ingest", ()),
    "filter": ("coderforge.data.filters:run_filter", ("in_dir",)),
    "dedup": ("coderforge.data.dedup:run_dedup", ("in_dir",)),
    "decontam": ("coderforge.data.decontam:run_decontam", ("in_dir",)),
    "quality": ("coderforge.data.quality:run_quality", ("docs_dir",)),
    "tokenizer": ("coderforge.tokens.tokenizer:run_tokenizer", ("docs_dir",)),
    "mixture": ("coderforge.data.mixture:run_mixture", ("docs_dir", "tokenizer_dir")),
    "pack": ("coderforge.tokens.packing:run_pack", ("docs_dir", "tokenizer_dir")),
    "pack_repo": ("coderforge.tokens.packing:run_pack", ("docs_dir", "tokenizer_dir")),
    "pretrain": ("coderforge.train.pretrain:run_pretrain", ("data_dir", "tokenizer_dir")),
    "pretrain_repo": ("coderforge.train.pretrain:run_pretrain", ("data_dir", "tokenizer_dir", "init_from")),
    "evaluate": ("coderforge.evals.step:run_evaluate", ("model_dir", "data_dir")),
}


STEP_FIXED_KWARGS: dict[str, dict[str, Any]] = {
    "pack_repo": {"stage": "repo"},
    "pretrain_repo": {"stage": "repo"},
}


def step_function(name: str):
    """The step's function, with its fixed keyword arguments (e.g. ``stage="repo"``) bound."""
    import functools
    import importlib

    if name not in STEP_FUNCTIONS:
        raise KeyError(f"unknown step {name!r}; steps: {', '.join(STEP_FUNCTIONS)}")
    module, func = STEP_FUNCTIONS[name][0].split(":")
    fn = getattr(importlib.import_module(module), func)
    fixed = STEP_FIXED_KWARGS.get(name)
    return functools.partial(fn, **fixed) if fixed else fn
