"""What a training stage brings to the shared loop: its batches and its loss (``TrainTask``).

The loop (``loop.train_loop``) owns everything else — placement, parallelism, optimizer, schedule,
checkpoints, resume, metrics, HF export — so pretraining, SFT and DPO differ only in the task:

* ``seq_len``: tokens per sample row (picks the attention kernel, counts throughput and MFU);
* ``batches(start, rank, world, micro_batch, device, attention)``: the endless micro-batch iterator
  of rank ``rank`` from global sample index ``start`` on (a resumed run passes the checkpoint's data
  position, so it reads exactly the samples the uninterrupted run would);
* ``loss(model, batch) -> (loss, metrics)``: runs inside the wrapped forward (DDP / FSDP2 /
  DeepSpeed) with the bare ``Qwen2ForCausalLM``; ``metrics`` are tensors the loop sums over a
  logging window and all ranks and reports as ``<name>_window``.

``PackedLM`` is pretraining's task: next-token loss on packed token shards; with an anneal mix
(``LoopConfig.anneal_mix``) its rows switch at the anneal phase's first step to the mix of
``anneal.AnnealData`` (pretraining + instruction rows), as a pure function of the data position.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from coderforge.train.loop_config import LoopConfig


class TrainTask(Protocol):
    @property
    def seq_len(self) -> int: ...

    def batches(self, start: int, rank: int, world: int, micro_batch: int, device: Any,
                attention: str) -> Iterator[dict]: ...

    def loss(self, model: Any, batch: dict) -> tuple[Any, dict]: ...


def make_batch(shards, rows, device, attention: str) -> dict:
    """input_ids, position_ids, next-token targets and the document mask for shard rows ``rows``."""
    import torch

    from coderforge.tokens.shards import labels_for, position_ids
    from coderforge.train.loss import shift_targets
    from coderforge.train.model import attention_mask_for, doc_ids

    seq = shards.seq_len
    ids, pos, labels, docs = [], [], [], []
    for i in rows:
        row = shards.row(int(i))
        ids.append(row.tokens.astype(np.int64))
        pos.append(position_ids(row.doc_lens, seq))
        labels.append(labels_for(row, seq))
        docs.append(doc_ids(row.doc_lens, seq))
    t = {k: torch.from_numpy(np.stack(v)) for k, v in
         (("input_ids", ids), ("position_ids", pos), ("labels", labels), ("docs", docs))}
    if device.type == "cuda":
        t = {k: v.pin_memory().to(device, non_blocking=True) for k, v in t.items()}
    else:
        t = {k: v.to(device) for k, v in t.items()}
    targets = shift_targets(t["labels"])
    return {"input_ids": t["input_ids"], "position_ids": t["position_ids"], "targets": targets,
            "attention_mask": attention_mask_for(t["docs"], attention)}


class PackedLM:
    """Causal-LM loss on packed token shards: ``ResumableSampler`` order (per-epoch shuffle, rank
    ``r`` takes global samples ``i ≡ r (mod world)``), document-masked attention with positions
    restarting per document, ``loss.chunked_lm_loss`` on the final hidden states (no full-vocabulary
    logits). Rows whose labels mask a prompt (SFT) train the same way."""

    def __init__(self, data_dir: str, seed: int, chunk_tokens: int, compiled_loss: bool, anneal=None):
        self.data_dir, self.seed = data_dir, seed
        self.chunk_tokens, self.compiled_loss = chunk_tokens, compiled_loss
        self.anneal = anneal  # anneal.AnnealData, or None: the pretraining rows throughout
        self._shards = None

    @classmethod
    def from_config(cls, cfg: LoopConfig) -> PackedLM:
        anneal = None
        if cfg.anneal_mix:
            from coderforge.train.anneal import AnnealData

            anneal = AnnealData(cfg.anneal_dir, cfg.anneal_mix, cfg.steps - cfg.anneal_steps, cfg.grad_accum, cfg.seed)
        return cls(cfg.data_dir, cfg.seed, cfg.loss_chunk_tokens, cfg.compile, anneal)

    def __getstate__(self) -> dict:  # travels to Ray workers without open memory maps
        return {**self.__dict__, "_shards": None}

    @property
    def shards(self):
        if self._shards is None:
            from coderforge.tokens.shards import TokenShards

            self._shards = TokenShards(self.data_dir)
        return self._shards

    @property
    def seq_len(self) -> int:
        return self.shards.seq_len

    def batches(self, start: int, rank: int, world: int, micro_batch: int, device,
                attention: str) -> Iterator[dict]:
        from coderforge.tokens.shards import ResumableSampler

        if self.anneal is not None:
            rows = self.anneal.rows(self.shards)
            stream = self.anneal.stream(rows, start, rank, world, micro_batch)
            while True:
                yield make_batch(rows, [next(stream) for _ in range(micro_batch)], device, attention)
        sampler = ResumableSampler(len(self.shards), self.seed, start=start, rank=rank, world=world)
        while True:
            yield make_batch(self.shards, [r for _, r in sampler.take(micro_batch)], device, attention)

    def loss(self, model, batch: dict):
        from coderforge.train.loss import IGNORE, chunked_lm_loss

        out = model.model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                          attention_mask=batch["attention_mask"], use_cache=False)
        loss = chunked_lm_loss(out.last_hidden_state, model.lm_head.weight, batch["targets"], self.chunk_tokens,
                               self.compiled_loss)
        return loss, {"target_tokens": (batch["targets"] != IGNORE).sum()}
