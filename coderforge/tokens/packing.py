"""Pack step: documents → training samples → token ids → fixed-length rows in token shards.

* Document text is encoded with the tokenizer's *plain* model (its added tokens removed), so a file
  that happens to contain the text ``<|endoftext|>`` or ``<|fim_prefix|>`` never produces a control
  token; control tokens only enter through the sample formats (FIM, repo-level) as ids.
* Every sample ends with ``<|endoftext|>`` (the eos id).
* Held-out documents are chosen by a hash of the document id (``data.heldout_fraction``), so the
  split is the same on every run and every machine; held-out samples are never FIM'd.
* Packing (``pack.packing``): ``best_fit`` keeps a sample whole in one row when it fits, placing it
  in the open row with the least room that still takes it (a bounded set of open rows), and cuts
  samples longer than a row into full rows plus a remainder; the rows still open at the end are
  re-packed back to back, so padding stays in the last row; ``stream`` concatenates samples and
  cuts rows at ``seq_len`` exactly (samples continue in the next row as a new segment). Both record
  every segment's length and sample ordinal, so every sample's tokens can be reassembled from the
  shards (``TokenShards.document_tokens``) and training masks attention per segment.
* ``documents.parquet`` in each split maps sample ordinals to document ids/paths and token counts.
"""

from __future__ import annotations

import bisect
import hashlib
import io
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
from coderforge.text_tokenizer import plain_text_tokenizer
from coderforge.tokens import formats as F
from coderforge.tokens.encode import Sample, TextEncoder, batches, encode_samples, encode_texts
from coderforge.tokens.shards import TokenShardWriter
from coderforge.tokens.tokenizer import TokenizerInfo, tokenizer_info

log = logging.getLogger(__name__)

ENCODE_BATCH = 256


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
        """Flush. Rows still open in best-fit mode are re-packed back to back (stream mode), so only
        the very last row of the output carries more than a sliver of padding."""
        if self._bins:
            leftovers = [seg for b in sorted(self._bins) for seg in self._bins[b]]
            self._bins, self._keys = {}, []
            for tokens, sample in leftovers:
                self._add_stream(tokens, sample)
        if self._cur:
            self._emit(self._cur)
            self._cur, self._cur_used = [], 0


@dataclass
class SplitOutput:
    writer: TokenShardWriter
    packer: Packer
    index: list[dict] = field(default_factory=list)


def _write_index(path: Path, rows: list[dict]) -> None:
    table = pa.Table.from_pylist(rows, schema=pa.schema([
        ("sample", pa.int64()), ("id", pa.string()), ("repo", pa.string()), ("path", pa.string()),
        ("tokens", pa.int64()), ("format", pa.string()), ("docs", pa.int64()),
    ]))
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    path.write_bytes(buf.getvalue())


def read_index(split_dir: str | Path) -> list[dict]:
    return pq.read_table(Path(split_dir) / "documents.parquet").to_pylist()


def fim_seed(cfg) -> int:
    return cfg.fim.seed if cfg.fim.seed is not None else cfg.run.seed


def file_level_samples(cfg, docs: Iterable) -> Iterator[Sample]:
    """One sample per document; training documents are FIM'd at ``fim.rate`` (PSM/SPM)."""
    frac, seed = cfg.data.heldout_fraction, fim_seed(cfg)
    for doc in docs:
        split = "heldout" if is_heldout(doc.id, frac) else "train"
        if split == "train" or cfg.fim.apply_to_heldout:
            pieces, fmt = F.file_sample(doc.content, doc.id, seed, cfg.fim.rate, cfg.fim.spm_rate)
        else:
            pieces, fmt = [doc.content, F.EOT], "plain"
        yield Sample(pieces, split, fmt, [doc], doc.id, doc.repo, doc.path)


def repo_level_samples(cfg, docs: Iterable, tok: Tokenizer | TextEncoder) -> Iterator[Sample | tuple]:
    """Repo-level samples (recipe.md §3.2): each repository's files in dependency order
    (``coderforge.data.repo_order``), cut at file boundaries into samples that fit
    ``repo.seq_len`` tokens where possible; the last file of a sample is FIM'd at
    ``repo.fim_rate``. Held-out is decided per sample (``repo#k``) by hash; when the fraction is
    positive but no sample falls under it (few repositories), the sample with the smallest hash is
    held out, so the held-out split is never empty. Held-out samples are never FIM'd. Yields
    ``("drop", doc, reason)`` for documents that cannot enter a sample."""
    from coderforge.data.repo_order import order_files

    by_repo: dict[str, list] = {}
    for doc in docs:
        by_repo.setdefault(doc.repo, []).append(doc)
    seed, budget = fim_seed(cfg), cfg.repo.seq_len
    planned: list[tuple[str, int, list[str], dict]] = []
    for repo in sorted(by_repo):
        rdocs = {}
        for d in by_repo[repo]:
            if not d.content:
                yield ("drop", d, "empty_file")
            elif d.path in rdocs:
                yield ("drop", d, f"duplicate_path:{rdocs[d.path].id}")
            else:
                rdocs[d.path] = d
        if not rdocs:
            continue
        order = order_files({p: d.content for p, d in rdocs.items()}, name=repo).paths
        sizes = [len(x) for x in encode_texts(tok, [f"{p}\n{rdocs[p].content}" for p in order])]
        header = len(encode_texts(tok, [f"{repo}\n"])[0]) + 2  # + <|repo_name|>, <|endoftext|>
        cur, used, k = [], header, 0
        for p, n in zip(order, sizes, strict=True):
            cost = n + 2  # <|file_sep|> and the joining newline
            if cur and used + cost > budget - cfg.repo.fim_reserve_tokens:
                planned.append((repo, k, cur, rdocs))
                cur, used, k = [], header, k + 1
            cur.append(p)
            used += cost
        if cur:
            planned.append((repo, k, cur, rdocs))
    frac = cfg.data.heldout_fraction
    held = {(r, k) for r, k, _, _ in planned if is_heldout(f"repo:{r}#{k}", frac)}
    if frac > 0 and not held and len(planned) > 1:
        r, k, _, _ = min(planned, key=lambda c: heldout_unit(f"repo:{c[0]}#{c[1]}"))
        held = {(r, k)}
    for repo, k, paths, rdocs in planned:
        split = "heldout" if (repo, k) in held else "train"
        rng = F.doc_rng(seed, f"{repo}\x00{k}", salt="repo-fim")
        fim = split == "train" and rng.random() < cfg.repo.fim_rate
        pieces = F.repo_sample(repo, [(p, rdocs[p].content) for p in paths], fim_last=fim, rng=rng)
        yield Sample(pieces, split, "repo_fim" if fim else "repo", [rdocs[p] for p in paths],
                     f"{repo}#{k}", repo, "\n".join(paths))


def pack_documents(cfg, docs: Iterable, tokenizer_dir: str | Path, out_dir: Path, ledger: Ledger,
                   stage: str = "file") -> dict:
    """Format, tokenise and pack ``docs`` into ``out_dir/train`` and ``out_dir/heldout``.

    ``stage="file"``: file-level samples (FIM at ``fim.rate``), rows of ``pack.seq_len``;
    ``stage="repo"``: repo-level samples in dependency order, rows of ``repo.seq_len``.
    """
    if stage not in ("file", "repo"):
        raise ValueError(f"unknown pack stage {stage!r} (file or repo)")
    info: TokenizerInfo = tokenizer_info(tokenizer_dir)
    tok = TextEncoder(plain_text_tokenizer(tokenizer_dir))
    pc = cfg.pack
    seq_len = pc.seq_len if stage == "file" else cfg.repo.seq_len
    needed = [F.EOT] + ([F.PRE, F.MID, F.SUF] if (cfg.fim.rate > 0 or stage == "repo") else []) + \
        ([F.REPO, F.SEP] if stage == "repo" else [])
    missing = [t for t in needed if t not in info.control_ids and t != F.EOT]
    if missing:
        raise ValueError(f"tokenizer at {tokenizer_dir} lacks control tokens {missing} needed by stage {stage}")
    ctrl = dict(info.control_ids)
    ctrl[F.EOT] = info.eos_id
    meta = {"stage": stage, "packing": pc.packing, "tokenizer_vocab_size": info.vocab_size,
            "fim_rate": cfg.fim.rate if stage == "file" else cfg.repo.fim_rate,
            "fim_spm_rate": cfg.fim.spm_rate, "fim_seed": fim_seed(cfg)}
    splits = {}
    for name in ("train", "heldout"):
        writer = TokenShardWriter(out_dir / name, seq_len, info.pad_id, info.eos_id, info.vocab_size,
                                  rows_per_shard=pc.rows_per_shard, extra_meta={**meta, "split": name})
        splits[name] = SplitOutput(writer, Packer(writer, seq_len, pc.packing, pc.max_open_rows))
    formats: dict[str, int] = {}
    stream = file_level_samples(cfg, docs) if stage == "file" else repo_level_samples(cfg, docs, tok)
    for batch in batches(stream, ENCODE_BATCH):
        samples = []
        for item in batch:
            if isinstance(item, tuple):
                ledger.drop(item[1], item[2])
            else:
                samples.append(item)
        for s, ids in zip(samples, encode_samples(tok, samples, ctrl) if samples else [], strict=True):
            if isinstance(ids, Exception):
                for doc in s.docs:
                    ledger.quarantine(doc.id, f"{type(ids).__name__}: {ids}", doc.repo, doc.path,
                                      reason="tokenisation_error")
                continue
            if ids is None:
                for doc in s.docs:
                    ledger.drop(doc, "empty_after_tokenisation")
                continue
            split = splits[s.split]
            ordinal = len(split.index)
            split.packer.add(ids, ordinal)
            split.index.append({"sample": ordinal, "id": s.id, "repo": s.repo, "path": s.path,
                                "tokens": len(ids), "format": s.format, "docs": len(s.docs)})
            formats[s.format] = formats.get(s.format, 0) + 1
            for doc in s.docs:
                ledger.keep(doc, detail=f"{s.split}:{s.format}")
    out = {}
    for name, split in splits.items():
        split.packer.close()
        split.writer.extra_meta["samples"] = len(split.index)
        split.writer.extra_meta["split_samples"] = split.packer.split_samples
        out[name] = split.writer.close()
        _write_index(out_dir / name / "documents.parquet", split.index)
    out["formats"] = formats
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
    for fmt, n in metas["formats"].items():
        metrics[f"samples_{fmt}"] = n
    return StepResult(ledger=summary, metrics=metrics,
                      info={"stage": stage, "seq_len": tr["seq_len"], "packing": cfg.pack.packing,
                            "formats": metas["formats"]})
