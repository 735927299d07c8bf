"""One model of the evaluate step: held-out perplexity and the benchmarks of ``eval.suite``, in the
model's mode (completion for a base model, instruct for SFT/DPO models).

The inputs every model shares (held-out shards, benchmark problems) are prepared once
(``prepare_inputs``); each model then gets its own generation backend (``coderforge.evals.serving``:
a vLLM server started for it and stopped after it, or transformers in-process). Held-out perplexity
needs the model's logits, so it always runs in-process with transformers: before the vLLM server
starts (the weights are freed before the server loads its own copy), or on the transformers
backend's model.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from coderforge import storage
from coderforge.evals.bench import ModelRun, execution_bench
from coderforge.evals.execution import Problem
from coderforge.evals.serving import free_memory, generation

log = logging.getLogger("coderforge.evals")

JSONL_BENCHES = {"mbpp": "mbpp_path", "humaneval_plus": "humaneval_plus_path", "mbpp_plus": "mbpp_plus_path"}


@dataclass
class Inputs:
    heldout: str | None = None  # local held-out shard directory (None: not evaluated)
    benchmarks: list[tuple[str, list[Problem]]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def _local_file(uri: str, scratch: Path) -> Path:
    if not storage.is_s3(uri):
        return Path(storage.local_path(uri))
    local = scratch / "benchmarks" / Path(uri).name
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(storage.read_bytes(uri))
    return local


def _heldout_dir(data_dir: str | None, scratch: Path) -> tuple[str | None, str]:
    if not data_dir:
        return None, "no data_dir (packed held-out rows) given"
    held = storage.join(data_dir, "heldout")
    local = None
    if storage.is_s3(held):
        if storage.exists(storage.join(held, "meta.json")):
            local = str(storage.download_dir(held, scratch / "heldout"))
    else:
        local = str(storage.local_path(held))
    meta = Path(local) / "meta.json" if local else None
    if meta is None or not meta.exists() or json.loads(meta.read_text()).get("num_rows", 0) <= 0:
        return None, f"no held-out token shards at {held}"
    return local, ""


def prepare_inputs(cfg, data_dir: str | None, scratch: Path) -> Inputs:
    """Held-out shards and benchmark problems of ``cfg.eval``, with the reason for each one skipped."""
    from coderforge.evals.execution import humaneval_problems, load_jsonl_problems

    ev, inputs = cfg.eval, Inputs()
    if "heldout" in ev.suite:
        inputs.heldout, why = _heldout_dir(data_dir, scratch)
        if why:
            inputs.skipped["heldout"] = why
    if "humaneval" in ev.suite:
        if ev.humaneval_problems > 0:
            inputs.benchmarks.append(("humaneval", humaneval_problems(ev.humaneval_problems)))
        else:
            inputs.skipped["humaneval"] = "eval.humaneval_problems = 0"
    for bench, key in JSONL_BENCHES.items():
        if bench in ev.suite:
            path = getattr(ev, key)
            if path:
                inputs.benchmarks.append((bench, load_jsonl_problems(_local_file(path, scratch), ev.jsonl_problems)))
            else:
                inputs.skipped[bench] = f"eval.{key} not set"
    if "multipl_e" in ev.suite:
        if not ev.multipl_e_paths:
            inputs.skipped["multipl_e"] = "eval.multipl_e_paths not set"
        for lang, path in ev.multipl_e_paths.items():
            problems = load_jsonl_problems(_local_file(path, scratch), ev.jsonl_problems, language=lang)
            inputs.benchmarks.append((f"multipl_e_{lang}", problems))
    for reason in inputs.skipped.values():
        log.warning("evaluate: skipped: %s", reason)
    return inputs


def _heldout(model_dir: Path, shards: str, max_rows: int, model=None) -> dict[str, float]:
    from coderforge.evals.perplexity import heldout_loss

    if model is not None:
        return heldout_loss(model, shards, max_rows=max_rows)
    import torch
    from transformers import AutoModelForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.bfloat16 if device == "cuda"
                                                 else torch.float32).to(device)
    try:
        return heldout_loss(model, shards, max_rows=max_rows)
    finally:
        del model
        free_memory()


def load_tokenizer(model_dir: Path, mode: str) -> tuple[object, str]:
    """The model's tokenizer, and where its chat template comes from (instruct mode)."""
    from transformers import AutoTokenizer

    from coderforge.evals.instruct import ensure_chat_template

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    if mode != "instruct":
        return tok, ""
    return tok, "chatml (the tokenizer has none)" if ensure_chat_template(tok, str(model_dir)) else "tokenizer"


def evaluate_model(cfg, stage: str, mode: str, model_dir: Path, inputs: Inputs, out: Path,
                   run) -> tuple[dict[str, float], list[str], dict]:
    """Unprefixed metrics, result files (in ``out``, prefixed ``<stage>.`` except for base) and info of
    one model."""
    ev = cfg.eval
    prefix = "" if stage == "base" else f"{stage}."
    tok, template = load_tokenizer(model_dir, mode)
    info: dict = {"stage": stage, "mode": mode, "backend": ev.backend, "languages": []}
    if template:
        info["chat_template"] = template
    metrics: dict[str, float] = {}
    files: list[str] = []
    generates = bool(inputs.benchmarks) or "fim" in ev.suite or "needle" in ev.suite
    in_process = ev.backend == "transformers" and generates
    if inputs.heldout and not in_process:
        metrics.update(_heldout(model_dir, inputs.heldout, ev.heldout_max_rows))
    if not generates:
        return metrics, files, info
    log_file = out / f"{prefix or 'base.'}vllm-server.log" if ev.backend == "vllm" else None
    yarn_lengths: list[int] = []
    try:
        with generation(cfg, model_dir, stage, log_file, tokenizer=tok) as gen:
            if gen.kind == "vllm":
                metrics["vllm_start_seconds"] = round(gen.start_seconds, 3)
            if inputs.heldout and in_process:
                metrics.update(_heldout(model_dir, inputs.heldout, ev.heldout_max_rows, model=gen.model))
            mr = ModelRun(cfg, stage, mode, gen.backend, tok, gen.context_limit, out, run, prefix)
            for name, problems in inputs.benchmarks:
                m, f = execution_bench(mr, name, problems)
                metrics.update(m)
                files += f
            info["languages"] = mr.languages
            common = dict(tokenizer=tok, file_prefix=prefix, context_limit=gen.context_limit)
            if "fim" in ev.suite:
                from coderforge.evals.fim import evaluate_fim

                m, f = evaluate_fim(gen.backend, ev.fim_problems, ev.max_new_tokens, out, **common)
                metrics.update(m)
                files += f
            if "needle" in ev.suite:
                from coderforge.evals.needle import evaluate_needle, split_lengths

                plain, yarn_lengths = split_lengths(ev.needle_lengths, model_dir, ev.long_context)
                m, f = evaluate_needle(gen.backend, plain, ev.needle_depths, out, seed=cfg.run.seed,
                                       **common) if plain else ({}, [])
                metrics.update(m)
                files += f
        if yarn_lengths:  # beyond the trained length: YaRN on a backend of its own, after this one is released
            from coderforge.evals.needle import evaluate_needle_yarn

            yarn_log = out / f"{prefix or 'base.'}vllm-server-yarn.log" if log_file is not None else None
            m, f = evaluate_needle_yarn(cfg, model_dir, stage, yarn_lengths, out, tokenizer=tok, file_prefix=prefix,
                                        log_file=yarn_log)
            metrics.update(m)
            files += f
    finally:
        if log_file is not None and log_file.exists():
            files.append(str(log_file))
    return metrics, files, info
