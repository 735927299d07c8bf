"""The Qwen2.5-Coder-0.5B recipe's data steps on a local stand-in of its sources (issue 14.4).

    .venv/bin/python benchmarks/standin_05b.py [--workdir runs/qwen2.5-coder-0.5b-standin] [--scale 1.0]

1. Writes ``benchmarks/qwen2.5-coder-0.5b-standin.yaml``: configs/qwen2.5-coder-0.5b.yaml with only these
   changes: the code source points at code on this machine (Python standard library, the JDK's src.zip,
   npm's JavaScript, C headers, the prose of /usr/share/doc for the grounding chain); each mixture source
   (same names, categories and weights) points at document shards of local text; the benchmark JSONLs of
   decontamination (S3 objects) are dropped (HumanEval stays); the executor is local; the tokenizer is
   8,192 tokens on 5M characters (a few MB cannot yield 151,643 merges); the seed data of the grounding
   chain is capped for speed.
2. Builds the text and math sources: local texts as JSONL, each read by the real ``ingest`` step.
   Stand-ins: slimpajama-cc = /usr/share/doc READMEs and text; skypile = non-English man pages;
   slimpajama-wikipedia = man7 overview pages; slimpajama-c4 = English man1 pages; slimpajama-book =
   licence texts; slimpajama-arxiv = CMake's reStructuredText manuals; slimpajama-stackexchange
   (math) = libm man pages (man3) and the docstrings of sympy and mpmath.
3. Runs the recipe's data steps with ``coderforge step``: ingest → filter → dedup → decontam → quality →
   tokenizer → mixture, and writes the realised mixture to ``benchmarks/results/standin_05b.{json,md}``.
"""

from __future__ import annotations

import argparse
import ast
import glob
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "qwen2.5-coder-0.5b.yaml"
STANDIN = ROOT / "benchmarks" / "qwen2.5-coder-0.5b-standin.yaml"
RESULTS = ROOT / "benchmarks" / "results"
STDLIB_REPOS = ["json", "email", "http", "urllib", "logging", "concurrent", "importlib", "xml", "sqlite3", "asyncio",
                "unittest", "multiprocessing", "tomllib", "zoneinfo", "wsgiref"]
JDK_REPOS = ["java.base", "java.net.http", "java.sql", "java.logging", "java.compiler"]
INCLUDE_REPOS = ["linux", "sys", "netinet", "arpa", "python3.11", "openssl", "curl", "X11", "GL", "libxml2"]


def jdk_src_zip() -> str:
    found = sorted(p for p in glob.glob("/usr/lib/jvm/*/lib/src.zip") if Path(p).is_file())  # not dangling links
    if not found:
        sys.exit("no JDK src.zip under /usr/lib/jvm")
    return found[0]


def code_sources(scale: float) -> list[dict]:
    n = lambda k: max(1, int(k * scale))  # noqa: E731
    return [
        {"uri": "${stdlib}", "kind": "dir", "name": "python-stdlib", "repos": STDLIB_REPOS,
         "max_files_per_repo": n(150)},
        {"uri": jdk_src_zip(), "kind": "archive", "name": "jdk-src", "repos": JDK_REPOS, "max_files_per_repo": n(300)},
        {"uri": "/usr/lib/node_modules", "kind": "dir", "name": "npm-js", "max_files_per_repo": n(600)},
        {"uri": "/usr/include", "kind": "dir", "name": "c-headers", "repos": INCLUDE_REPOS,
         "max_files_per_repo": n(80)},
        {"uri": "/usr/share/doc", "kind": "dir", "name": "doc-prose", "max_files_per_repo": n(4)},
    ]


def standin_recipe(workdir: str, scale: float) -> dict:
    """The 0.5B recipe with its sources pointed at this machine (what changes is listed in the docstring)."""
    r = yaml.safe_load(RECIPE.read_text())
    r["run"] = {**r["run"], "name": "qwen2.5-coder-0.5b-standin", "workdir": workdir}
    r["executor"] = {"kind": "local", "shard_size": 2000}
    r["data"]["sources"] = code_sources(scale)
    r["decontam"].pop("benchmarks", None)
    r["tokenizer"] = {**r["tokenizer"], "total_vocab_size": 8192, "max_training_chars": 5_000_000}
    r["quality"] = {**r["quality"], "seed_max_per_source": 600}
    for src in r["mixture"]["sources"]:
        src["path"] = f"${{workdir}}/sources/{src['name']}"
    r.pop("k8s", None)
    r["tracking"] = {"experiment": "qwen2.5-coder-0.5b-standin"}
    return r


# --- local text for the text and math sources ----------------------------------------------------------

def _man(path: Path) -> str:
    from coderforge.data.grounding_seeds import roff_to_text

    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return roff_to_text(raw.decode("utf-8", "replace"))


def _plain(path: Path) -> str:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return raw.decode("utf-8", "replace")


def _docstrings(path: Path) -> str:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return ""
    docs = [ast.get_docstring(n) for n in ast.walk(tree)
            if isinstance(n, ast.Module | ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)]
    return "\n\n".join(d for d in docs if d and len(d) > 200)


def _text_files(paths, read, cap_bytes: int, min_chars: int = 300) -> list[tuple[str, str]]:
    out, used = [], 0
    for p in paths:
        if used >= cap_bytes:
            break
        try:
            text = read(p)
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
        text = text[:200_000]
        if len(text.strip()) >= min_chars:
            out.append((str(p), text))
            used += len(text)
    return out


def local_texts(scale: float) -> dict[str, list[tuple[str, str]]]:
    """name of a recipe mixture source → (path, text) of its local stand-in."""
    import mpmath
    import sympy

    mb = lambda k: int(k * scale * 1_000_000)  # noqa: E731
    doc = Path("/usr/share/doc")
    man = Path("/usr/share/man")
    readmes = sorted(p for p in doc.glob("*/*") if p.is_file() and p.name.lower().split(".")[0] in
                     ("readme", "news", "faq", "todo", "thanks", "authors", "usage") or p.suffix in (".md", ".txt"))
    langs = sorted(d for d in man.iterdir() if d.is_dir() and not d.name.startswith("man"))
    math_man = sorted(p for p in (man / "man3").glob("*.3*") if p.name.split(".")[0] in MATH_FUNCTIONS)
    return {
        "slimpajama-cc": _text_files(readmes, _plain, mb(1.5)),
        "skypile": _text_files(sorted(p for d in langs for p in (d / "man1").glob("*") if p.is_file()), _man, mb(1.5)),
        "slimpajama-wikipedia": _text_files(sorted((man / "man7").glob("*")), _man, mb(0.9)),
        "slimpajama-c4": _text_files(sorted((man / "man1").glob("*")), _man, mb(0.9)),
        "slimpajama-book": _text_files(sorted(Path("/usr/share/common-licenses").iterdir()), _plain, mb(0.6)),
        "slimpajama-arxiv": _text_files(sorted(Path("/").glob("usr/share/cmake*/Help/manual/*.rst")), _plain, mb(0.6)),
        "slimpajama-stackexchange": _text_files(math_man, _man, mb(0.3), 200) + _text_files(
            sorted(Path(sympy.__file__).parent.rglob("*.py")) + sorted(Path(mpmath.__file__).parent.rglob("*.py")),
            _docstrings, mb(2.5)),
    }


MATH_FUNCTIONS = {"sin", "cos", "tan", "asin", "acos", "atan", "atan2", "sinh", "cosh", "tanh", "asinh", "acosh",
                  "atanh", "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "pow", "sqrt", "cbrt", "hypot",
                  "erf", "erfc", "lgamma", "tgamma", "gamma", "j0", "j1", "jn", "y0", "y1", "yn", "fma", "fmod",
                  "remainder", "remquo", "frexp", "ldexp", "modf", "scalbn", "ilogb", "logb", "nextafter", "ceil",
                  "floor", "round", "trunc", "rint", "nearbyint", "fdim", "fmax", "fmin", "copysign", "nan",
                  "sincos", "cexp", "clog", "csqrt", "cpow", "cabs", "carg", "conj", "cproj", "creal", "cimag",
                  "drand48", "rand", "random", "div", "abs", "significand", "matherr", "math_error"}


def write_jsonl(rows: list[tuple[str, str]], name: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for i, (src, text) in enumerate(rows):
            rel = src.lstrip("/").replace("/", "__")
            f.write(json.dumps({"content": text, "path": f"{i:05d}-{rel}.txt", "repo": name}) + "\n")


# --- running the steps --------------------------------------------------------------------------------

def step(name: str, recipe: Path, out: Path, timings: dict, **inputs: str) -> dict:
    cmd = [sys.executable, "-m", "coderforge.cli", "step", name, "--recipe", str(recipe), "--out", str(out)]
    for k, v in inputs.items():
        cmd += ["--in", f"{k}={v}"]
    t0 = time.time()
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    timings[f"{name}:{out.name}"] = round(time.time() - t0, 1)
    if res.returncode != 0:
        sys.exit(f"step {name} failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default="runs/qwen2.5-coder-0.5b-standin")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every size (files per repo, MB)")
    ap.add_argument("--recipe-only", action="store_true", help="write the stand-in recipe and stop")
    args = ap.parse_args()
    work = (ROOT / args.workdir).resolve()
    recipe = standin_recipe(args.workdir, args.scale)  # a relative workdir is relative to the repository root
    header = ("# Stand-in of configs/qwen2.5-coder-0.5b.yaml on this machine's data (issue 14.4), written by\n"
              "# benchmarks/standin_05b.py (run it to rebuild the text/math sources and re-measure the mixture).\n")
    STANDIN.write_text(header + yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True, width=120))
    if args.recipe_only:
        return
    timings: dict[str, float] = {}
    t0 = time.time()
    texts = local_texts(args.scale)
    timings["collect_texts"] = round(time.time() - t0, 1)
    for name, rows in texts.items():
        jsonl = work / "raw" / name / "part.jsonl"
        write_jsonl(rows, name, jsonl)
        mini = work / "raw" / name / "ingest.yaml"
        mini.write_text(yaml.safe_dump({
            "run": {"name": name, "workdir": str(work)}, "executor": {"kind": "local", "shard_size": 2000},
            "data": {"sources": [{"uri": str(jsonl), "kind": "jsonl", "name": name}],
                     "max_file_bytes": recipe["data"]["max_file_bytes"]},
            "tracking": {"experiment": "qwen2.5-coder-0.5b-standin-sources"}}))
        step("ingest", mini, work / "sources" / name, timings)
    s = work / "steps"
    results = {"ingest": step("ingest", STANDIN, s / "ingest", timings)}
    results["filter"] = step("filter", STANDIN, s / "filter", timings, in_dir=str(s / "ingest"))
    results["dedup"] = step("dedup", STANDIN, s / "dedup", timings, in_dir=str(s / "filter"))
    results["decontam"] = step("decontam", STANDIN, s / "decontam", timings, in_dir=str(s / "dedup"))
    results["quality"] = step("quality", STANDIN, s / "quality", timings, docs_dir=str(s / "decontam"))
    results["tokenizer"] = step("tokenizer", STANDIN, s / "tokenizer", timings, docs_dir=str(s / "quality"))
    results["mixture"] = step("mixture", STANDIN, s / "mixture", timings, docs_dir=str(s / "quality"),
                              tokenizer_dir=str(s / "tokenizer"))
    report(work, results, timings, texts)


def report(work: Path, results: dict, timings: dict, texts: dict) -> None:
    from coderforge import records

    mix = results["mixture"]
    info, metrics = mix["info"], mix["metrics"]
    langs: dict[str, int] = {}
    for d in records.read_documents(str(work / "steps" / "quality")):
        langs[d.lang] = langs.get(d.lang, 0) + 1
    out = {"ratios_configured": info["ratios_configured"], "ratios_realised": info["ratios_realised"],
           "sources": info["sources"], "budget_tokens": metrics["budget_tokens"], "tokens": metrics["tokens"],
           "curated_languages": dict(sorted(langs.items(), key=lambda kv: -kv[1])),
           "steps": {k: {"ledger": v.get("ledger"), "metrics": {m: x for m, x in (v.get("metrics") or {}).items()
                                                                 if not m.startswith("factor.")}}
                     for k, v in results.items()},
           "local_text_documents": {k: len(v) for k, v in texts.items()}, "seconds": timings}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "standin_05b.json").write_text(json.dumps(out, indent=2, default=str))
    lines = ["# Qwen2.5-Coder-0.5B recipe on a local stand-in of its sources", "",
             "`python benchmarks/standin_05b.py` (recipe: benchmarks/qwen2.5-coder-0.5b-standin.yaml)", "",
             "| category | configured | realised | tokens |", "|---|---|---|---|"]
    for c, r in info["ratios_configured"].items():
        lines.append(f"| {c} | {r:.3f} | {info['ratios_realised'].get(c, 0):.4f} | {metrics.get(f'tokens.{c}', 0):,} |")
    lines += ["", "| source | category | available tokens | target | realised | factor |", "|---|---|---|---|---|---|"]
    for name, srow in info["sources"].items():
        lines.append(f"| {name} | {srow['category']} | {srow['available']:,} | {srow['target']:,} | "
                     f"{srow['realised']:,} | {srow['factor']:.3f} |")
    lines += ["", "Step times (s): " + ", ".join(f"{k} {v}" for k, v in timings.items())]
    (RESULTS / "standin_05b.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
