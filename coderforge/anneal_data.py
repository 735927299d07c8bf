"""The ``pack_anneal`` step: the instruction rows mixed into the anneal phase (recipe.md §9.6, Abacus:
pretraining : SFT data 8 : 2, code : natural language 1 : 1 inside the SFT part).

Inputs: the instruction JSONL files of ``train.anneal.instruction_files`` (one ``{"messages": [...]}``
per line, the format of ``sft.files``, read by :func:`coderforge.posttrain.sft_data.file_samples`) and
the run's tokenizer. Each sample is rendered with the tokenizer's ChatML template
(:class:`coderforge.posttrain.sft_pack.ChatEncoder`: the template's default system turn where the
conversation has none; control tokens only as ids), followed by ``<|endoftext|>`` as every pretraining
sample is, and trained on every token like pretraining text (no loss mask). Samples are packed whole
(best fit decreasing) into rows of ``pack.seq_len``, each sample its own document segment, so
attention and positions restart per sample as in pretraining.

Code and natural-language samples go to separate row sets (``code/``, ``nl/``, token shards of
:mod:`coderforge.tokens.shards`, with ``samples.parquet``), so the training loader
(:mod:`coderforge.train.anneal`) can mix them at ``train.anneal.code_nl``. A file's ``kind`` says which
it holds; ``auto`` decides per sample: code when the sample names a language or an answer has a code
fence tagged with one (:func:`coderforge.posttrain.sft_data.guess_language`), else natural language.
The pretraining rows of the mix are not copied here: the loader reads them from the pretraining shards.

Ledger (one entry per non-blank input line): quarantined ``malformed`` (not a conversation, with the
error); dropped ``empty`` (no user or assistant text), ``not_in_mix`` (a kind ``code_nl`` gives no
share), ``contaminated:<bench>/<item>`` (the SFT decontamination of ``sft_data.decontaminate``),
``too_long`` (more than ``pack.seq_len`` tokens: never cut); every other sample kept as
``anneal:<kind>``.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np

from coderforge import storage
from coderforge.ledger import Ledger
from coderforge.posttrain import sft_data as D
from coderforge.posttrain.sft_pack import ChatEncoder, pack_rows, write_index
from coderforge.steps import StepResult
from coderforge.tokens.shards import TokenShardWriter
from coderforge.train.anneal import INSTRUCTION_SOURCES, META

ENCODE_BATCH = 512


def file_label(f) -> str:
    return f.name or f.path.rstrip("/").rsplit("/", 1)[-1]


def sample_kind(kind: str, s: D.ChatSample) -> str:
    """``code`` or ``nl``: the file's kind, or per sample (``auto``) whether it is about code."""
    if kind != "auto":
        return kind
    return "code" if D.guess_language(s) else "nl"


def collect(cfg, ledger: Ledger) -> tuple[list[tuple[D.ChatSample, str]], int]:
    """The usable samples with their kind, every other input recorded in ``ledger``; and the input count."""
    weights = cfg.train.anneal.source_weights()
    usable, inputs = [], 0
    for f in cfg.train.anneal.instruction_files:
        inputs += D.count_file_lines(f.path)
        for s in D.file_samples(f.path, file_label(f)):
            if isinstance(s, D.Bad):
                ledger.quarantine(s.id, s.error, s.repo, s.path, s.nbytes, reason="malformed")
            elif D.is_empty(s.messages):
                ledger.drop(s, "empty", "no user or no assistant text")
            elif weights.get(kind := sample_kind(f.kind, s), 0.0) <= 0:
                ledger.drop(s, "not_in_mix", f"train.anneal.code_nl gives {kind} no share")
            else:
                usable.append((s, kind))
    hits = D.decontaminate(cfg, [s for s, _ in usable])
    kept = []
    for s, kind in usable:
        hit = hits.get(s.id)
        if hit is None:
            kept.append((s, kind))
        else:
            ledger.drop(s, hit.reason, hit.detail)
    return kept, inputs


def write_rows(out: Path, samples: list[np.ndarray], seq_len: int, info, rows_per_shard: int, meta: dict) -> dict:
    """Pack token samples whole into rows of ``seq_len`` (one segment each); the shard meta."""
    writer = TokenShardWriter(out, seq_len, info.pad_id, info.eos_id, info.vocab_size, rows_per_shard=rows_per_shard,
                              extra_meta={**meta, "samples": len(samples)})
    for row in pack_rows([len(s) for s in samples], seq_len):
        writer.add_row(np.concatenate([samples[i] for i in row]), [len(samples[i]) for i in row], row)
    return writer.close()


def build_anneal_data(cfg, tokenizer_dir: str | Path, out_dir: Path, ledger: Ledger) -> dict:
    """Write ``out_dir/code`` and ``out_dir/nl`` (the kinds the mix weighs) and ``out_dir/anneal.json``;
    returns that meta plus ``expected_inputs`` (the ledger's balance)."""
    weights = cfg.train.anneal.source_weights()
    if not set(weights) & set(INSTRUCTION_SOURCES):
        raise ValueError("train.anneal.mix gives instructions no share: there are no anneal rows to build")
    enc = ChatEncoder(tokenizer_dir)
    seq_len = cfg.pack.seq_len
    kept, inputs = collect(cfg, ledger)
    by_kind: dict[str, list[tuple[D.ChatSample, np.ndarray]]] = {k: [] for k in INSTRUCTION_SOURCES if k in weights}
    for a in range(0, len(kept), ENCODE_BATCH):
        part = kept[a:a + ENCODE_BATCH]
        for (s, kind), (ids, _) in zip(part, enc.encode([s.messages for s, _ in part], False), strict=True):
            ids = np.append(ids, np.uint32(enc.info.eos_id))
            if len(ids) > seq_len:
                ledger.drop(s, "too_long", f"{len(ids)} tokens > pack.seq_len {seq_len}")
            else:
                by_kind[kind].append((s, ids))
    empty = [k for k, got in by_kind.items() if not got]
    if empty:
        raise ValueError(f"train.anneal: no {' or '.join(empty)} instruction sample left for the anneal mix "
                         f"(train.anneal.code_nl gives it a share; see the ledger for why)")
    fingerprint = hashlib.sha256()
    sources = {}
    for kind, got in by_kind.items():
        for s, _ in got:
            ledger.keep(s, detail=f"anneal:{kind}")
        meta = write_rows(out_dir / kind, [ids for _, ids in got], seq_len, enc.info, cfg.pack.rows_per_shard,
                          {"stage": "anneal", "source": kind, "default_system": enc.default_system})
        write_index(out_dir / kind / "samples.parquet", [
            {"sample": i, "id": s.id, "source": s.source, "tokens": len(ids), "targets": len(ids) - 1}
            for i, (s, ids) in enumerate(got)])
        fingerprint.update(kind.encode() + b"".join(ids.tobytes() for _, ids in got))
        sources[kind] = {"samples": len(got), "rows": meta["num_rows"], "tokens": meta["tokens_real"],
                         "padding_fraction": meta["padding_fraction"]}
    summary = {"seq_len": seq_len, "weights": weights, "sources": sources, "fingerprint": fingerprint.hexdigest()}
    (out_dir / META).write_text(json.dumps(summary, indent=2))
    return {**summary, "expected_inputs": inputs}


def run_pack_anneal(cfg, tokenizer_dir: str, out_dir: str, run) -> StepResult:
    """Build the anneal phase's instruction rows at ``out_dir`` (``code/``, ``nl/``, ``anneal.json``)."""
    ledger = Ledger("pack_anneal")
    with tempfile.TemporaryDirectory() as tmp:
        tok_local = (storage.download_dir(tokenizer_dir, Path(tmp) / "tokenizer") if storage.is_s3(tokenizer_dir)
                     else storage.local_path(tokenizer_dir))
        local_out = Path(tmp) / "out" if storage.is_s3(out_dir) else Path(storage.local_path(out_dir))
        built = build_anneal_data(cfg, tok_local, local_out, ledger)
        if storage.is_s3(out_dir):
            storage.upload_dir(local_out, out_dir)
    summary = ledger.close(out_dir, expected_inputs=built["expected_inputs"])
    metrics = {"instruction_share": cfg.train.anneal.instruction_share}
    for kind, got in built["sources"].items():
        metrics.update({f"{kind}_{k}": float(v) for k, v in got.items()})
    return StepResult(ledger=summary, metrics=metrics,
                      info={"seq_len": built["seq_len"], "weights": built["weights"],
                            "fingerprint": built["fingerprint"]})
