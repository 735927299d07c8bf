"""DPO rows on disk, their batches, the DPO training task, and the log-probability passes over them.

A DPO row directory is a token shard directory (``coderforge.tokens.shards``, so the shared loop's
``loop_config`` reads its row length and vocabulary size) whose row ``i`` holds pair ``i``: the prompt
followed by the chosen response as one document, the prompt followed by the rejected response as the
second (``doc_lens = [prompt + chosen, prompt + rejected]``), padding after. Beside the shards:

* ``dpo_rows.json``: ``{"pair_ids", "prompt_lens", "key"}`` (row order; ``key`` names the content);
* ``reference.npy``: ``float64[rows, 2]``, the frozen reference model's summed log-probabilities of
  the chosen and rejected responses, computed once before training (``reference.json`` holds the
  key of the rows and the model they were computed for, so a re-run reuses them).

``DPOTask`` is the ``TrainTask`` of DPO: ``ResumableSampler`` order over rows (a resumed run reads
the rows the uninterrupted run would), document-masked attention, ``dpo_loss.response_logps`` and
``dpo_loss.dpo_loss`` with the stored reference log-probabilities.

``row_logps(...)`` computes the same log-probabilities for a range of rows with a model from a
Hugging Face directory or a training checkpoint, without gradients: the reference pass before
training and the held-out evaluation of checkpoints (``dpo.run_dpo`` runs it in Ray tasks).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROWS_FILE, REFERENCE_FILE, REFERENCE_KEY_FILE = "dpo_rows.json", "reference.npy", "reference.json"
IGNORE = -100


class DPORows:
    """Random access to the pairs of a DPO row directory (memory-mapped token shards)."""

    def __init__(self, path: str | Path):
        from coderforge.tokens.shards import TokenShards

        self.path = Path(path)
        self.shards = TokenShards(self.path)
        meta = json.loads((self.path / ROWS_FILE).read_text())
        self.pair_ids: list[str] = meta["pair_ids"]
        self.prompt_lens = np.asarray(meta["prompt_lens"], dtype=np.int64)
        self.key: str = meta["key"]
        ref = self.path / REFERENCE_FILE
        self.reference = np.load(ref) if ref.exists() else None

    def __len__(self) -> int:
        return len(self.shards)

    @property
    def seq_len(self) -> int:
        return self.shards.seq_len

    def batch(self, rows, device, attention: str, with_reference: bool = True) -> dict:
        """The tensors of rows ``rows``: ids, positions, document mask, response targets and slots and,
        when ``with_reference``, the reference log-probabilities (``ref``, ``[B, 2]``)."""
        import torch

        from coderforge.tokens.shards import position_ids
        from coderforge.train.model import attention_mask_for, doc_ids

        seq = self.seq_len
        ids, pos, docs, targets, slots = [], [], [], [], []
        for i in rows:
            row = self.shards.row(int(i))
            tokens = row.tokens.astype(np.int64)
            p = int(self.prompt_lens[int(i)])
            lc, lr = (int(n) for n in row.doc_lens)
            tgt = np.full(seq, IGNORE, dtype=np.int64)
            slot = np.zeros(seq, dtype=np.int64)
            tgt[p - 1:lc - 1] = tokens[p:lc]  # position t predicts token t + 1: the chosen response
            tgt[lc + p - 1:lc + lr - 1] = tokens[lc + p:lc + lr]  # the rejected response
            slot[lc:] = 1
            ids.append(tokens)
            pos.append(position_ids(row.doc_lens, seq))
            docs.append(doc_ids(row.doc_lens, seq))
            targets.append(tgt)
            slots.append(slot)
        t = {k: torch.from_numpy(np.stack(v)) for k, v in
             (("input_ids", ids), ("position_ids", pos), ("docs", docs), ("targets", targets), ("slot", slots))}
        if with_reference:
            if self.reference is None:
                raise ValueError(f"{self.path}: no reference log-probabilities ({REFERENCE_FILE})")
            t["ref"] = torch.from_numpy(self.reference[np.asarray(rows, dtype=np.int64)].astype(np.float32))
        if device.type == "cuda":
            t = {k: v.pin_memory().to(device, non_blocking=True) for k, v in t.items()}
        else:
            t = {k: v.to(device) for k, v in t.items()}
        t["attention_mask"] = attention_mask_for(t.pop("docs"), attention)
        return t


class DPOTask:
    """DPO as a ``coderforge.train.task.TrainTask``: one sample = one pair (one row)."""

    def __init__(self, data_dir: str, seed: int, beta: float, chunk_tokens: int):
        self.data_dir, self.seed, self.beta, self.chunk_tokens = data_dir, seed, beta, chunk_tokens
        self._rows: DPORows | None = None

    def __getstate__(self) -> dict:  # travels to Ray workers without open memory maps
        return {**self.__dict__, "_rows": None}

    @property
    def rows(self) -> DPORows:
        if self._rows is None:
            self._rows = DPORows(self.data_dir)
        return self._rows

    @property
    def seq_len(self) -> int:
        return self.rows.seq_len

    def batches(self, start: int, rank: int, world: int, micro_batch: int, device,
                attention: str) -> Iterator[dict]:
        from coderforge.tokens.shards import ResumableSampler

        sampler = ResumableSampler(len(self.rows), self.seed, start=start, rank=rank, world=world)
        while True:
            yield self.rows.batch([r for _, r in sampler.take(micro_batch)], device, attention)

    def loss(self, model, batch: dict):
        from coderforge.posttrain.dpo_loss import dpo_loss, response_logps

        policy = response_logps(model, batch, self.chunk_tokens)
        loss, metrics = dpo_loss(policy, batch["ref"], self.beta)
        metrics["response_tokens"] = (batch["targets"] != IGNORE).sum()
        return loss, metrics


def _load_model(model_dir: str, checkpoint, attention: str, device):
    """The model of ``model_dir``, or of a training checkpoint (its ``state.pt``, else its ``hf/``)."""
    import torch

    from coderforge.train.model import build_model

    if checkpoint is None:
        return build_model(init_from=model_dir, attention=attention).to(device)
    with checkpoint.as_directory() as d:
        state_file, hf = Path(d) / "state.pt", Path(d) / "hf"
        if state_file.exists():
            core = build_model(init_from=model_dir, attention=attention)
            state = torch.load(state_file, map_location="cpu", weights_only=False)["model"]
            missing, _ = core.load_state_dict({k[len("core."):]: v for k, v in state.items()}, strict=False)
            if any(not k.startswith("lm_head.") for k in missing):  # a tied head may be left out
                raise ValueError(f"checkpoint {d}: weights missing for {missing[:3]}")
        elif hf.exists():
            core = build_model(init_from=str(hf), attention=attention)
        else:
            raise FileNotFoundError(f"checkpoint {d} has neither state.pt nor hf/ (a DeepSpeed step checkpoint)")
    return core.to(device)


def row_logps(model_dir: str, rows_dir: str, start: int, end: int, batch_size: int, attention: str,
              chunk_tokens: int, checkpoint=None, bf16: bool = False) -> np.ndarray:
    """``float64[end - start, 2]``: the chosen / rejected response log-probabilities of rows
    ``start:end`` under the model of ``model_dir`` (or of ``checkpoint``, a ``ray.train.Checkpoint``);
    ``bf16``: under bf16 autocast, as training with ``dtype: bfloat16`` computes the policy's."""
    import contextlib

    import torch

    from coderforge.posttrain.dpo_loss import response_logps

    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    rows = DPORows(rows_dir)
    core = _load_model(model_dir, checkpoint, attention, device).eval()
    out = np.zeros((max(0, end - start), 2), dtype=np.float64)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        for s in range(start, end, batch_size):
            e = min(end, s + batch_size)
            batch = rows.batch(list(range(s, e)), device, attention, with_reference=False)
            out[s - start:e - start] = response_logps(core, batch, chunk_tokens).double().cpu().numpy()
    return out
