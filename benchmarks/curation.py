"""Curation throughput, ours vs datatrove, in one run on one corpus (>= 50 MB of real code on this machine).

    .venv/bin/python benchmarks/curation.py [--mb 55] [--datatrove-python benchmarks/.venv-datatrove/bin/python]

Corpus (deterministic): Java from the JDK's src.zip, Python from the standard library, JavaScript from
npm, C headers from /usr/include, files <= 1 MB, in fixed shares of ``--mb``. Written once as Parquet
shards (ours) and as one JSONL file (datatrove); both sides see the same texts.

Measured, each side in ONE process (= one core; this machine is 2 shared cores):

* filters: our heuristic chain (StarCoder2 rules, markup/data rules, data-dense + repetition; no
  tree-sitter, no Ruff) vs datatrove's nearest filters (RegexFilter with the StarCoder2 encoded-data
  patterns, GopherQualityFilter and GopherRepetitionFilter, thresholds loosened for code), both over the
  corpus held in memory. Our full chain (+ syntax, + Ruff) is timed too; datatrove has no equivalent.
* near-dedup, file to file: our ``run_dedup`` (exact + MinHash LSH, Parquet in/out, ledger) vs
  datatrove's four MinHash stages (signatures, buckets, clusters, filter; JSONL in/out), same 5-grams,
  same 250 hash functions as 25 bands x 10 rows.

datatrove runs in its own venv (``benchmarks/.venv-datatrove``, ``pip install "datatrove[processing]==0.10.1" orjson
spacy``) through ``benchmarks/datatrove_curation.py``, with its English (spaCy) word tokenizer as shipped
and again with a ``\\w+`` regex tokenizer (closest to ours). Results: benchmarks/results/curation.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from pathlib import Path

from coderforge.config import RecipeConfig
from coderforge.data.dedup import run_dedup
from coderforge.data.filters import build_chain
from coderforge.data.languages import language_of
from coderforge.ledger import Ledger, read_ledger
from coderforge.records import Document, document_id, write_documents
from coderforge.tracking import NullRun

ROOT = Path(__file__).resolve().parent
SRC_ZIPS = ["/usr/lib/jvm/java-17-openjdk-amd64/lib/src.zip", "/usr/lib/jvm/temurin-25-jdk-amd64/lib/src.zip"]
SHARES = {"java": 0.45, "python": 0.27, "javascript": 0.10, "c_headers": 0.18}
MAX_FILE = 1_000_000


def _doc(source: str, repo: str, path: str, text: str) -> Document | None:
    lang = language_of(path)
    if lang is None:
        return None
    return Document(id=document_id(source, repo, path), repo=repo, path=path, lang=lang, content=text,
                    source=source)


def _files(root: Path, suffix: str, exclude: tuple[str, ...] = ()) -> list[Path]:
    return sorted(p for p in root.rglob(f"*{suffix}")
                  if p.is_file() and not any(x in p.parts for x in exclude) and p.stat().st_size <= MAX_FILE)


def corpus(mb: float) -> tuple[list[Document], dict]:
    budget = {k: v * mb * 1e6 for k, v in SHARES.items()}
    docs: list[Document] = []
    stats: dict = {}

    def take(name: str, items):
        total = n = 0
        for source, repo, path, text in items:
            if total >= budget[name]:
                break
            d = _doc(source, repo, path, text)
            if d is None:
                continue
            docs.append(d)
            total += len(text.encode("utf-8", "surrogatepass"))
            n += 1
        stats[name] = {"docs": n, "mb": round(total / 1e6, 2)}

    def jdk():
        src = next(p for p in SRC_ZIPS if Path(p).is_file())
        with zipfile.ZipFile(src) as zf:
            for info in zf.infolist():
                if info.filename.endswith(".java") and info.file_size <= MAX_FILE:
                    repo, _, rel = info.filename.partition("/")
                    yield "jdk", repo, rel, zf.read(info).decode("utf-8", "replace")

    def tree(source: str, root: Path, suffix: str, exclude=()):
        for p in _files(root, suffix, exclude):
            rel = p.relative_to(root).as_posix()
            repo = rel.split("/", 1)[0] if "/" in rel else root.name
            yield source, repo, rel, p.read_text("utf-8", "replace")

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    take("java", jdk())
    take("python", tree("stdlib", stdlib, ".py", ("site-packages",)))
    take("javascript", tree("npm", Path("/usr/lib/node_modules/npm"), ".js"))
    take("c_headers", tree("include", Path("/usr/include"), ".h"))
    return docs, stats


def _rate(n_docs: int, nbytes: int, seconds: float) -> dict:
    return {"seconds": round(seconds, 3), "docs_per_s": round(n_docs / seconds, 1),
            "mb_per_s": round(nbytes / 1e6 / seconds, 3)}


def _datatrove(py: str, *args: str, timeout: int = 1800) -> dict:
    proc = subprocess.run([py, str(ROOT / "datatrove_curation.py"), *args], capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        return {"error": proc.stderr[-3000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _heuristic_cfg(cfg: RecipeConfig) -> RecipeConfig:
    c = cfg.model_copy(deep=True)
    c.filter.syntax.enabled = c.filter.ruff.enabled = False
    return c


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=55.0)
    ap.add_argument("--out", default=str(ROOT / "results" / "curation.json"))
    ap.add_argument("--datatrove-python", default=str(ROOT / ".venv-datatrove" / "bin" / "python"))
    ap.add_argument("--tokenizers", default="spacy,regex", help="datatrove tokenizers to run (comma separated)")
    ap.add_argument("--no-full-chain", action="store_true", help="skip timing our full chain (syntax + Ruff)")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="cf-curation-bench-"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    docs, parts = corpus(args.mb)
    nbytes = sum(len(d.content.encode("utf-8", "surrogatepass")) for d in docs)
    n = len(docs)
    write_documents(str(work / "in"), docs, shard_size=2000)
    jsonl = work / "corpus.jsonl"
    with open(jsonl, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"id": d.id, "text": d.content, "metadata": {"path": d.path, "lang": d.lang}}) + "\n")
    results: dict = {
        "corpus": {"docs": n, "mb": round(nbytes / 1e6, 2), "parts": parts},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_start": os.getloadavg()},
        "method": "each side in one process (one core); filters over in-memory documents; dedup file to file",
    }
    cfg = RecipeConfig.model_validate({"data": {"sources": [{"uri": str(work)}]},
                                       "executor": {"kind": "local", "resume": False},
                                       "dedup": {"num_perm": 250, "bands": 25, "rows": 10, "ngram": 5}})
    dt_ok = Path(args.datatrove_python).is_file()
    tokenizers = [t for t in args.tokenizers.split(",") if t]

    # ---- filters -------------------------------------------------------------------------------------
    ledger = Ledger("filter")
    t = time.perf_counter()
    build_chain(_heuristic_cfg(cfg)).run(docs, ledger)
    s = ledger.summary()
    results["filters_ours"] = {**_rate(n, nbytes, time.perf_counter() - t), "kept": s.kept, "reasons": s.reasons,
                               "chain": build_chain(_heuristic_cfg(cfg)).names}
    print("filters ours:", results["filters_ours"], flush=True)
    if not args.no_full_chain:
        ledger = Ledger("filter")
        t = time.perf_counter()
        build_chain(cfg).run(docs, ledger)
        s = ledger.summary()
        results["filters_ours_full_chain"] = {**_rate(n, nbytes, time.perf_counter() - t), "kept": s.kept,
                                              "reasons": s.reasons, "fixed": s.fixed,
                                              "quarantined": s.quarantined, "chain": build_chain(cfg).names}
        print("filters ours, full chain:", results["filters_ours_full_chain"], flush=True)
    for tok in tokenizers if dt_ok else []:
        r = _datatrove(args.datatrove_python, "filters", str(jsonl), str(work / f"dt_filters_{tok}.json"),
                       "--tokenizer", tok)
        if "seconds" in r:
            r.update(_rate(n, nbytes, r["seconds"]))
            r["ratio_ours_vs_this"] = round(r["seconds"] / results["filters_ours"]["seconds"], 2)
        results[f"filters_datatrove_{tok}"] = r
        print(f"filters datatrove ({tok}):", r, flush=True)

    # ---- near-dedup ----------------------------------------------------------------------------------
    t = time.perf_counter()
    res = run_dedup(cfg, str(work / "in"), str(work / "dedup_out"), NullRun())
    dt = time.perf_counter() - t
    drops = [r for r in read_ledger(str(work / "dedup_out")) if r["status"] == "dropped"]
    results["dedup_ours"] = {**_rate(n, nbytes, dt), "kept": res.ledger.kept,
                             "exact_dropped": sum(r["reason"].startswith("exact_") for r in drops),
                             "near_dropped": sum(r["reason"].startswith("near_") for r in drops),
                             "fingerprint_seconds": round(res.metrics["fingerprint_seconds"], 3),
                             "cluster_seconds": round(res.metrics["cluster_seconds"], 3),
                             "config": "5-grams, 250 hashes = 25 bands x 10 rows, exact + near"}
    print("dedup ours:", results["dedup_ours"], flush=True)
    for tok in tokenizers if dt_ok else []:
        r = _datatrove(args.datatrove_python, "dedup", str(jsonl), str(work / f"dt_dedup_{tok}"),
                       str(work / f"dt_dedup_{tok}.json"), "--buckets", "25", "--rows", "10", "--ngram", "5",
                       "--tokenizer", tok)
        if "seconds" in r:
            r.update(_rate(n, nbytes, r["seconds"]))
            r["ratio_ours_vs_this"] = round(r["seconds"] / dt, 2)
            r["signature_ratio_ours_vs_this"] = round(r["stage_seconds"]["signatures"] /
                                                      res.metrics["fingerprint_seconds"], 2)
        results[f"dedup_datatrove_{tok}"] = r
        print(f"dedup datatrove ({tok}):", r, flush=True)
    if not dt_ok:
        results["datatrove"] = f"not run: {args.datatrove_python} not found"
    results["machine"]["loadavg_end"] = os.getloadavg()

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


def markdown(r: dict) -> str:
    c = r["corpus"]
    parts = ", ".join(f"{k} {v['docs']} files / {v['mb']} MB" for k, v in c["parts"].items())
    lines = ["# Curation benchmark: ours vs datatrove 0.10.1 (one process = one core each)", "",
             f"Corpus: {c['docs']} files, {c['mb']} MB of real code "
             f"({parts}). "
             f"Machine: {r['machine']['cpus']} shared cores, load {r['machine']['loadavg_start'][0]:.1f} at start.", "",
             "| stage | system | seconds | docs/s per core | MB/s per core | ours vs this |",
             "|---|---|---|---|---|---|"]
    rows = [("filters", "ours: heuristic chain", "filters_ours"),
            ("filters", "ours: full chain (+ tree-sitter syntax, + Ruff)", "filters_ours_full_chain"),
            ("filters", "datatrove: Regex + GopherQuality + GopherRepetition, spaCy words", "filters_datatrove_spacy"),
            ("filters", "datatrove: same, `\\w+` regex words", "filters_datatrove_regex"),
            ("near-dedup", "ours: run_dedup (exact + MinHash LSH), Parquet to Parquet", "dedup_ours"),
            ("near-dedup", "datatrove: 4 MinHash stages, spaCy words, JSONL to JSONL", "dedup_datatrove_spacy"),
            ("near-dedup", "datatrove: same, `\\w+` regex words", "dedup_datatrove_regex")]
    for stage, name, key in rows:
        e = r.get(key)
        if not isinstance(e, dict) or "seconds" not in e:
            continue
        ratio = f"{e['ratio_ours_vs_this']:.2f}x" if "ratio_ours_vs_this" in e else "-"
        lines.append(f"| {stage} | {name} | {e['seconds']:.1f} | {e['docs_per_s']:.0f} | {e['mb_per_s']:.2f} "
                     f"| {ratio} |")
    if "dedup_ours" in r:
        d = r["dedup_ours"]
        lines += ["", f"Ours, dedup: {d['exact_dropped']} exact + {d['near_dropped']} near duplicates dropped; "
                      f"fingerprints {d['fingerprint_seconds']} s, clustering {d['cluster_seconds']} s."]
    for tok in ("spacy", "regex"):
        e = r.get(f"dedup_datatrove_{tok}")
        if isinstance(e, dict) and "stage_seconds" in e:
            st = ", ".join(f"{k} {v:.1f} s" for k, v in e["stage_seconds"].items())
            lines.append(f"datatrove ({tok}): {e['dropped']} dropped; {st}; signature stage ours vs this "
                         f"{e['signature_ratio_ours_vs_this']:.2f}x.")
        elif isinstance(e, dict) and "error" in e:
            lines.append(f"datatrove dedup ({tok}) failed: {e['error'][-300:]}")
    for key in ("filters_ours", "filters_ours_full_chain"):
        if key in r:
            lines += ["", f"Funnel, {key}: kept {r[key]['kept']} of {c['docs']}; dropped by reason: "
                          + ", ".join(f"{k} {v}" for k, v in sorted(r[key]["reasons"].items(), key=lambda kv: -kv[1]))]
    for tok in ("spacy", "regex"):
        e = r.get(f"filters_datatrove_{tok}")
        if isinstance(e, dict) and "kept" in e:
            lines.append(f"datatrove filters ({tok}): kept {e['kept']}; " +
                         ", ".join(f"{k} {v}" for k, v in e["reasons"].items()))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
