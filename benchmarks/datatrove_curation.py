"""The datatrove side of benchmarks/curation.py; run with the datatrove venv's Python (not coderforge's).

    python datatrove_curation.py filters CORPUS.jsonl OUT.json [--tokenizer spacy|regex]
    python datatrove_curation.py dedup CORPUS.jsonl WORKDIR OUT.json --buckets B --rows R --ngram N [--tokenizer ...]

``filters``: datatrove's filters closest to our heuristic chain, run as pipeline steps over the
corpus held in memory (reading is not timed): RegexFilter with the StarCoder2 encoded-data patterns
(runs longer than 1,024 characters), GopherQualityFilter and GopherRepetitionFilter with thresholds
loosened for code (so that, like ours, they do their full work on most files).
``dedup``: datatrove's four MinHash stages (signatures, buckets, clusters, filter) with
LocalPipelineExecutor, one worker, JSONL in → JSONL out, each stage timed.
``--tokenizer spacy`` is datatrove's English default; ``regex`` swaps in a ``\\w+`` tokenizer (closer to
ours, and faster) to show what is left once tokenisation is taken out of the comparison.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from pathlib import Path

from datatrove.data import Document
from datatrove.utils.word_tokenizers import WordTokenizer

_WORD = re.compile(r"\w+")


class RegexWordTokenizer(WordTokenizer):
    """``\\w+`` runs as words (datatrove's tokenizer interface)."""

    def __init__(self):
        super().__init__("en")

    def word_tokenize(self, text: str) -> list[str]:
        return _WORD.findall(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return [s for s in text.split("\n") if s]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _WORD.finditer(text)]


def _language(tokenizer: str):
    return RegexWordTokenizer() if tokenizer == "regex" else "en"


def read_corpus(path: str) -> list[Document]:
    docs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            docs.append(Document(text=row["text"], id=row["id"], metadata=row.get("metadata", {})))
    return docs


def filters(args) -> dict:
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter, RegexFilter

    language = _language(args.tokenizer)
    docs = read_corpus(args.corpus)
    encoded = (r"[a-zA-Z0-9+/\n=]{1025,}|(?:\\u[0-9a-fA-F]{4}){257,}"
               r"|(?:\b(?:0x|\\x)?[0-9a-fA-F]{2}(?:,|\b\s*)){342,}")
    steps = [
        RegexFilter(encoded),
        GopherQualityFilter(min_doc_words=5, max_doc_words=None, min_avg_word_length=None,
                            max_avg_word_length=None, max_symbol_word_ratio=None, max_bullet_lines_ratio=0.9,
                            max_ellipsis_lines_ratio=0.3, max_non_alpha_words_ratio=0.25, min_stop_words=None,
                            language=language),
        GopherRepetitionFilter(dup_line_frac=0.5, dup_para_frac=0.5, dup_line_char_frac=0.5, dup_para_char_frac=0.5,
                               top_n_grams=((2, 0.5), (3, 0.5), (4, 0.5)),
                               dup_n_grams=((5, 0.6), (6, 0.6), (7, 0.6), (8, 0.6), (9, 0.6), (10, 0.6)),
                               language=language),
    ]
    # warm the tokenizer (spaCy builds its pipeline on first use) outside the timed region
    steps[1].filter(Document(text="warm up the tokenizer please", id="w"))
    t = time.perf_counter()
    data = iter(docs)
    for step in steps:
        data = step.run(data, 0, 1)
    kept = sum(1 for _ in data)
    seconds = time.perf_counter() - t
    reasons: dict[str, int] = {}
    for step in steps:
        for key, value in step.stats.stats.items():
            n = value.total if hasattr(value, "total") else value
            if key.startswith("dropped_") or key == "dropped":
                reasons[f"{step.name}:{key}"] = int(n)
    return {"seconds": seconds, "docs": len(docs), "kept": kept, "reasons": reasons,
            "steps": [type(s).__name__ for s in steps], "tokenizer": args.tokenizer}


def dedup(args) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    corpus = Path(args.corpus)
    cfg = MinhashConfig(n_grams=args.ngram, num_buckets=args.buckets, hashes_per_bucket=args.rows)
    language = _language(args.tokenizer)
    reader = lambda: JsonlReader(str(corpus.parent), glob_pattern=corpus.name)  # noqa: E731
    stages = {
        "signatures": ([reader(), MinhashDedupSignature(str(work / "sigs"), config=cfg, language=language)], 1),
        "buckets": ([MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=cfg)], args.buckets),
        "clusters": ([MinhashDedupCluster(str(work / "buckets"), str(work / "remove_ids"), config=cfg)], 1),
        "filter": ([reader(), MinhashDedupFilter(str(work / "remove_ids")),
                    JsonlWriter(str(work / "deduped"), compression=None)], 1),
    }
    # warm the tokenizer outside the timed region (spaCy's first call builds the pipeline)
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    load_word_tokenizer(language).word_tokenize("warm up")
    times = {}
    for name, (pipeline, tasks) in stages.items():
        t = time.perf_counter()
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1,
                              logging_dir=str(work / "logs" / name)).run()
        times[name] = time.perf_counter() - t
    kept = 0
    for f in (work / "deduped").glob("*.jsonl"):
        with open(f, encoding="utf-8") as fh:
            kept += sum(1 for _ in fh)
    with open(corpus, encoding="utf-8") as fh:
        total = sum(1 for _ in fh)
    return {"seconds": sum(times.values()), "stage_seconds": times, "docs": total, "kept": kept,
            "dropped": total - kept, "config": str(cfg), "tokenizer": args.tokenizer}


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("filters")
    f.add_argument("corpus")
    f.add_argument("out")
    f.add_argument("--tokenizer", choices=["spacy", "regex"], default="spacy")
    d = sub.add_parser("dedup")
    d.add_argument("corpus")
    d.add_argument("workdir")
    d.add_argument("out")
    d.add_argument("--buckets", type=int, required=True)
    d.add_argument("--rows", type=int, required=True)
    d.add_argument("--ngram", type=int, default=5)
    d.add_argument("--tokenizer", choices=["spacy", "regex"], default="spacy")
    args = ap.parse_args()
    result = filters(args) if args.cmd == "filters" else dedup(args)
    Path(args.out).write_text(json.dumps(result, indent=2))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
