"""Text-code grounding classifiers (Qwen2.5-Coder §3.1.1, coarse-to-fine fastText filtering).

A **chain** of fastText stages decides whether a piece of text (web pages, docs, tutorials) is
code-related. Stage 1 is trained on the whole labelled training set; stage k+1 is trained only on
the training examples stage k kept (its positives and the negatives that got through), so later
stages learn the finer distinction the earlier ones could not make. Each stage has its own
hyper-parameters (word n-grams, character n-grams, dimension) and threshold. A document survives
the chain when every stage scores it at or above its threshold.

Precision and recall of every stage are measured on held-out labelled data (the examples reaching
that stage, and the chain as a whole up to that stage) and logged to MLflow.

**Seed data from this machine** (``seed_corpus``): positives are code-related prose — Python
docstrings of the standard library, reStructuredText documentation found on disk (CMake's help,
awscli examples …), man pages of programming tools (git, gcc, cmake, ctags, clang/llvm, …);
negatives are unrelated text — license and copyright texts (``/usr/share/common-licenses``,
``/usr/share/doc/*/copyright``) and man pages outside programming (games, system administration of
hardware, …) rendered from roff. Texts are split into paragraph windows of 200–1,200 characters.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import json
import logging
import random
import re
import sysconfig
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from coderforge import records, storage
from coderforge.ledger import Ledger
from coderforge.steps import StepResult

log = logging.getLogger(__name__)

POS, NEG = "__label__code", "__label__other"

PROGRAMMING_MAN = re.compile(
    r"^(git|gcc|g\+\+|cpp|cc|clang|llvm|lldb|gdb|make|cmake|ctags|python|pydoc|perl|ld|as|ar|nm|objdump|"
    r"readelf|strip|gprof|bison|flex|m4|autoconf|automake|libtool|pkg-config|javac|java|jar|node|npm|"
    r"ruby|rustc|cargo|go|valgrind|strace|ltrace|diff|patch|addr2line|c\+\+filt|FileCheck|bugpoint|opt)"
    r"([-.]|$)")
UNRELATED_MAN_SECTIONS = ("man6", "man5", "man8")


@dataclass
class StageSpec:
    name: str
    threshold: float = 0.5
    word_ngrams: int = 1
    minn: int = 0
    maxn: int = 0
    dim: int = 32
    epoch: int = 10
    lr: float = 0.5
    bucket: int = 200_000


DEFAULT_STAGES = [
    StageSpec("coarse", threshold=0.3, word_ngrams=1, dim=16, epoch=5),
    StageSpec("fine", threshold=0.6, word_ngrams=2, minn=3, maxn=5, dim=32, epoch=25),
]


# --- seed data -----------------------------------------------------------------------------------

def _windows(text: str, lo: int = 200, hi: int = 1200) -> list[str]:
    """Paragraph windows: consecutive paragraphs merged until ``lo`` characters, cut at ``hi``."""
    out, cur = [], ""
    for para in re.split(r"\n\s*\n", text):
        para = " ".join(para.split())
        if not para:
            continue
        cur = f"{cur} {para}".strip()
        if len(cur) >= lo:
            out.append(cur[:hi])
            cur = ""
    return out


_ROFF_ESC = re.compile(r"\\f[BIRP1-4]|\\f\(..|\\f\[[^]]*\]|\\\*\(..|\\\*\[[^]]*\]|\\\*.|\\\(..|\\\[[^]]*\]"
                       r"|\\[&|^%:]|\\s[-+]?\d")


def roff_to_text(src: str) -> str:
    """Plain text of a man page (macros dropped, their arguments kept, escapes removed)."""
    lines = []
    for line in src.splitlines():
        if line.startswith(('.\\"', "'\\\"", '.\\}')) or line.strip() in (".", "'"):
            continue
        if line.startswith((".", "'")):
            parts = line[1:].split(None, 1)
            macro = parts[0] if parts else ""
            if macro in ("SH", "SS"):
                lines.append("")
            if macro in ("PP", "P", "LP", "sp", "br", "TP", "IP"):
                lines.append("")
                if macro != "IP" or len(parts) < 2:
                    continue
            line = parts[1] if len(parts) > 1 else ""
            line = line.replace('"', "")
        line = _ROFF_ESC.sub("", line).replace("\\-", "-").replace("\\e", "\\").replace("\\ ", " ")
        lines.append(line)
    return "\n".join(lines)


def _read_man(path: Path) -> str:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return roff_to_text(raw.decode("utf-8", "replace"))


def _docstrings(path: Path) -> list[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) >= 200:
                out.append(doc)
    return out


def _collect(files: list[Path], read, limit: int, rng: random.Random) -> list[str]:
    """Windows from ``files`` visited in a seeded random order until ``limit`` are collected."""
    files = list(files)
    rng.shuffle(files)
    out: list[str] = []
    for f in files:
        if len(out) >= limit:
            break
        try:
            out.extend(read(f))
        except (OSError, ValueError, EOFError):
            continue
    rng.shuffle(out)
    return out[:limit]


def _text_windows(p: Path) -> list[str]:
    return _windows(p.read_text(encoding="utf-8", errors="replace"))


def _docstring_windows(p: Path) -> list[str]:
    return [w for d in _docstrings(p) for w in _windows(d)]


@lru_cache(maxsize=4)
def seed_corpus(max_per_source: int = 1500, seed: int = 0) -> tuple[list[str], list[str], dict[str, int]]:
    """Labelled texts found on this machine: (positives, negatives, count per source).

    Files of each source are visited in a seeded random order until ``max_per_source`` windows are
    collected, so the sample spreads over the whole source without reading all of it."""
    rng = random.Random(seed)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    mandir = Path("/usr/share/man")
    py_files = [p for p in sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("*/*.py"))]
    rst_files = sorted(Path("/usr/share").glob("**/*.rst")) + \
        sorted((stdlib / "site-packages").glob("**/*.rst"))
    man_prog = [p for p in sorted((mandir / "man1").glob("*")) if PROGRAMMING_MAN.match(p.name)]
    man_other = [p for sec in UNRELATED_MAN_SECTIONS for p in sorted((mandir / sec).glob("*"))]
    legal = [p for p in sorted(Path("/usr/share/common-licenses").glob("*")) if p.is_file()]
    legal += sorted(Path("/usr/share/doc").glob("*/copyright"))
    sources = {
        "python_docstrings": (True, py_files, _docstring_windows),
        "restructuredtext": (True, rst_files, _text_windows),
        "man_programming_tools": (True, man_prog, lambda p: _windows(_read_man(p))),
        "licenses_copyright": (False, legal, _text_windows),
        "man_other_sections": (False, man_other, lambda p: _windows(_read_man(p))),
    }
    pos: list[str] = []
    neg: list[str] = []
    counts: dict[str, int] = {}
    for name, (positive, files, read) in sources.items():
        texts = _collect(files, read, max_per_source, rng)
        counts[name] = len(texts)
        (pos if positive else neg).extend(texts)
    return pos, neg, counts


# --- fastText chain ------------------------------------------------------------------------------

def _line(text: str) -> str:
    return " ".join(text.split()).lower()


@dataclass
class StageMetrics:
    name: str
    threshold: float
    train_examples: int
    train_positive: int
    precision: float  # on held-out examples that reached this stage
    recall: float
    chain_precision: float  # the chain up to and including this stage, on all held-out examples
    chain_recall: float
    kept_fraction: float


def _pr(pred: list[bool], gold: list[bool]) -> tuple[float, float]:
    tp = sum(p and g for p, g in zip(pred, gold, strict=True))
    fp = sum(p and not g for p, g in zip(pred, gold, strict=True))
    fn = sum(g and not p for p, g in zip(pred, gold, strict=True))
    return (tp / (tp + fp) if tp + fp else 1.0), (tp / (tp + fn) if tp + fn else 1.0)


@dataclass
class ClassifierChain:
    stages: list[StageSpec]
    models: list = field(default_factory=list)

    def scores(self, k: int, texts: list[str]) -> list[float]:
        model = self.models[k]
        labels, probs = model.predict([_line(t) for t in texts], k=2)
        out = []
        for ls, ps in zip(labels, probs, strict=True):
            d = dict(zip(ls, ps, strict=True))
            out.append(float(d.get(POS, 0.0)))
        return out

    def keep_mask(self, k: int, texts: list[str]) -> list[bool]:
        return [s >= self.stages[k].threshold for s in self.scores(k, texts)]

    def first_rejecting_stage(self, texts: list[str]) -> list[int | None]:
        """For each text, the index of the first stage that rejects it, or None if all keep it."""
        verdict: list[int | None] = [None] * len(texts)
        alive = list(range(len(texts)))
        for k in range(len(self.stages)):
            if not alive:
                break
            mask = self.keep_mask(k, [texts[i] for i in alive])
            nxt = []
            for i, keep in zip(alive, mask, strict=True):
                if keep:
                    nxt.append(i)
                else:
                    verdict[i] = k
            alive = nxt
        return verdict

    def save(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for spec, model in zip(self.stages, self.models, strict=True):
            model.save_model(str(out_dir / f"{spec.name}.bin"))
        (out_dir / "chain.json").write_text(json.dumps([spec.__dict__ for spec in self.stages], indent=2))

    @classmethod
    def load(cls, model_dir: Path) -> ClassifierChain:
        import fasttext

        specs = [StageSpec(**s) for s in json.loads((Path(model_dir) / "chain.json").read_text())]
        return cls(specs, [fasttext.load_model(str(Path(model_dir) / f"{s.name}.bin")) for s in specs])


def split_heldout(pos: list[str], neg: list[str], fraction: float = 0.2):
    """Deterministic train/held-out split by text hash."""
    def is_ho(t: str) -> bool:
        return int.from_bytes(hashlib.blake2b(t.encode(), digest_size=4).digest(), "big") / 2**32 < fraction

    train = [(t, True) for t in pos if not is_ho(t)] + [(t, False) for t in neg if not is_ho(t)]
    held = [(t, True) for t in pos if is_ho(t)] + [(t, False) for t in neg if is_ho(t)]
    return train, held


def train_chain(train: list[tuple[str, bool]], heldout: list[tuple[str, bool]],
                stages: list[StageSpec] | None = None, seed: int = 0,
                run=None) -> tuple[ClassifierChain, list[StageMetrics]]:
    """Train each stage on what the previous one kept; measure every stage on held-out data."""
    import fasttext

    stages = stages or DEFAULT_STAGES
    chain = ClassifierChain(stages)
    metrics: list[StageMetrics] = []
    cur_train = list(train)
    ho_texts = [t for t, _ in heldout]
    ho_gold = [g for _, g in heldout]
    ho_alive = [True] * len(heldout)
    with tempfile.TemporaryDirectory() as tmp:
        def fit(spec: StageSpec, examples: list[tuple[str, bool]], tag: str, k: int):
            rows = [f"{POS if g else NEG} {_line(t)}" for t, g in examples]
            random.Random(seed + k).shuffle(rows)
            path = Path(tmp) / f"{spec.name}-{tag}.txt"
            path.write_text("\n".join(rows) + "\n")
            return fasttext.train_supervised(
                input=str(path), epoch=spec.epoch, lr=spec.lr, dim=spec.dim, wordNgrams=spec.word_ngrams,
                minn=spec.minn, maxn=spec.maxn, bucket=spec.bucket, thread=1, seed=seed + k, verbose=0)

        for k, spec in enumerate(stages):
            if not any(g for _, g in cur_train) or all(g for _, g in cur_train):
                raise ValueError(f"stage {spec.name}: its training set lacks one of the two classes")
            chain.models.append(fit(spec, cur_train, "all", k))
            # held-out: this stage alone on what reached it, and the chain so far on everything
            reach = [i for i, a in enumerate(ho_alive) if a]
            mask = chain.keep_mask(k, [ho_texts[i] for i in reach]) if reach else []
            p, r = _pr(mask, [ho_gold[i] for i in reach])
            for i, keep in zip(reach, mask, strict=True):
                ho_alive[i] = keep
            cp, cr = _pr(ho_alive, ho_gold)
            # what this stage keeps of its training set, judged out of fold (2 folds) so that the next
            # stage sees the mistakes this stage makes on unseen text, not on text it memorised
            train_keep = [False] * len(cur_train)
            folds = [[i for i in range(len(cur_train)) if i % 2 == f] for f in (0, 1)]
            for f in (0, 1):
                fold_model = fit(spec, [cur_train[i] for i in folds[1 - f]], f"fold{f}", k)
                holder = ClassifierChain([spec], [fold_model])
                mask = holder.keep_mask(0, [cur_train[i][0] for i in folds[f]])
                for i, keep in zip(folds[f], mask, strict=True):
                    train_keep[i] = keep
            m = StageMetrics(spec.name, spec.threshold, len(cur_train), sum(g for _, g in cur_train),
                             p, r, cp, cr, sum(train_keep) / len(cur_train))
            metrics.append(m)
            if run is not None:
                run.log_metrics({f"quality.{spec.name}.{key}": getattr(m, key) for key in
                                 ("precision", "recall", "chain_precision", "chain_recall", "kept_fraction",
                                  "train_examples")}, step=k)
            cur_train = [ex for ex, keep in zip(cur_train, train_keep, strict=True) if keep]
    return chain, metrics


def run_quality(cfg, docs_dir: str, out_dir: str, run) -> StepResult:
    """Filter text documents with the grounding chain (trained on this machine's seed data unless
    ``quality.model_dir`` names a saved chain). Documents whose language is not in
    ``quality.apply_to_langs`` pass untouched; the others are kept or dropped with
    ``quality_rejected:<stage>``."""
    qc = cfg.quality
    ledger = Ledger("quality")
    info: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        if qc.model_dir:
            chain = ClassifierChain.load(Path(storage.local_path(qc.model_dir)))
        else:
            pos, neg, counts = seed_corpus(qc.seed_max_per_source, cfg.run.seed)
            train, held = split_heldout(pos, neg, qc.heldout_fraction)
            stages = [StageSpec(**s.model_dump()) for s in qc.stages] if qc.stages else None
            chain, stage_metrics = train_chain(train, held, stages, cfg.run.seed, run)
            info["seed_sources"] = counts
            info["stages"] = [m.__dict__ for m in stage_metrics]
        chain.save(models)
        storage.upload_dir(models, storage.join(out_dir, "models"))
        kept_docs = []
        batch: list = []

        def flush():
            verdicts = chain.first_rejecting_stage([d.content for d in batch])
            for d, v in zip(batch, verdicts, strict=True):
                if v is None:
                    ledger.keep(d, detail="grounded")
                    kept_docs.append(d)
                else:
                    ledger.drop(d, f"quality_rejected:{chain.stages[v].name}")
            batch.clear()

        for d in records.read_documents(docs_dir):
            if d.lang in qc.apply_to_langs:
                batch.append(d)
                if len(batch) >= 512:
                    flush()
            else:
                ledger.keep(d, detail="not_text")
                kept_docs.append(d)
        if batch:
            flush()
        records.write_documents(out_dir, kept_docs, cfg.executor.shard_size)
    summary = ledger.close(out_dir, expected_inputs=records.count_documents(docs_dir))
    metrics = {}
    for s in info.get("stages", []):
        for key in ("precision", "recall", "chain_precision", "chain_recall"):
            metrics[f"quality.{s['name']}.{key}"] = s[key]
    return StepResult(ledger=summary, metrics=metrics, info=info)
