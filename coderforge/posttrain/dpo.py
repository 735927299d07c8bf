"""The ``dpo`` step: offline DPO on Ray Train from the execution-feedback pairs (recipe.md §7.4).

``run_dpo(cfg, pairs_dir, model_dir, out_dir, run)``:

1. Data (``dpo_data``): the pairs of ``pairs_dir`` (``dpo_pairs``'s output) tokenised with the SFT
   model's tokenizer (prompt masked; chosen / rejected responses + ``<|im_end|>``); pairs longer than
   ``dpo.seq_len`` dropped ``too_long``; ledger ``Ledger("dpo")`` over pairs; rows per split in
   ``out_dir/data/{train,heldout}`` (``dpo_task.DPORows``).
2. Reference: the frozen SFT model's log-probabilities of every chosen and rejected response, computed
   once before training in Ray tasks (``train.num_workers`` of them, a GPU each with
   ``train.use_gpu``) and stored beside the rows (``reference.npy``); a re-run with the same rows and
   model reuses them.
3. Training: the shared loop (``coderforge.train.loop``) with ``dpo_task.DPOTask`` (sigmoid DPO,
   β = ``dpo.beta``) under Ray Train (``launch.fit``: ``train.num_workers`` workers,
   ``FailureConfig(train.max_failures)``, checkpoints kept by ``train.checkpoints_to_keep``), starting
   from the SFT model, with the recipe's ``train`` values overridden by ``dpo.train``
   (``loop_config(cfg, rows, "dpo", model)``). The Ray run's name hashes the loop configuration, the
   rows and β, so re-running the step resumes from its last checkpoint; a killed worker resumes
   exactly (model, optimizer, data position, RNG from the checkpoint).
4. Evaluation: on the held-out pairs (``dpo.heldout_fraction``), at every kept checkpoint (with
   ``deepspeed``: the final one): reward accuracy, mean margin, chosen / rejected rewards, KL to the
   reference (``dpo_loss.summarize``); at step 0 the policy is the reference (all rewards 0).
5. Output: the final weights as a Hugging Face model with the SFT tokenizer in ``out_dir/model``.

The SFT model is read in place when local; an ``s3://`` one is downloaded to a fixed directory under
the work directory (``dpo-models/<hash>``), so a re-run names the same Ray run. Each row holds one
pair padded to the longest pair (rounded up to 128 tokens): the rows on disk and the attention work
grow with the spread of pair lengths (packing several pairs per row is not done).

MLflow: the loop's history (loss, lr, grad norm, throughput) and, per logged step, ``train.*``
(reward accuracy, margin, rewards, KL over the logging window); per evaluated checkpoint
``heldout.*``. Metrics of the step: the final values of both, pairs per split, drops, timings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from coderforge.config import RecipeConfig
from coderforge.ledger import Ledger
from coderforge.posttrain.dpo_data import encode_pairs, select, write_rows
from coderforge.posttrain.dpo_records import HELDOUT, TRAIN, read_pairs
from coderforge.posttrain.dpo_task import REFERENCE_FILE, REFERENCE_KEY_FILE, DPORows, DPOTask, row_logps
from coderforge.posttrain.synthesise import teacher_source
from coderforge.records import count_documents
from coderforge.steps import StepResult
from coderforge.train.hooks import TrainHooks
from coderforge.train.launch import _start_ray, fit, log_history, phase_metrics, run_name
from coderforge.train.loop_config import loop_config
from coderforge.train.parallel import resolve_attention

log = logging.getLogger("coderforge.posttrain.dpo")

WINDOW_SUMS = ("pairs", "reward_correct", "chosen_reward", "rejected_reward", "margin", "kl", "chosen_logp",
               "rejected_logp", "response_tokens")


# --- log-probability passes -------------------------------------------------------------------------------
def model_fingerprint(model_dir: str) -> str:
    """The model a reference pass was computed with: its path, config and weight files' sizes and times."""
    d = Path(model_dir)
    parts = [str(d.resolve()), (d / "config.json").read_text()]
    parts += [f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in sorted(d.glob("*.safetensors"))]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def logps_pass(cfg: RecipeConfig, model_dir: str, rows_dir: str, n_rows: int, attention: str, chunk: int,
               batch_size: int, checkpoint=None) -> np.ndarray:
    """``dpo_task.row_logps`` over all ``n_rows`` rows, split over ``train.num_workers`` Ray tasks."""
    import ray

    parts = max(1, min(cfg.train.num_workers, n_rows))
    bounds = np.linspace(0, n_rows, parts + 1).astype(int)
    remote = ray.remote(num_cpus=1, num_gpus=1 if cfg.train.use_gpu else 0, max_retries=1)(row_logps)
    bf16 = cfg.train.dtype == "bfloat16"  # the policy's precision in training
    refs = [remote.remote(model_dir, rows_dir, int(a), int(b), batch_size, attention, chunk, checkpoint, bf16)
            for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
    return np.concatenate(ray.get(refs)) if refs else np.zeros((0, 2))


def ensure_reference(cfg: RecipeConfig, model_dir: str, rows_dir: str, attention: str, chunk: int,
                     batch_size: int) -> float:
    """Compute and store the reference log-probabilities of ``rows_dir`` unless they are there for
    these rows and this model; the seconds it took (0 when reused)."""
    rows = DPORows(rows_dir)
    want = {"rows": rows.key, "model": model_fingerprint(model_dir)}
    key_file = Path(rows_dir) / REFERENCE_KEY_FILE
    if rows.reference is not None and key_file.exists() and json.loads(key_file.read_text()) == want:
        log.info("dpo: reference log-probabilities of %s reused", rows_dir)
        return 0.0
    t0 = time.perf_counter()
    logps = logps_pass(cfg, model_dir, rows_dir, len(rows), attention, chunk, batch_size)
    np.save(Path(rows_dir) / REFERENCE_FILE, logps)
    key_file.write_text(json.dumps(want))
    return time.perf_counter() - t0


def pair_summary(policy: np.ndarray, reference: np.ndarray, beta: float) -> dict[str, float]:
    """Loss, reward accuracy, margin, rewards and KL of pairs with these log-probabilities."""
    import torch

    from coderforge.posttrain.dpo_loss import dpo_loss, summarize

    loss, sums = dpo_loss(torch.from_numpy(policy), torch.from_numpy(reference), beta)
    return {"loss": float(loss), **summarize({k: float(v) for k, v in sums.items()})}


def heldout_history(cfg: RecipeConfig, model_dir: str, rows_dir: str, result, strategy: str, attention: str,
                    chunk: int, batch_size: int) -> list[dict]:
    """Held-out metrics at step 0 (the reference) and at every kept checkpoint of ``result``."""
    rows = DPORows(rows_dir)
    ref = rows.reference
    beta = cfg.dpo.beta
    out = [{"step": 0, **pair_summary(ref, ref, beta)}]
    kept = list(result.best_checkpoints or []) or [(result.checkpoint, result.metrics)]
    if strategy == "deepspeed":  # only the final checkpoint has full weights (hf/)
        kept = [(result.checkpoint, result.metrics)]
    seen = set()
    for ckpt, metrics in sorted(kept, key=lambda cm: int(cm[1].get("step", 0))):
        step = int(metrics.get("step", 0))
        if step in seen:
            continue
        seen.add(step)
        policy = logps_pass(cfg, model_dir, rows_dir, len(rows), attention, chunk, batch_size, checkpoint=ckpt)
        out.append({"step": step, **pair_summary(policy, ref, beta)})
    return out


# --- history and export ---------------------------------------------------------------------------------
def train_rows(history: list[dict]) -> list[dict]:
    """Per logged step: the loop's loss and the DPO means of its window."""
    from coderforge.posttrain.dpo_loss import summarize

    out = []
    for h in history:
        if "step" in h:
            out.append({"step": int(h["step"]), "loss": float(h["loss"]), **summarize(h, "_window")})
    return out


def log_series(run, prefix: str, rows: list[dict]) -> None:
    for row in rows:
        run.log_metrics({f"{prefix}.{k}": float(v) for k, v in row.items() if k != "step"}, step=int(row["step"]))


def export_model(checkpoint_dir: Path, model_dir: str, dest: Path) -> None:
    """The final checkpoint's HF weights with the SFT model's tokenizer (and generation config)."""
    from transformers import AutoTokenizer

    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(checkpoint_dir / "hf", dest)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(dest)
    gen = Path(model_dir) / "generation_config.json"
    if gen.exists():
        shutil.copyfile(gen, dest / gen.name)


# --- the step -------------------------------------------------------------------------------------------
def prepare(cfg: RecipeConfig, pairs_dir: str, model_dir: str, data_dir: Path, ledger: Ledger) -> dict[str, str]:
    """Tokenise the pairs into row directories per split; ``{split: dir}`` of the non-empty ones."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    splits = select(encode_pairs(list(read_pairs(pairs_dir)), tok), cfg.dpo.seq_len, ledger)
    if not splits[TRAIN]:
        raise ValueError(f"dpo: no training pair in {pairs_dir} fits dpo.seq_len {cfg.dpo.seq_len} "
                         f"({len(splits[HELDOUT])} held out)")
    vocab = int(json.loads((Path(model_dir) / "config.json").read_text())["vocab_size"])
    eos = tok.eos_token_id if tok.eos_token_id is not None else 0
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    dirs = {}
    for split, encoded in splits.items():
        if encoded:
            dirs[split] = str(data_dir / split)
            write_rows(dirs[split], encoded, vocab, pad, eos)
    return dirs


def local_model(cfg: RecipeConfig, model_dir: str) -> str:
    """A local directory of the SFT model: ``model_dir`` itself, or an ``s3://`` model downloaded to a
    fixed place under the work directory (the Ray run's name and the reference pass's key name the path,
    so a re-run must find the same one)."""
    from coderforge import storage
    from coderforge.workspace import workdir_of

    if not storage.is_s3(model_dir):
        return teacher_source(model_dir, Path(tempfile.gettempdir()), tokenizer_only=False)
    dest = workdir_of(cfg) / "dpo-models" / hashlib.sha256(model_dir.encode()).hexdigest()[:12]
    return teacher_source(model_dir, dest, tokenizer_only=False)


def _train(cfg: RecipeConfig, init: str, dirs: dict[str, str], loop, name: str, storage: str, attention: str,
           hooks: TrainHooks | None) -> tuple:
    """Reference pass, Ray Train fit, held-out evaluation on one Ray (started here unless one is up):
    ``(result, heldout rows, reference seconds, fit seconds)``."""
    chunk, bs = loop.loss_chunk_tokens, loop.micro_batch_size
    started = _start_ray(cfg)
    try:
        ref_seconds = sum(ensure_reference(cfg, init, d, attention, chunk, bs) for d in dirs.values())
        t_fit = time.perf_counter()
        result = fit(cfg, loop, DPOTask(dirs[TRAIN], loop.seed, cfg.dpo.beta, chunk), name, storage,
                     cfg.train.num_workers, cfg.train.use_gpu, cfg.train.max_failures, cfg.train.checkpoints_to_keep,
                     hooks=hooks)
        fit_seconds = time.perf_counter() - t_fit
        if result.error:
            raise RuntimeError(f"dpo training failed: {result.error}") from result.error
        heldout = heldout_history(cfg, init, dirs[HELDOUT], result, loop.strategy, attention, chunk, bs) \
            if HELDOUT in dirs else []
        return result, heldout, ref_seconds, fit_seconds
    finally:
        if started:
            import ray

            ray.shutdown()


def run_dpo(cfg: RecipeConfig, pairs_dir: str, model_dir: str, out_dir: str, run,
            hooks: TrainHooks | None = None) -> StepResult:
    """DPO of the SFT model ``model_dir`` on the pairs of ``pairs_dir``; the model in ``out_dir/model``.
    ``hooks``: training-loop callbacks (failure injection in tests)."""
    import torch

    from coderforge.workspace import workdir_of

    t0 = time.perf_counter()
    out = Path(out_dir)
    ledger = Ledger("dpo")
    init = local_model(cfg, model_dir)
    dirs = prepare(cfg, pairs_dir, init, out / "data", ledger)
    summary = ledger.close(out_dir, expected_inputs=count_documents(pairs_dir))
    loop = loop_config(cfg, dirs[TRAIN], "dpo", init)
    train_rows_dir = DPORows(dirs[TRAIN])
    attention = resolve_attention(loop.attention, torch.device("cuda" if cfg.train.use_gpu else "cpu"),
                                  train_rows_dir.seq_len)
    salt = hashlib.sha256(f"{train_rows_dir.key}:{cfg.dpo.beta}".encode()).hexdigest()[:8]
    name = f"{run_name(cfg, 'dpo', loop)}-{salt}"
    storage = cfg.train.storage or str(workdir_of(cfg) / "ray_results")
    run.log_params({"dpo.ray_run": name, "dpo.storage": storage, "dpo.row_len": train_rows_dir.seq_len,
                    "dpo.attention": attention, "dpo.loss": "sigmoid"})
    result, heldout, ref_seconds, fit_seconds = _train(cfg, init, dirs, loop, name, storage, attention, hooks)
    with result.checkpoint.as_directory() as d:
        export_model(Path(d), init, out / "model")
        state = json.loads((Path(d) / "trainer_state.json").read_text())
    history = state.get("history", [])
    log_history(run, history)
    train = train_rows(history)
    log_series(run, "train", train)
    log_series(run, "heldout", heldout)
    metrics = {"pairs_train": float(len(train_rows_dir)),
               "pairs_heldout": float(len(DPORows(dirs[HELDOUT]))) if HELDOUT in dirs else 0.0,
               "steps": float(state["metrics"]["step"]), "final_loss": float(state["metrics"]["loss"]),
               "reference_seconds": round(ref_seconds, 3), "train_seconds": round(fit_seconds, 3),
               "step_seconds": round(time.perf_counter() - t0, 3)}
    metrics.update(phase_metrics(result.metrics))
    metrics.update({f"train.{k}": float(v) for k, v in (train[-1] if train else {}).items() if k != "step"})
    metrics.update({f"heldout.{k}": float(v) for k, v in (heldout[-1] if heldout else {}).items() if k != "step"})
    log.info("dpo: %d train / %d held-out pairs, %d steps, final loss %.4f, held-out reward accuracy %.3f",
             metrics["pairs_train"], metrics["pairs_heldout"], metrics["steps"], metrics["final_loss"],
             metrics.get("heldout.reward_accuracy", float("nan")))
    return StepResult(ledger=summary, metrics=metrics,
                      info={"model_path": str(out / "model"), "ray_run": name, "ray_storage": storage,
                            "checkpoint": result.checkpoint.path, "attention": attention,
                            "train": train, "heldout": heldout})
