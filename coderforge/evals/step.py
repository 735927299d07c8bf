"""The ``evaluate`` recipe step: held-out perplexity and the benchmarks of ``cfg.eval.suite``.

Writes into ``out_dir``: ``metrics.json``, per-problem results (``<bench>_results.jsonl``, e.g.
``humaneval_results.jsonl``) and ``summary.md`` (the KFP Markdown artifact), and lists them in
``StepResult.artifacts`` so the runtime logs them to the step's MLflow run.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

from coderforge import storage
from coderforge.config import RecipeConfig
from coderforge.steps import StepResult

log = logging.getLogger("coderforge.evals")

JSONL_BENCHES = {"mbpp": "mbpp_path", "humaneval_plus": "humaneval_plus_path", "mbpp_plus": "mbpp_plus_path"}


def _has_shards(path: Path) -> bool:
    return (path / "meta.json").exists()


def _execution_bench(name: str, problems, backend, cfg: RecipeConfig, out: Path, run) -> tuple[dict, list[str]]:
    from coderforge.evals.execution import check_completions, summarize
    from coderforge.generate import HUMANEVAL_STOP, GenerationConfig

    ev = cfg.eval
    gen = GenerationConfig(max_new_tokens=ev.max_new_tokens, temperature=ev.temperature,
                           n=ev.samples if ev.temperature > 0 else 1, seed=cfg.run.seed, stop=HUMANEVAL_STOP)
    t0 = time.time()
    completions = backend.generate([p.prompt for p in problems], gen)
    t_gen = time.time() - t0
    results = check_completions(problems, completions, timeout_s=ev.timeout_s, memory_mb=ev.memory_mb,
                                workers=cfg.sandbox.workers, allow_unisolated=cfg.sandbox.allow_unisolated,
                                scratch_mb=cfg.sandbox.scratch_mb, max_output=cfg.sandbox.max_output_bytes)
    t_exec = time.time() - t0 - t_gen
    refused = [r for res in results for r in res if r["verdict"] == "refused"]
    if refused:  # a score over programs that never ran would read as a model result: stop here, say why
        raise RuntimeError(
            f"evaluate/{name}: the sandbox refused {len(refused)} of {sum(len(r) for r in results)} programs: "
            f"{refused[0]['detail']} — run evaluation where `coderforge sandbox check` reports isolated: true "
            "(docs/kubernetes.md, 'The sandbox on cluster nodes'), or set sandbox.allow_unisolated: true "
            "on a node dedicated to it")
    summary = summarize(results, ks=tuple(ev.pass_k))
    rows = [r for res in results for r in res]
    path = out / f"{name}_results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    verdicts: dict[str, int] = {}
    for r in rows:
        verdicts[r["verdict"]] = verdicts.get(r["verdict"], 0) + 1
    metrics = {f"{name}_{k}": v for k, v in summary.items() if k.startswith("pass_at_")}
    metrics[f"{name}_n"] = float(len(problems))
    metrics[f"{name}_generate_seconds"] = round(t_gen, 3)
    metrics[f"{name}_execute_seconds"] = round(t_exec, 3)
    for v, c in verdicts.items():
        metrics[f"{name}_verdict_{v}"] = float(c)
    log_problem_table(run, rows, name)
    return metrics, [str(path)]


def log_problem_table(run, rows: list[dict], name: str) -> None:
    """The per-problem table as an MLflow table artifact (``tables/<name>_results.json``)."""
    client, run_id = getattr(run, "client", None), getattr(run, "run_id", None)
    if client is None or not run_id or not rows:
        return
    cols = list(rows[0])
    client.log_table(run_id, data={c: [r.get(c) for r in rows] for c in cols},
                     artifact_file=f"tables/{name}_results.json")


def run_evaluate(cfg: RecipeConfig, model_dir: str, data_dir: str, out_dir: str, run) -> StepResult:
    """Evaluate the model saved (with its tokenizer) in ``model_dir`` on ``data_dir/heldout`` and the
    benchmarks of ``cfg.eval.suite``."""
    local_out = Path(tempfile.mkdtemp(prefix="coderforge-eval-")) if storage.is_s3(out_dir) \
        else storage.local_path(out_dir)
    local_out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="coderforge-eval-inputs-"))  # S3 downloads, removed at the end
    try:
        return _evaluate(cfg, model_dir, data_dir, out_dir, run, local_out, scratch)
    finally:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)


def _evaluate(cfg: RecipeConfig, model_dir: str, data_dir: str, out_dir: str, run, local_out: Path,
              scratch: Path) -> StepResult:
    from coderforge.generate import TransformersBackend

    ev = cfg.eval
    model_local = Path(storage.download_dir(model_dir, scratch / "model")) \
        if storage.is_s3(model_dir) else storage.local_path(model_dir)
    backend = TransformersBackend(str(model_local), batch_size=ev.batch_size)
    metrics: dict[str, float] = {}
    info: dict = {"suite": list(ev.suite), "skipped": {}}
    artifacts: list[str] = []

    if "heldout" in ev.suite:
        from coderforge.evals.perplexity import heldout_loss

        held = storage.join(data_dir, "heldout")
        held_local = None
        if storage.is_s3(held):
            if storage.exists(storage.join(held, "meta.json")):
                held_local = storage.download_dir(held, scratch / "heldout")
        else:
            held_local = storage.local_path(held)
        if held_local is not None and _has_shards(Path(held_local)) and \
                json.loads((Path(held_local) / "meta.json").read_text()).get("num_rows", 0) > 0:
            metrics.update(heldout_loss(backend.model, held_local, max_rows=ev.heldout_max_rows))
        else:
            info["skipped"]["heldout"] = f"no held-out token shards at {held}"
            log.warning("evaluate: %s", info["skipped"]["heldout"])

    if "humaneval" in ev.suite:
        if ev.humaneval_problems > 0:
            from coderforge.evals.execution import humaneval_problems

            m, a = _execution_bench("humaneval", humaneval_problems(ev.humaneval_problems), backend, cfg,
                                    local_out, run)
            metrics.update(m)
            artifacts += a
        else:
            info["skipped"]["humaneval"] = "eval.humaneval_problems = 0"

    for bench, key in JSONL_BENCHES.items():
        if bench not in ev.suite:
            continue
        path = getattr(ev, key)
        if not path:
            info["skipped"][bench] = f"eval.{key} not set"
            continue
        from coderforge.evals.execution import load_jsonl_problems

        local = storage.local_path(path) if not storage.is_s3(path) else None
        if local is None:
            local = scratch / Path(path).name
            local.write_bytes(storage.read_bytes(path))
        m, a = _execution_bench(bench, load_jsonl_problems(local, ev.jsonl_problems), backend, cfg, local_out, run)
        metrics.update(m)
        artifacts += a

    if "fim" in ev.suite:
        from coderforge.evals.fim import evaluate_fim

        m, a = evaluate_fim(backend, ev.fim_problems, ev.max_new_tokens, local_out)
        metrics.update(m)
        artifacts += a

    if "needle" in ev.suite:
        from coderforge.evals.needle import evaluate_needle

        m, a = evaluate_needle(backend, ev.needle_lengths, ev.needle_depths, local_out, seed=cfg.run.seed)
        metrics.update(m)
        artifacts += a

    (local_out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    from coderforge.evals.report import summary_markdown

    (local_out / "summary.md").write_text(summary_markdown(metrics, info, local_out))
    artifacts = [str(local_out / "metrics.json"), str(local_out / "summary.md"), *artifacts]
    if storage.is_s3(out_dir):
        storage.upload_dir(local_out, out_dir)
    info["out_dir"] = out_dir
    return StepResult(metrics=metrics, artifacts=artifacts, info=info)
