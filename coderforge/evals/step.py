"""The ``evaluate`` recipe step: the base model, and the SFT and DPO models when given, on held-out
perplexity and the benchmarks of ``cfg.eval.suite``.

Modes: the base model is evaluated in completion mode (the benchmark prompt is continued), SFT and
DPO models in instruct mode (the problem as a chat turn through the model's chat template, the code
taken from the answer; ``coderforge.evals.instruct``). Generation runs on a vLLM server started for
each model and always stopped (``eval.backend: vllm``), or in-process with transformers
(``eval.backend: transformers``).

Metric names: every metric of a model is logged as ``<stage>.<metric>`` (``base.humaneval_pass_at_1``,
``sft.heldout_loss``, ``dpo.multipl_e_java_pass_at_1`` ...), plus ``<stage>.instruct_mode`` (1 =
instruct mode through the chat template, 0 = completion mode); the base model's metrics are also
logged unprefixed (``heldout_loss``, ``humaneval_pass_at_1``, as before). Per benchmark ``<b>``:
``<b>_pass_at_1`` (greedy), ``<b>_n``, ``<b>_verdict_<verdict>``, generation/execution seconds,
``<b>_completion_tokens``; with ``eval.temperature > 0`` also ``<b>_pass_at_<k>`` (k > 1),
``<b>_sampled_pass_at_1`` and ``<b>_samples`` from ``eval.samples`` sampled completions. MultiPL-E
benchmarks are ``multipl_e_<language>``, with ``multipl_e_pass_at_1`` the mean over their languages.

Writes into ``out_dir``: ``metrics.json``, per-problem results (``<bench>_results.jsonl`` for the base
model, ``<stage>.<bench>_results.jsonl`` for the others; ``..._sampled_results.jsonl`` for sampled
runs), ``languages.json`` (pass@k per stage, benchmark and language), the vLLM server logs
(``<stage>.vllm-server.log``) and ``summary.md`` (the KFP Markdown artifact), and lists them in
``StepResult.artifacts`` so the runtime logs them to the step's MLflow run.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

from coderforge import storage
from coderforge.config import RecipeConfig
from coderforge.evals.bench import log_problem_table
from coderforge.steps import StepResult

__all__ = ["run_evaluate", "log_problem_table", "STAGE_MODES"]

log = logging.getLogger("coderforge.evals")

STAGE_MODES = {"base": "completion", "sft": "instruct", "dpo": "instruct"}


def check_sampling(cfg: RecipeConfig) -> None:
    ev = cfg.eval
    if ev.temperature > 0:
        too_big = [k for k in ev.pass_k if k > ev.samples]
        if too_big:
            raise ValueError(f"eval.pass_k {too_big} needs at least {max(too_big)} samples per problem; "
                             f"eval.samples is {ev.samples}")
    elif ev.samples > 1:
        raise ValueError(f"eval.samples = {ev.samples} with eval.temperature = 0: greedy samples are identical; "
                         "set eval.temperature > 0 for the sampled pass@k run")


def _local_model(uri: str, dest: Path) -> Path:
    return Path(storage.download_dir(uri, dest)) if storage.is_s3(uri) else Path(storage.local_path(uri))


def _language_means(metrics: dict[str, float]) -> dict[str, float]:
    vals = [v for k, v in metrics.items() if k.startswith("multipl_e_") and k.endswith("_pass_at_1")
            and not k.endswith("_sampled_pass_at_1")]
    return {"multipl_e_pass_at_1": sum(vals) / len(vals)} if vals else {}


def run_evaluate(cfg: RecipeConfig, model_dir: str, out_dir: str, run, data_dir: str | None = None,
                 sft_model_dir: str | None = None, dpo_model_dir: str | None = None) -> StepResult:
    """Evaluate the base model saved (with its tokenizer) in ``model_dir``, and the SFT/DPO models when
    given, on ``data_dir/heldout`` (when given) and the benchmarks of ``cfg.eval.suite``."""
    check_sampling(cfg)
    local_out = Path(tempfile.mkdtemp(prefix="coderforge-eval-")) if storage.is_s3(out_dir) \
        else Path(storage.local_path(out_dir))
    local_out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="coderforge-eval-inputs-"))  # S3 downloads, removed at the end
    models = [(s, d) for s, d in (("base", model_dir), ("sft", sft_model_dir), ("dpo", dpo_model_dir)) if d]
    try:
        return _evaluate(cfg, models, data_dir, out_dir, run, local_out, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _evaluate(cfg: RecipeConfig, models: list[tuple[str, str]], data_dir: str | None, out_dir: str, run,
              local_out: Path, scratch: Path) -> StepResult:
    from coderforge.evals.model_eval import evaluate_model, prepare_inputs
    from coderforge.evals.report import summary_markdown

    ev = cfg.eval
    inputs = prepare_inputs(cfg, data_dir, scratch)
    metrics: dict[str, float] = {}
    artifacts: list[str] = []
    info: dict = {"suite": list(ev.suite), "backend": ev.backend, "skipped": dict(inputs.skipped), "stages": [],
                  "languages": []}
    for stage, uri in models:
        mode = STAGE_MODES[stage]
        log.info("evaluate: %s model %s in %s mode", stage, uri, mode)
        m, files, stage_info = evaluate_model(cfg, stage, mode, _local_model(uri, scratch / stage), inputs,
                                              local_out, run)
        m.update(_language_means(m))
        metrics.update({f"{stage}.{k}": v for k, v in m.items()})
        metrics[f"{stage}.instruct_mode"] = 1.0 if mode == "instruct" else 0.0
        if stage == "base":
            metrics.update(m)
        artifacts += files
        info["languages"] += stage_info.pop("languages")
        info["stages"].append({**stage_info, "model": uri})
        run.set_tag(f"coderforge.eval.{stage}.mode", mode)
    (local_out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    (local_out / "languages.json").write_text(json.dumps(info["languages"], indent=2))
    if info["languages"]:
        log_problem_table(run, info["languages"], "languages", artifact_file="tables/languages.json")
    (local_out / "summary.md").write_text(summary_markdown(metrics, info, local_out))
    artifacts = [str(local_out / "metrics.json"), str(local_out / "summary.md"), str(local_out / "languages.json"),
                 *artifacts]
    if storage.is_s3(out_dir):
        storage.upload_dir(local_out, out_dir)
    info["out_dir"] = out_dir
    return StepResult(metrics=metrics, artifacts=artifacts, info=info)
