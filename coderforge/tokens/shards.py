"""Token shards: packed fixed-length rows plus the document boundaries of each row.

On-disk format (``coderforge-tokens/1``), one directory:

* ``meta.json`` – ``{"format", "seq_len", "num_rows", "dtype", "pad_id", "eos_id", "vocab_size",
  "tokens_real", "tokens_pad", "shards": [{"name", "rows"}, ...], ...}``
* per shard ``NAME.tokens.npy`` – ``uint32[rows, seq_len]`` (memory-mapped by readers)
* per shard ``NAME.doclens.npy`` – ``int32[n_segments]``: the lengths of the document segments of
  all rows, row after row
* per shard ``NAME.rowptr.npy`` – ``int64[rows + 1]``: row ``r``'s segments are
  ``doclens[rowptr[r]:rowptr[r+1]]``; they sum to at most ``seq_len``; the rest of the row is padding
  (``pad_id``, never a training target).
* optionally, per shard ``NAME.docidx.npy`` – ``int64[n_segments]``: for each segment, the ordinal
  of the sample (document) it belongs to, so a sample split over rows can be reassembled
  (``TokenShards.document_tokens``); writers that pass ``doc_index`` to ``add_row`` produce it.
* optionally, per shard ``NAME.lossmask.npy`` – ``uint8[rows, seq_len]`` (memory-mapped): 1 where the
  token is a training target (post-training: the assistant's answer), 0 where it is only context
  (the prompt) or padding; writers that pass ``loss_mask`` to ``add_row`` produce it and record
  ``"loss_mask": true`` and ``"tokens_target"`` (the ones) in ``meta.json``. ``labels_for`` honours
  it; shards without it train on every token, as before.

A document longer than the room left in a row continues in the next row as a new segment. A
training worker reads any row by its global index without loading the rest (``TokenShards.row``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT = "coderforge-tokens/1"
IGNORE_INDEX = -100


class TokenShardWriter:
    def __init__(self, out_dir: str | os.PathLike, seq_len: int, pad_id: int, eos_id: int,
                 vocab_size: int, rows_per_shard: int = 4096, extra_meta: dict | None = None):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.seq_len, self.pad_id, self.eos_id, self.vocab_size = seq_len, pad_id, eos_id, vocab_size
        self.rows_per_shard = rows_per_shard
        self.extra_meta = dict(extra_meta or {})
        self._rows: list[np.ndarray] = []
        self._lens: list[list[int]] = []
        self._docidx: list[list[int]] | None = None
        self._masks: list[np.ndarray] | None = None
        self._shards: list[dict] = []
        self.tokens_real = 0
        self.tokens_pad = 0
        self.tokens_target = 0

    def add_row(self, tokens, doc_lens: list[int], doc_index: list[int] | None = None,
                loss_mask=None) -> None:
        """One row: ``tokens`` (the segments back to back), their lengths, optionally each segment's
        sample ordinal and a per-token loss mask (1 = a training target) as long as ``tokens``."""
        tokens = np.asarray(tokens, dtype=np.uint32)
        if doc_index is not None and len(doc_index) != len(doc_lens):
            raise ValueError(f"doc_index {doc_index} does not match segments {doc_lens}")
        first = not self._shards and not self._rows
        if self._docidx is None and doc_index is not None and first:
            self._docidx = []
        if (self._docidx is not None) != (doc_index is not None):
            raise ValueError("doc_index must be given for every row of a shard directory or for none")
        used = int(sum(doc_lens))
        if used > self.seq_len or len(tokens) != used:
            raise ValueError(f"row of {len(tokens)} tokens with segments {doc_lens} (seq_len {self.seq_len})")
        if any(n <= 0 for n in doc_lens):
            raise ValueError(f"empty document segment in {doc_lens}")
        mask = self._mask_row(loss_mask, used, first)
        row = np.full(self.seq_len, self.pad_id, dtype=np.uint32)
        row[:used] = tokens
        self._rows.append(row)
        self._lens.append([int(n) for n in doc_lens])
        if self._docidx is not None:
            self._docidx.append([int(i) for i in doc_index])
        if mask is not None:
            self._masks.append(mask)
            self.tokens_target += int(mask.sum())
        self.tokens_real += used
        self.tokens_pad += self.seq_len - used
        if len(self._rows) >= self.rows_per_shard:
            self._flush()

    def _mask_row(self, loss_mask, used: int, first: bool) -> np.ndarray | None:
        """The row's loss mask padded to ``seq_len`` (padding is never a target), or None without one."""
        if self._masks is None and loss_mask is not None and first:
            self._masks = []
        if (self._masks is not None) != (loss_mask is not None):
            raise ValueError("loss_mask must be given for every row of a shard directory or for none")
        if loss_mask is None:
            return None
        mask = np.asarray(loss_mask)
        if mask.shape != (used,) or not np.isin(mask, (0, 1)).all():
            raise ValueError(f"loss_mask must be {used} zeros and ones, got shape {mask.shape}")
        full = np.zeros(self.seq_len, dtype=np.uint8)
        full[:used] = mask
        return full

    def _flush(self) -> None:
        if not self._rows:
            return
        name = f"shard-{len(self._shards):05d}"
        lens = np.asarray([n for row in self._lens for n in row], dtype=np.int32)
        ptr = np.zeros(len(self._lens) + 1, dtype=np.int64)
        ptr[1:] = np.cumsum([len(row) for row in self._lens])
        arrays = [("tokens", np.stack(self._rows)), ("doclens", lens), ("rowptr", ptr)]
        if self._docidx is not None:
            arrays.append(("docidx", np.asarray([i for row in self._docidx for i in row], dtype=np.int64)))
            self._docidx = []
        if self._masks is not None:
            arrays.append(("lossmask", np.stack(self._masks)))
            self._masks = []
        for suffix, arr in arrays:
            tmp = self.out_dir / f".{name}.{suffix}.npy.tmp"
            with open(tmp, "wb") as fh:
                np.save(fh, arr)
            os.replace(tmp, self.out_dir / f"{name}.{suffix}.npy")
        self._shards.append({"name": name, "rows": len(self._rows)})
        self._rows, self._lens = [], []

    def close(self) -> dict:
        self._flush()
        total = self.tokens_real + self.tokens_pad
        meta = {
            "format": FORMAT,
            "seq_len": self.seq_len,
            "num_rows": sum(s["rows"] for s in self._shards),
            "dtype": "uint32",
            "pad_id": self.pad_id,
            "eos_id": self.eos_id,
            "vocab_size": self.vocab_size,
            "tokens_real": self.tokens_real,
            "tokens_pad": self.tokens_pad,
            "padding_fraction": (self.tokens_pad / total) if total else 0.0,
            "shards": self._shards,
            **self.extra_meta,
        }
        if self._masks is not None:
            meta.update(loss_mask=True, tokens_target=self.tokens_target)
        tmp = self.out_dir / ".meta.json.tmp"
        tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, self.out_dir / "meta.json")
        return meta


@dataclass
class Row:
    tokens: np.ndarray  # uint32[seq_len]
    doc_lens: np.ndarray  # int32[n_segments]
    doc_index: np.ndarray | None = None  # int64[n_segments], when the writer recorded it
    loss_mask: np.ndarray | None = None  # uint8[seq_len], when the writer recorded it (1 = a target)


class TokenShards:
    """Random access to packed rows by global index (memory-mapped)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.meta = json.loads((self.path / "meta.json").read_text())
        if self.meta.get("format") != FORMAT:
            raise ValueError(f"{self.path}: not a {FORMAT} token shard directory")
        self.seq_len = int(self.meta["seq_len"])
        self.pad_id = int(self.meta["pad_id"])
        self.eos_id = int(self.meta["eos_id"])
        self._tokens, self._lens, self._ptr, self._docidx, self._masks = [], [], [], [], []
        starts = [0]
        for shard in self.meta["shards"]:
            name = shard["name"]
            didx = self.path / f"{name}.docidx.npy"
            self._docidx.append(np.load(didx) if didx.exists() else None)
            mask = self.path / f"{name}.lossmask.npy"
            self._masks.append(np.load(mask, mmap_mode="r") if mask.exists() else None)
            self._tokens.append(np.load(self.path / f"{name}.tokens.npy", mmap_mode="r"))
            self._lens.append(np.load(self.path / f"{name}.doclens.npy"))
            self._ptr.append(np.load(self.path / f"{name}.rowptr.npy"))
            starts.append(starts[-1] + int(shard["rows"]))
        self._starts = np.asarray(starts, dtype=np.int64)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def row(self, index: int) -> Row:
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} out of range (0..{len(self) - 1})")
        s = int(np.searchsorted(self._starts, index, side="right") - 1)
        local = index - int(self._starts[s])
        ptr = self._ptr[s]
        a, b = ptr[local], ptr[local + 1]
        didx, mask = self._docidx[s], self._masks[s]
        return Row(np.asarray(self._tokens[s][local]), self._lens[s][a:b],
                   None if didx is None else didx[a:b], None if mask is None else np.asarray(mask[local]))

    @property
    def has_doc_index(self) -> bool:
        return bool(self._docidx) and all(d is not None for d in self._docidx)

    def document_tokens(self) -> dict[int, np.ndarray]:
        """Every sample's tokens reassembled from its segments across rows (needs ``docidx``)."""
        if not self.has_doc_index:
            raise ValueError(f"{self.path}: shards carry no per-segment document index")
        parts: dict[int, list[np.ndarray]] = {}
        for i in range(len(self)):
            row = self.row(i)
            start = 0
            for n, d in zip(row.doc_lens, row.doc_index, strict=True):
                parts.setdefault(int(d), []).append(row.tokens[start:start + int(n)])
                start += int(n)
        return {d: np.concatenate(p) for d, p in parts.items()}


def position_ids(doc_lens, seq_len: int) -> np.ndarray:
    """Positions restarting at 0 for every document segment; padding continues from 0 too."""
    pos = np.zeros(seq_len, dtype=np.int64)
    start = 0
    for n in list(doc_lens) + [seq_len - int(np.sum(doc_lens))]:
        if n > 0:
            pos[start:start + n] = np.arange(n)
            start += n
    return pos


def labels_for(row: Row, seq_len: int) -> np.ndarray:
    """Next-token labels (unshifted, HF convention) that never cross a document boundary or hit padding.

    ``labels[t]`` is the target for predicting from positions < t within the same segment: the
    first token of each segment gets ``IGNORE_INDEX`` (it would be predicted from the previous
    document), as does padding, and, where the row has a loss mask, every token whose mask is 0.
    """
    labels = np.full(seq_len, IGNORE_INDEX, dtype=np.int64)
    start = 0
    for n in row.doc_lens:
        n = int(n)
        labels[start + 1:start + n] = row.tokens[start + 1:start + n]
        start += n
    if row.loss_mask is not None:
        labels[np.asarray(row.loss_mask[:seq_len]) == 0] = IGNORE_INDEX
    return labels


def sample_order(num_rows: int, seed: int, epoch: int = 0) -> np.ndarray:
    """Deterministic shuffle of row indices for an epoch."""
    rng = np.random.default_rng([seed, epoch])
    return rng.permutation(num_rows)


class ResumableSampler:
    """The training order of a shard directory's rows as an endless, resumable stream.

    Global sample index ``i`` (0, 1, 2, …) maps to row ``sample_order(num_rows, seed, epoch)[pos]``
    with ``epoch, pos = divmod(i, num_rows)``: every row once per epoch, a new shuffle each epoch.
    With ``world > 1`` a worker of rank ``r`` takes the global indices ``i ≡ r (mod world)``.
    ``state_dict()`` / ``load_state_dict()`` (or ``start=``) resume exactly where a run stopped.
    """

    def __init__(self, num_rows: int, seed: int, start: int = 0, rank: int = 0, world: int = 1):
        if num_rows <= 0:
            raise ValueError("no rows to sample")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside world {world}")
        self.num_rows, self.seed, self.rank, self.world = num_rows, seed, rank, world
        self.next_index = start
        self._epoch, self._order = -1, None

    def row_of(self, index: int) -> int:
        epoch, pos = divmod(index, self.num_rows)
        if epoch != self._epoch:
            self._epoch, self._order = epoch, sample_order(self.num_rows, self.seed, epoch)
        return int(self._order[pos])

    def __iter__(self):
        return self

    def __next__(self) -> tuple[int, int]:
        """(global sample index, row index) of this worker's next sample."""
        i = self.next_index
        while i % self.world != self.rank:
            i += 1
        self.next_index = i + 1
        return i, self.row_of(i)

    def take(self, n: int) -> list[tuple[int, int]]:
        return [next(self) for _ in range(n)]

    def state_dict(self) -> dict:
        return {"next_index": self.next_index, "seed": self.seed, "num_rows": self.num_rows}

    def load_state_dict(self, state: dict) -> None:
        if state["num_rows"] != self.num_rows or state["seed"] != self.seed:
            raise ValueError(f"sampler state {state} does not match rows={self.num_rows} seed={self.seed}")
        self.next_index = int(state["next_index"])
