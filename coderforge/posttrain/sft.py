"""The SFT step: supervised fine-tuning of the pretrained model on ChatML samples, on Ray Train.

``run_sft(cfg, docs_dir, model_dir, out_dir, run, instructions_dir=None, seeds_dir=None)``:

1. Data (:mod:`coderforge.posttrain.sft_data`, :mod:`coderforge.posttrain.sft_pack`): the verified
   synthetic set, the seeds as instructions, the ``sft.files`` JSONL files and FIM instructions
   from ``docs_dir`` (``sft.fim_share`` of the set), mixed by ``sft.mix``, decontaminated, encoded
   with the model's own ChatML template and its loss mask (assistant answers + ``<|im_end|>\\n``;
   ``sft.only_last_turn``), samples longer than ``sft.seq_len`` dropped ``too_long``, a hash-chosen
   ``sft.heldout_fraction`` held out, the rest packed whole into ``sft.seq_len`` rows with document
   boundaries and the loss mask (``out_dir/sft_data/{train,heldout}``). ``Ledger("sft")`` accounts for
   every input (conversations, file lines, FIM documents tried) and is closed in ``out_dir``.
2. Training: the pretraining engine (``train.loop`` under ``launch.fit``: FSDP2 / DeepSpeed / DDP per
   ``train.strategy``, checkpoints, exact resume) with pretraining's task (``task.PackedLM``), whose
   targets follow the shards' loss mask, from ``model_dir`` (``init_from``) with the ``sft.train``
   overrides of the ``train`` section (``loop_config(cfg, ..., "sft", model_dir)``). The Ray run is named
   after what it trains, the data's fingerprint included, so re-running the step after a failure resumes
   from its last checkpoint, and a re-run on other data starts afresh.
3. Output: the final weights as a Hugging Face model with the model's tokenizer in ``out_dir/model``.
   Metrics: the train loss history (MLflow, per logged step), the held-out loss of the masked targets
   (mean NLL, document-masked attention, as in training) before and after training, tokens, target
   tokens, samples per split and source, padding fraction, the FIM samples made.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

from coderforge import storage
from coderforge.config import RecipeConfig
from coderforge.ledger import Ledger
from coderforge.posttrain.sft_pack import build_sft_data
from coderforge.steps import StepResult
from coderforge.train.hooks import TrainHooks
from coderforge.train.launch import fit, log_history, log_schedule_plot, phase_metrics, run_name
from coderforge.train.loop_config import LoopConfig, loop_config
from coderforge.train.task import PackedLM

log = logging.getLogger("coderforge.posttrain.sft")

EVAL_ROWS = 8  # held-out rows per forward pass
EVAL_CHUNK = 1024  # positions per logits chunk


def heldout_loss(model_path: str | Path, heldout_dir: str | Path, loop: LoopConfig, use_gpu: bool) -> dict:
    """Mean NLL over the held-out targets (the loss mask's tokens) with the training batches' attention
    and positions; ``{}`` when nothing is held out."""
    import torch

    from coderforge.tokens.shards import TokenShards
    from coderforge.train.loss import IGNORE, token_losses
    from coderforge.train.model import build_model
    from coderforge.train.parallel import resolve_attention
    from coderforge.train.task import make_batch

    shards = TokenShards(heldout_dir)
    if len(shards) == 0:
        return {}
    device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
    attention = resolve_attention(loop.attention, device, shards.seq_len)
    model = build_model(None, str(model_path), attention=attention).to(device).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(shards), EVAL_ROWS):
            batch = make_batch(shards, range(start, min(len(shards), start + EVAL_ROWS)), device, attention)
            hidden = model.model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                                 attention_mask=batch["attention_mask"], use_cache=False).last_hidden_state
            targets = batch["targets"]
            for s in range(0, hidden.shape[1], EVAL_CHUNK):
                total += float(token_losses(hidden[:, s:s + EVAL_CHUNK], model.lm_head.weight,
                                            targets[:, s:s + EVAL_CHUNK]).sum())
            count += int((targets != IGNORE).sum())
    del model
    return {"loss": total / max(count, 1), "targets": float(count), "rows": float(len(shards))}


def copy_tokenizer_files(src: Path, dest: Path) -> None:
    """The tokenizer files of a model directory (never its weights or config) into ``dest``."""
    for f in src.iterdir():
        if f.is_file() and (f.name.startswith(("tokenizer", "special_tokens", "added_tokens"))
                            or f.name in ("vocab.json", "merges.txt", "chat_template.jinja")):
            shutil.copyfile(f, dest / f.name)


def _local_model(model_dir: str, tmp: str) -> Path:
    if storage.is_s3(model_dir):
        return storage.download_dir(model_dir, Path(tmp) / "base_model")
    return storage.local_path(model_dir)


def data_metrics(built: dict) -> dict[str, float]:
    tr, ho = built["metas"]["train"], built["metas"]["heldout"]
    out = {"train_rows": tr["num_rows"], "heldout_rows": ho["num_rows"], "train_tokens": tr["tokens_real"],
           "train_target_tokens": tr.get("tokens_target", 0), "heldout_tokens": ho["tokens_real"],
           "padding_fraction": tr["padding_fraction"], "train_samples": tr["samples"],
           "heldout_samples": ho["samples"], "fim_needed": built["fim_needed"], "fim_made": built["fim_made"]}
    out.update({f"samples.{k}": v for k, v in built["per_source"].items()})
    out.update({f"mix_rate.{k}": v for k, v in built["rates"].items()})
    return {k: float(v) for k, v in out.items()}


def run_sft(cfg: RecipeConfig, docs_dir: str | None, model_dir: str, out_dir: str, run,
            instructions_dir: str | None = None, seeds_dir: str | None = None,
            hooks: TrainHooks | None = None) -> StepResult:
    """Fine-tune ``model_dir`` on the SFT set built from the inputs; the model goes to ``out_dir/model``.
    ``hooks``: training-loop callbacks (failure injection in tests)."""
    from coderforge.workspace import workdir_of

    out = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        base = _local_model(model_dir, tmp)
        data_dir = out / "sft_data"
        if data_dir.exists():
            shutil.rmtree(data_dir)  # a re-run writes its data afresh (no stale shard of another run)
        ledger = Ledger("sft")
        t0 = time.time()
        built = build_sft_data(cfg, base, data_dir, ledger, docs_dir, instructions_dir, seeds_dir)
        summary = ledger.close(out_dir, expected_inputs=built["expected_inputs"])
        data_seconds = time.time() - t0
        loop = loop_config(cfg, str(data_dir / "train"), "sft", str(base))
        name = run_name(cfg, f"sft-{built['fingerprint'][:10]}", loop)
        ray_storage = cfg.train.storage or str(workdir_of(cfg) / "ray_results")
        run.log_params({"sft.ray_run": name, "sft.storage": ray_storage, "sft.steps": loop.steps,
                        "sft.lr": loop.lr, "sft.default_system": str(built["metas"]["train"]["default_system"])})
        before = heldout_loss(base, data_dir / "heldout", loop, cfg.train.use_gpu)
        t1 = time.time()
        result = fit(cfg, loop, PackedLM.from_config(loop), name, ray_storage, cfg.train.num_workers,
                     cfg.train.use_gpu, cfg.train.max_failures, cfg.train.checkpoints_to_keep, hooks=hooks)
        train_seconds = time.time() - t1
        if result.error:
            raise RuntimeError(f"SFT training failed: {result.error}") from result.error
        model_out = out / "model"
        if model_out.exists():
            shutil.rmtree(model_out)
        with result.checkpoint.as_directory() as d:
            shutil.copytree(Path(d) / "hf", model_out)
            state = json.loads((Path(d) / "trainer_state.json").read_text())
        copy_tokenizer_files(base, model_out)
        after = heldout_loss(model_out, data_dir / "heldout", loop, cfg.train.use_gpu)
    history = state.get("history", [])
    log_history(run, history)
    for row in history:
        if "target_tokens_window" in row:
            run.log_metrics({"target_tokens_window": float(row["target_tokens_window"])}, step=int(row["step"]))
    log_schedule_plot(run, loop)
    final = state["metrics"]
    metrics = {"final_loss": float(final["loss"]), "steps": float(final["step"]), "tokens": float(final["tokens"]),
               "train_seconds": train_seconds, "data_seconds": data_seconds, **data_metrics(built),
               "tokens_per_s": float(final["tokens"]) / max(train_seconds, 1e-9),
               "train_tokens_per_s_last": float(final.get("tokens_per_s", 0.0))}
    metrics.update(phase_metrics(result.metrics))
    per_step = loop.micro_batch_size * loop.grad_accum * cfg.train.num_workers
    metrics["epochs"] = float(final["step"]) * per_step / max(1.0, metrics["train_rows"])
    if before:
        metrics.update(heldout_loss_before=before["loss"], heldout_loss_after=after["loss"],
                       heldout_targets=before["targets"])
        run.log_metrics({"heldout_loss": before["loss"]}, step=0)
        run.log_metrics({"heldout_loss": after["loss"]}, step=int(final["step"]))
    log.info("sft: %d train rows, held-out loss %s -> %s", metrics["train_rows"], before.get("loss"),
             after.get("loss"))
    return StepResult(ledger=summary, metrics=metrics,
                      info={"model_path": str(model_out), "ray_run": name, "ray_storage": ray_storage,
                            "checkpoint": result.checkpoint.path, "data_dir": str(data_dir),
                            "default_system": built["metas"]["train"]["default_system"]})
