"""Text-code grounding classifiers (Qwen2.5-Coder §3.1.1, coarse-to-fine fastText filtering).

A **chain** of ``quality.num_stages`` fastText stages (4 by default, as Qwen's cc-stages 1–4,
recipe.md §4.3) decides whether a piece of text (web pages, docs, tutorials) is code-grounded prose.
A document survives when every stage scores it at or above that stage's threshold; how far it gets
is its quality.

**Seed set, widened stage by stage** (:mod:`coderforge.data.grounding_seeds`): seeds are paragraph
windows of real files on this machine in labelled groups. Every positive group (stdlib docstrings,
JDK javadoc, npm documentation and JSDoc, reStructuredText, programming man pages) joins at stage 1;
the negative groups join from easy to hard — licenses at stage 1, system-administration man pages at
stage 2, packaging changelogs at stage 3, upstream release notes at stage 4 — so each finer stage has
its own responsibility. Stage k trains on the part of its seed set that reaches it: the seeds of
earlier stages that stage k-1 kept (judged out of fold, 2 folds, so stage k sees the mistakes the
earlier stages make on unseen text) and the seeds joining at stage k that the chain so far keeps
(the hard ones; what the chain already rejects never reaches stage k).

**Recall-tested on held-out seeds**: held-out seeds are whole files of every group (none of their
windows is trained on). After each stage: precision/recall of the stage on the held-out seeds that
reach it, of the chain so far on all of them, and the share of each group's held-out seeds the chain
keeps, all logged to MLflow (``quality.<stage>.*``, step = stage index). The chain's held-out recall
must stay at or above ``quality.min_chain_recall`` after every stage, else training fails naming the
stage.
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from coderforge import records, storage
from coderforge.data.grounding_seeds import Seed, difficulty_of, join_stage, seed_corpus, split_heldout
from coderforge.ledger import Ledger
from coderforge.steps import StepResult

log = logging.getLogger(__name__)

POS, NEG = "__label__code", "__label__other"
__all__ = ["ClassifierChain", "StageMetrics", "StageSpec", "default_stages", "run_quality", "seed_corpus",
           "split_heldout", "train_chain"]


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


def default_stages(n: int = 4) -> list[StageSpec]:
    """``n`` stages from coarse to fine: stage 1 unigrams at a low threshold (high recall), later stages
    word bigrams (and character 3–5-grams in the second half) at thresholds rising to 0.6."""
    if n < 1:
        raise ValueError(f"a grounding chain needs at least one stage, not {n}")
    out = []
    for k in range(n):
        frac = k / (n - 1) if n > 1 else 0.0
        fine = k >= (n + 1) // 2
        out.append(StageSpec(f"stage{k + 1}", threshold=round(0.3 + 0.3 * frac, 3), word_ngrams=1 if k == 0 else 2,
                             minn=3 if fine else 0, maxn=5 if fine else 0, dim=16 if k == 0 else 32,
                             epoch=5 if k == 0 else 15))
    return out


# --- fastText chain ------------------------------------------------------------------------------

def _line(text: str) -> str:
    return " ".join(text.split()).lower()


@dataclass
class StageMetrics:
    name: str
    threshold: float
    seed_examples: int  # the stage's seed set: every training seed that has joined by this stage
    new_seeds: int  # seeds joining at this stage
    train_examples: int  # the seeds that reach the stage and train it
    train_positive: int
    heldout_reached: int  # held-out seeds that reach this stage
    precision: float  # this stage alone, on the held-out seeds that reach it
    recall: float
    chain_precision: float  # the chain up to and including this stage, on every held-out seed
    chain_recall: float
    kept_fraction: float  # share of the reaching held-out seeds this stage keeps
    group_kept: dict[str, float] = field(default_factory=dict)  # chain so far: kept share of each group

    def log_keys(self) -> dict[str, float]:
        out = {key: float(getattr(self, key)) for key in
               ("precision", "recall", "chain_precision", "chain_recall", "kept_fraction", "seed_examples",
                "new_seeds", "train_examples", "heldout_reached")}
        out.update({f"kept.{g}": v for g, v in self.group_kept.items()})
        return {f"quality.{self.name}.{k}": v for k, v in out.items()}


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


def _fit(spec: StageSpec, examples: list[Seed], path: Path, seed: int):
    import fasttext

    rows = [f"{POS if s.positive else NEG} {_line(s.text)}" for s in examples]
    n_pos = sum(s.positive for s in examples)
    minority = min(n_pos, len(examples) - n_pos)
    if minority:  # balance the classes: the minority's rows repeated (at most 10 times)
        times = min(10, max(1, round((len(examples) - minority) / minority)))
        rows += [r for r, s in zip(rows, examples, strict=True) if s.positive == (2 * n_pos < len(examples))
                 for _ in range(times - 1)]
    random.Random(seed).shuffle(rows)
    path.write_text("\n".join(rows) + "\n")
    return fasttext.train_supervised(
        input=str(path), epoch=spec.epoch, lr=spec.lr, dim=spec.dim, wordNgrams=spec.word_ngrams,
        minn=spec.minn, maxn=spec.maxn, bucket=spec.bucket, thread=1, seed=seed, verbose=0)


def _chain_keeps(chain: ClassifierChain, texts: list[str]) -> list[bool]:
    return [v is None for v in chain.first_rejecting_stage(texts)] if texts else []


def _out_of_fold_keep(spec: StageSpec, examples: list[Seed], tmp: Path, seed: int) -> list[bool]:
    """What a stage trained like ``spec`` keeps of ``examples``, each judged by a model that did not
    train on it (2 folds)."""
    keep = [False] * len(examples)
    folds = [[i for i in range(len(examples)) if i % 2 == f] for f in (0, 1)]
    for f in (0, 1):
        model = _fit(spec, [examples[i] for i in folds[1 - f]], tmp / f"{spec.name}-fold{f}.txt", seed)
        mask = ClassifierChain([spec], [model]).keep_mask(0, [examples[i].text for i in folds[f]])
        for i, k in zip(folds[f], mask, strict=True):
            keep[i] = k
    return keep


def train_chain(train: list[Seed], heldout: list[Seed], stages: list[StageSpec] | None = None, seed: int = 0,
                run=None, min_chain_recall: float = 0.0) -> tuple[ClassifierChain, list[StageMetrics]]:
    """Train the stages in order on a seed set widened stage by stage (see the module doc); measure
    every stage on the held-out seeds."""
    stages = stages or default_stages()
    n = len(stages)
    difficulty = difficulty_of()
    joining: list[list[Seed]] = [[] for _ in range(n)]
    for s in train:
        joining[join_stage(difficulty.get(s.group, 1), n)].append(s)
    chain = ClassifierChain([], [])
    metrics: list[StageMetrics] = []
    reaching: list[Seed] = []  # training seeds of earlier stages that reach the current stage
    seed_examples = 0
    ho_texts = [s.text for s in heldout]
    ho_gold = [s.positive for s in heldout]
    ho_alive = [True] * len(heldout)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for k, spec in enumerate(stages):
            new = joining[k]
            seed_examples += len(new)
            hard = [s for s, keep in zip(new, _chain_keeps(chain, [s.text for s in new]), strict=True) if keep]
            examples = reaching + hard
            n_pos = sum(s.positive for s in examples)
            if n_pos == 0 or n_pos == len(examples):
                raise ValueError(f"quality stage {spec.name}: the seeds reaching it are all of one class "
                                 f"({len(examples)} examples, {n_pos} positive): use fewer stages or more seed "
                                 f"data (quality.seed_max_per_source)")
            chain.stages.append(spec)
            chain.models.append(_fit(spec, examples, tmp / f"{spec.name}.txt", seed + k))
            reach = [i for i, a in enumerate(ho_alive) if a]
            mask = chain.keep_mask(k, [ho_texts[i] for i in reach]) if reach else []
            p, r = _pr(mask, [ho_gold[i] for i in reach])
            for i, keep in zip(reach, mask, strict=True):
                ho_alive[i] = keep
            cp, cr = _pr(ho_alive, ho_gold)
            groups: dict[str, list[bool]] = {}
            for s, alive in zip(heldout, ho_alive, strict=True):
                groups.setdefault(s.group, []).append(alive)
            m = StageMetrics(spec.name, spec.threshold, seed_examples, len(new), len(examples), n_pos, len(reach),
                             p, r, cp, cr, sum(mask) / len(mask) if mask else 0.0,
                             {g: sum(v) / len(v) for g, v in sorted(groups.items())})
            metrics.append(m)
            log.info("quality %s: %d seeds (%d new), trained on %d; held-out P %.3f R %.3f, chain P %.3f R %.3f",
                     spec.name, seed_examples, len(new), len(examples), p, r, cp, cr)
            if run is not None:
                run.log_metrics(m.log_keys(), step=k)
            if cr < min_chain_recall:
                raise ValueError(f"quality stage {spec.name}: the chain keeps {cr:.3f} of the held-out code-related "
                                 f"seeds, below quality.min_chain_recall = {min_chain_recall}")
            if k + 1 < n:
                keep = _out_of_fold_keep(spec, examples, tmp, seed + k)
                reaching = [s for s, kept in zip(examples, keep, strict=True) if kept]
    return chain, metrics


def run_quality(cfg, docs_dir: str, out_dir: str, run) -> StepResult:
    """Filter text documents with the grounding chain (trained on this machine's seed data unless
    ``quality.model_dir`` names a saved chain). Documents whose language is not in
    ``quality.apply_to_langs`` pass untouched; the others are kept or dropped with
    ``quality_rejected:<stage>``."""
    qc = cfg.quality
    ledger = Ledger("quality")
    info: dict = {}
    stage_metrics: list[StageMetrics] = []
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        if qc.model_dir:
            chain = ClassifierChain.load(Path(storage.local_path(qc.model_dir)))
        else:
            seeds, counts = seed_corpus(qc.seed_max_per_source, cfg.run.seed)
            train, held = split_heldout(seeds, qc.heldout_fraction)
            stages = [StageSpec(**s.model_dump()) for s in qc.stages] if qc.stages else \
                default_stages(qc.num_stages)
            chain, stage_metrics = train_chain(train, held, stages, cfg.run.seed, run, qc.min_chain_recall)
            info["seed_sources"] = counts
            info["stages"] = [m.__dict__ for m in stage_metrics]
        chain.save(models)
        storage.upload_dir(models, storage.join(out_dir, "models"))
        kept_docs = []
        batch: list = []
        reached = [0] * len(chain.stages)  # text documents reaching each stage (Qwen: 582B → 370B → …)

        def flush():
            verdicts = chain.first_rejecting_stage([d.content for d in batch])
            for d, v in zip(batch, verdicts, strict=True):
                for k in range(len(chain.stages) if v is None else v + 1):
                    reached[k] += 1
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
    metrics: dict[str, float] = {}
    for m in stage_metrics:
        metrics.update(m.log_keys())
    kept_text = sum(1 for d in kept_docs if d.lang in qc.apply_to_langs)
    for k, spec in enumerate(chain.stages):
        metrics[f"quality.{spec.name}.documents_reaching"] = float(reached[k])
    info["documents_per_stage"] = {"reaching": dict(zip([s.name for s in chain.stages], reached, strict=True)),
                                   "kept": kept_text}
    return StepResult(ledger=summary, metrics=metrics, info=info)
