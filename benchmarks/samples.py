"""Training-sample throughput: tokenise + FIM + pack, ours vs a Hugging Face ``datasets`` baseline.

Same corpus, same tokenizer, same FIM decisions, one run, one core each
(``TOKENIZERS_PARALLELISM=false``, ``RAYON_NUM_THREADS=1``, ``num_proc=1``):

* **ours** — ``coderforge.tokens.packing.pack_documents``: FIM pieces per document (rate 0.5, PSM),
  ``tokenizers`` ``encode_batch_fast`` on the tokenizer's plain model, best-fit packing into rows of
  ``--seq-len`` with per-segment document boundaries, written as memory-mapped token shards.
* **baseline** — the ``run_clm.py`` recipe: ``Dataset.from_list`` → ``.map(fim, batched)`` producing the
  same FIM text → ``.map(tokenizer(...), batched)`` with the ``transformers`` fast tokenizer (control
  tokens matched as added tokens) + an ``<|endoftext|>`` per document → ``.map(group_texts, batched)``
  concatenating and cutting blocks of ``--seq-len`` (the remainder is dropped, no boundaries kept).

Tokens/s counts the tokens that end up in training rows. Results: ``benchmarks/results/samples.json``
and ``samples.md``.

    .venv/bin/python benchmarks/samples.py [--mb 20] [--seq-len 8192]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sysconfig
import tempfile
import time
from pathlib import Path

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from coderforge import records  # noqa: E402
from coderforge.config import load_recipe_text  # noqa: E402
from coderforge.ledger import Ledger  # noqa: E402
from coderforge.tokens import formats as F  # noqa: E402
from coderforge.tokens.packing import is_heldout, pack_documents  # noqa: E402
from coderforge.tokens.tokenizer import save_hf, train_bpe  # noqa: E402


def corpus(mb: float) -> list[records.Document]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    docs, total = [], 0
    for p in sorted(stdlib.rglob("*.py")):
        rel = p.relative_to(stdlib)
        if rel.parts[0] == "site-packages" or "__pycache__" in rel.parts:
            continue
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if not text:
            continue
        docs.append(records.Document(records.document_id("stdlib", rel.parts[0], rel.as_posix()), rel.parts[0],
                                     rel.as_posix(), "python", text, "stdlib"))
        total += len(text.encode())
        if total >= mb * 1e6:
            break
    return docs


def run_ours(cfg, docs, tok_dir: Path, out: Path) -> dict:
    ledger = Ledger("bench")
    t0, c0 = time.perf_counter(), time.process_time()
    metas = pack_documents(cfg, iter(docs), tok_dir, out, ledger, stage="file")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    real = metas["train"]["tokens_real"] + metas["heldout"]["tokens_real"]
    pad = metas["train"]["tokens_pad"] + metas["heldout"]["tokens_pad"]
    return {"seconds": wall, "cpu_seconds": cpu, "tokens": real, "tokens_per_s": real / wall,
            "padding_fraction": pad / (real + pad), "rows": metas["train"]["num_rows"] + metas["heldout"]["num_rows"],
            "documents_whole_or_split_with_boundaries": True, "formats": metas["formats"]}


def run_baseline(cfg, docs, tok_dir: Path, cache: Path) -> dict:
    import datasets
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    seq_len, seed, rate = cfg.pack.seq_len, cfg.run.seed, cfg.fim.rate
    frac = cfg.data.heldout_fraction

    def fim(batch):
        texts = []
        for doc_id, content in zip(batch["id"], batch["content"], strict=True):
            if is_heldout(doc_id, frac):
                texts.append(content)
            else:
                pieces, _ = F.file_sample(content, doc_id, seed, rate, cfg.fim.spm_rate)
                texts.append(F.render(pieces[:-1]))
        return {"text": texts}

    def tokenize(batch):
        enc = tok(batch["text"], add_special_tokens=False)
        return {"input_ids": [ids + [tok.eos_token_id] for ids in enc["input_ids"]]}

    def group_texts(batch):
        concat = [t for ids in batch["input_ids"] for t in ids]
        total = (len(concat) // seq_len) * seq_len
        return {"input_ids": [concat[i:i + seq_len] for i in range(0, total, seq_len)]}

    t0, c0 = time.perf_counter(), time.process_time()
    ds = datasets.Dataset.from_list([{"id": d.id, "content": d.content} for d in docs])
    ds = ds.map(fim, batched=True, remove_columns=ds.column_names, cache_file_name=str(cache / "fim.arrow"))
    ds = ds.map(tokenize, batched=True, remove_columns=["text"], cache_file_name=str(cache / "tok.arrow"))
    ds = ds.map(group_texts, batched=True, batch_size=1000, cache_file_name=str(cache / "grouped.arrow"))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rows = len(ds)
    kept = rows * seq_len
    return {"seconds": wall, "cpu_seconds": cpu, "tokens": kept, "tokens_per_s": kept / wall,
            "padding_fraction": 0.0, "rows": rows, "documents_whole_or_split_with_boundaries": False}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=20.0)
    ap.add_argument("--seq-len", type=int, default=8192)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--out", default="benchmarks/results/samples.json")
    args = ap.parse_args()
    docs = corpus(args.mb)
    nbytes = sum(len(d.content.encode()) for d in docs)
    cfg = load_recipe_text(f"data: {{sources: [{{uri: /x}}], heldout_fraction: 0.01}}\n"
                           f"pack: {{seq_len: {args.seq_len}, rows_per_shard: 1024}}\nfim: {{rate: 0.5}}\n")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tok = train_bpe((d.content for d in docs[:2000]), args.vocab)
        save_hf(tok, tmp / "tok")
        # alternate the order over two rounds each so neither side always runs on a warm cache
        res_ours, res_base = [], []
        for r in range(2):
            for name in (("ours", "base") if r == 0 else ("base", "ours")):
                out = tmp / f"{name}{r}"
                out.mkdir()
                if name == "ours":
                    res_ours.append(run_ours(cfg, docs, tmp / "tok", out))
                else:
                    res_base.append(run_baseline(cfg, docs, tmp / "tok", out))
    ours = min(res_ours, key=lambda x: x["seconds"])
    base = min(res_base, key=lambda x: x["seconds"])
    result = {
        "benchmark": "tokenise + FIM (rate 0.5, PSM) + pack, one core each, best of 2 rounds",
        "corpus": {"source": "Python standard library *.py (site-packages excluded)", "docs": len(docs),
                   "mb": round(nbytes / 1e6, 2)},
        "seq_len": args.seq_len, "vocab_size": args.vocab,
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count()},
        "ours": ours, "baseline_hf_datasets_map_group_texts": base,
        "speedup_tokens_per_s": ours["tokens_per_s"] / base["tokens_per_s"],
        "speedup_wall": base["seconds"] / ours["seconds"],
        "goal": "speedup >= 2 with ours.padding_fraction <= 0.005",
    }
    result["goal_met"] = result["speedup_tokens_per_s"] >= 2 and ours["padding_fraction"] <= 0.005
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    md = Path(args.out).with_suffix(".md")
    md.write_text(
        f"# Training-sample throughput ({time.strftime('%Y-%m-%d')})\n\n"
        f"Corpus: {len(docs)} stdlib files, {nbytes / 1e6:.1f} MB; rows of {args.seq_len}; one core each.\n\n"
        "| | seconds | tokens in rows | tokens/s | padding | document boundaries |\n|---|---|---|---|---|---|\n"
        f"| ours (pack_documents) | {ours['seconds']:.2f} | {ours['tokens']:,} | {ours['tokens_per_s']:,.0f} | "
        f"{ours['padding_fraction']:.4%} | kept |\n"
        f"| HF datasets.map + group_texts | {base['seconds']:.2f} | {base['tokens']:,} | "
        f"{base['tokens_per_s']:,.0f} | 0 (remainder dropped) | lost |\n\n"
        f"Speed-up (tokens/s): **{result['speedup_tokens_per_s']:.2f}x**; goal met: {result['goal_met']}.\n")
    print(json.dumps({k: result[k] for k in ("speedup_tokens_per_s", "speedup_wall", "goal_met")}),
          f"ours {ours['tokens_per_s']:,.0f} tok/s pad {ours['padding_fraction']:.4%};",
          f"baseline {base['tokens_per_s']:,.0f} tok/s")


if __name__ == "__main__":
    main()
