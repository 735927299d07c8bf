"""Pack step: documents → training samples → token ids → fixed-length rows in token shards.

* Document text is encoded with the tokenizer's *plain* model (its added tokens removed), so a file
  that happens to contain the text ``<|endoftext|>`` or ``<|fim_prefix|>`` never produces a control
  token; control tokens only enter through the sample formats (FIM, repo-level) as ids.
* Every sample ends with ``<|endoftext|>`` (the eos id).
* Held-out documents are chosen by a hash of the document id (``data.heldout_fraction``), so the
  split is the same on every run and every machine; held-out samples are never FIM'd.
* Packing (``pack.packing``): ``best_fit`` keeps a sample whole in one row when it fits, placing it
  in the open row with the least room that still takes it (a bounded set of open rows), and cuts
  samples longer than a row into full rows plus a remainder; ``stream`` concatenates samples and
  cuts rows at ``seq_len`` exactly (samples continue in the next row as a new segment). Both record
  every segment's length and sample ordinal, so every sample's tokens can be reassembled from the
  shards (``TokenShards.document_tokens``) and training masks attention per segment.
* ``documents.parquet`` in each split maps sample ordinals to document ids/paths and token counts.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import json
import logging
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tokenizers import Tokenizer

from coderforge import records, storage
from coderforge.ledger import Ledger
from coderforge.steps import StepResult
from coderforge.tokens.shards import TokenShardWriter
from coderforge.tokens.tokenizer import TokenizerInfo, tokenizer_info

log = logging.getLogger(__name__)

ENCODE_BATCH = 256


def plain_text_tokenizer(tokenizer_dir: str | Path) -> Tokenizer:
    """The tokenizer without its added tokens: text never turns into control tokens."""
    path = Path(tokenizer_dir)
    data = json.loads((path / "tokenizer.json" if path.is_dir() else path).read_text())
    data["added_tokens"] = []
    return Tokenizer.from_str(json.dumps(data))


def heldout_unit(doc_id: str) -> float:
    """A number in [0, 1) fixed by the document id: documents below the held-out fraction are held out."""
    h = hashlib.blake2b(doc_id.encode(), digest_size=8, person=b"cf-heldout").digest()
    return int.from_bytes(h, "big") / 2.0**64


def is_heldout(doc_id: str, fraction: float) -> bool:
    return fraction > 0 and heldout_unit(doc_id) < fraction


class Packer:
    """Packs token samples into rows of ``seq_len`` and writes them with ``writer``."""

    def __init__(self, writer: TokenShardWriter, seq_len: int, mode: str = "best_fit", max_open: int = 512):
        if mode not in ("best_fit", "stream"):
            raise ValueError(f"unknown packing mode {mode!r}")
        self.writer, self.seq_len, self.mode, self.max_open = writer, seq_len, mode, max_open
        # stream mode: the row being filled
        self._cur: list[tuple[np.ndarray, int]] = []
        self._cur_used = 0
        # best-fit mode: open rows keyed by (room left, creation number)
        self._keys: list[tuple[int, int]] = []
        self._bins: dict[int, list[tuple[np.ndarray, int]]] = {}
        self._next_bin = 0
        self.samples = 0
        self.split_samples = 0

    def add(self, tokens: np.ndarray, sample: int) -> None:
        n = len(tokens)
        if n == 0:
            raise ValueError("empty sample")
        self.samples += 1
        if self.mode == "stream":
            self._add_stream(tokens, sample)
            return
        if n > self.seq_len:
            self.split_samples += 1
            full = (n // self.seq_len) * self.seq_len
            for start in range(0, full, self.seq_len):
                self._emit([(tokens[start:start + self.seq_len], sample)])
            tokens = tokens[full:]
            if len(tokens) == 0:
                return
        self._add_best_fit(tokens, sample)

    def _add_stream(self, tokens: np.ndarray, sample: int) -> None:
        pos = 0
        if len(tokens) > self.seq_len - self._cur_used:
            self.split_samples += 1
        while pos < len(tokens):
            take = min(len(tokens) - pos, self.seq_len - self._cur_used)
            self._cur.append((tokens[pos:pos + take], sample))
            self._cur_used += take
            pos += take
            if self._cur_used == self.seq_len:
                self._emit(self._cur)
                self._cur, self._cur_used = [], 0

    def _add_best_fit(self, tokens: np.ndarray, sample: int) -> None:
        n = len(tokens)
        i = bisect.bisect_left(self._keys, (n, -1))
        if i < len(self._keys):
            room, b = self._keys.pop(i)
        else:
            room, b = self.seq_len, self._next_bin
            self._next_bin += 1
            self._bins[b] = []
        self._bins[b].append((tokens, sample))
        room -= n
        if room == 0:
            self._emit(self._bins.pop(b))
        else:
            bisect.insort(self._keys, (room, b))
            if len(self._keys) > self.max_open:
                _, fullest = self._keys.pop(0)
                self._emit(self._bins.pop(fullest))

    def _emit(self, parts: list[tuple[np.ndarray, int]]) -> None:
        tokens = np.concatenate([p for p, _ in parts]) if len(parts) > 1 else parts[0][0]
        self.writer.add_row(tokens, [len(p) for p, _ in parts], [s for _, s in parts])

    def close(self) -> None:
        if self._cur:
            self._emit(self._cur)
            self._cur, self._cur_used = [], 0
        for b in sorted(self._bins):
            self._emit(self._bins[b])
        self._bins, self._keys = {}, []


@dataclass
class SplitOutput:
    writer: TokenShardWriter
    packer: Packer
    index: list[dict] = field(default_factory=list)


def encode_texts(tok: Tokenizer, texts: list[str]) -> list[np.ndarray]:
    return [np.asarray(e.ids, dtype=np.uint32) for e in tok.encode_batch_fast(texts, add_special_tokens=False)]


def _batches(it: Iterable, size: int) -> Iterator[list]:
    batch = []
    for x in it:
        batch.append(x)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _write_index(path: Path, rows: list[dict]) -> None:
    table = pa.Table.from_pylist(rows, schema=pa.schema([
        ("sample", pa.int64()), ("id", pa.string()), ("repo", pa.string()), ("path", pa.string()),
        ("tokens", pa.int64()), ("format", pa.string()),
    ]))
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    path.write_bytes(buf.getvalue())


def read_index(split_dir: str | Path) -> list[dict]:
    return pq.read_table(Path(split_dir) / "documents.parquet").to_pylist()


def pack_documents(cfg, docs: Iterable, tokenizer_dir: str | Path, out_dir: Path, ledger: Ledger,
                   stage: str = "file") -> dict:
    """Tokenise, format and pack ``docs`` into ``out_dir/train`` and ``out_dir/heldout``."""
    info: TokenizerInfo = tokenizer_info(tokenizer_dir)
    tok = plain_text_tokenizer(tokenizer_dir)
    pc = cfg.pack
    eos = np.asarray([info.eos_id], dtype=np.uint32)
    meta = {"stage": stage, "packing": pc.packing, "tokenizer_vocab_size": info.vocab_size}
    splits = {}
    for name in ("train", "heldout"):
        writer = TokenShardWriter(out_dir / name, pc.seq_len, info.pad_id, info.eos_id, info.vocab_size,
                                  rows_per_shard=pc.rows_per_shard, extra_meta={**meta, "split": name})
        splits[name] = SplitOutput(writer, Packer(writer, pc.seq_len, pc.packing, pc.max_open_rows))
    frac = cfg.data.heldout_fraction
    for batch in _batches(docs, ENCODE_BATCH):
        try:
            encoded = encode_texts(tok, [d.content for d in batch])
        except Exception:  # one bad document must not sink the batch: retry one by one
            encoded = []
            for d in batch:
                try:
                    encoded.append(encode_texts(tok, [d.content])[0])
                except Exception as exc:  # noqa: BLE001 - recorded in the ledger
                    encoded.append(exc)
        for doc, ids in zip(batch, encoded, strict=True):
            if isinstance(ids, Exception):
                ledger.quarantine(doc.id, f"{type(ids).__name__}: {ids}", doc.repo, doc.path,
                                  reason="tokenisation_error")
                continue
            if len(ids) == 0:
                ledger.drop(doc, "empty_after_tokenisation")
                continue
            split = splits["heldout" if is_heldout(doc.id, frac) else "train"]
            sample = np.concatenate([ids, eos])
            ordinal = len(split.index)
            split.packer.add(sample, ordinal)
            split.index.append({"sample": ordinal, "id": doc.id, "repo": doc.repo, "path": doc.path,
                                "tokens": len(sample), "format": "plain"})
            ledger.keep(doc, detail="heldout" if split is splits["heldout"] else "train")
    out = {}
    for name, split in splits.items():
        split.packer.close()
        split.writer.extra_meta["samples"] = len(split.index)
        split.writer.extra_meta["split_samples"] = split.packer.split_samples
        out[name] = split.writer.close()
        _write_index(out_dir / name / "documents.parquet", split.index)
    return out


def run_pack(cfg, docs_dir: str, tokenizer_dir: str, out_dir: str, run, stage: str = "file") -> StepResult:
    """Pack ``docs_dir`` into token shards at ``out_dir/train`` and ``out_dir/heldout``."""
    ledger = Ledger("pack")
    with tempfile.TemporaryDirectory() as tmp:
        tok_local = tokenizer_dir
        if storage.is_s3(tokenizer_dir):
            tok_local = storage.download_dir(tokenizer_dir, Path(tmp) / "tokenizer")
        else:
            tok_local = storage.local_path(tokenizer_dir)
        local_out = Path(tmp) / "out" if storage.is_s3(out_dir) else storage.local_path(out_dir)
        metas = pack_documents(cfg, records.read_documents(docs_dir), tok_local, local_out, ledger, stage)
        if storage.is_s3(out_dir):
            storage.upload_dir(local_out, out_dir)
    summary = ledger.close(out_dir, expected_inputs=records.count_documents(docs_dir))
    tr, ho = metas["train"], metas["heldout"]
    real = tr["tokens_real"] + ho["tokens_real"]
    pad = tr["tokens_pad"] + ho["tokens_pad"]
    metrics = {
        "tokens": real,
        "rows": tr["num_rows"] + ho["num_rows"],
        "padding_fraction": pad / (real + pad) if real + pad else 0.0,
        "train_tokens": tr["tokens_real"], "train_rows": tr["num_rows"],
        "train_padding_fraction": tr["padding_fraction"],
        "heldout_tokens": ho["tokens_real"], "heldout_rows": ho["num_rows"],
        "samples": tr["samples"] + ho["samples"], "split_samples": tr["split_samples"] + ho["split_samples"],
    }
    return StepResult(ledger=summary, metrics=metrics,
                      info={"stage": stage, "seq_len": cfg.pack.seq_len, "packing": cfg.pack.packing})
