"""The step table: every recipe step, declared once.

A step's one name is used everywhere: its entry here, its KFP component (``components.component``;
KFP spells ``pack_repo`` as ``pack-repo`` in compiled IR, its only rule for names), its DAG task, its
MLflow child run, its key in ``summary.json`` and ``coderforge step NAME``. From the entry a reader
goes to the function (``function``), the recipe sections it reads (``sections``: the child run's
parameters and the step's resume key), where it runs (``resources``) and what feeds it (``inputs``).

Wiring is by name: an input lists the steps that can supply it, most specific first; in a given
pipeline and recipe the first of them that runs supplies it (``pack`` reads the mixture's output
when the mixture step is on, else the quality filter's, else decontamination's).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from coderforge.config import RecipeConfig

Resources = Literal["light", "ray", "gpu", "vllm"]
ArtifactKind = Literal["Dataset", "Model"]

PIPELINES: dict[str, str] = {
    "data": "code curation: ingest, filters, dedup, decontamination (and the quality chain)",
    "recipe": "the whole recipe: curation, tokenizer, packing, pretraining, post-training data, evaluation",
    "posttrain": "post-training from a given model (posttrain.model) and curated documents (posttrain.docs)",
}


@dataclass(frozen=True)
class Input:
    """A step function's input-directory argument and the steps that can supply it."""

    arg: str
    kind: ArtifactKind
    sources: tuple[str, ...]
    fallback: str = ""  # dotted recipe key naming a path/URI, used where no step of the pipeline supplies it
    optional: bool = False  # the function takes None when nothing supplies it


@dataclass(frozen=True)
class Step:
    name: str
    function: str  # "module:function"
    doc: str
    output: str  # the output artifact's name
    output_kind: ArtifactKind = "Dataset"
    inputs: tuple[Input, ...] = ()
    sections: tuple[str, ...] = ()
    resources: Resources = "light"  # light: data image; ray: may run on a KubeRay RayJob; gpu: accelerator;
    # vllm: the vLLM image (generation against a vLLM server)
    fixed: tuple[tuple[str, Any], ...] = ()  # fixed keyword arguments of the function
    payload: str = ""  # the subdirectory of the output consumers read (a model's HF directory)
    markdown_report: str = ""  # a file in the output also published as a Markdown artifact
    pipelines: tuple[str, ...] = ("recipe",)
    enabled: Callable[[RecipeConfig], bool] = field(default=lambda cfg: True, compare=False)  # the recipe switch
    required_in: tuple[str, ...] = ()  # pipelines that run the step whatever its switch says

    @property
    def input_args(self) -> tuple[str, ...]:
        return tuple(i.arg for i in self.inputs)

    def load(self) -> Callable[..., Any]:
        """The step's function, with its fixed keyword arguments bound."""
        module, func = self.function.split(":")
        fn = getattr(importlib.import_module(module), func)
        return functools.partial(fn, **dict(self.fixed)) if self.fixed else fn


_DOCS_AFTER_CURATION = ("quality", "decontam")
_FINAL_MODEL = ("pretrain_repo", "pretrain")
_DATA = ("data", "recipe")
_SFT: dict = {"pipelines": ("recipe", "posttrain"), "required_in": ("posttrain",),
              "enabled": lambda cfg: cfg.sft.enabled}
_DPO: dict = {"pipelines": ("recipe", "posttrain"), "required_in": ("posttrain",),
              "enabled": lambda cfg: cfg.dpo.enabled}
_POST: dict = {"pipelines": ("recipe", "posttrain"), "required_in": ("posttrain",),
               "enabled": lambda cfg: cfg.synth.enabled}

STEPS: tuple[Step, ...] = (
    Step("ingest", "coderforge.data.ingest:run_ingest",
         "Repositories (directories, git, archives, Parquet/JSONL) → document shards + ledger.",
         output="documents", sections=("data", "executor"), pipelines=_DATA),
    Step("filter", "coderforge.data.filters:run_filter",
         "Heuristic, syntax, data-density and lint filters; every drop with its reason.",
         output="kept", inputs=(Input("in_dir", "Dataset", ("ingest",)),), sections=("filter", "executor"),
         pipelines=_DATA),
    Step("dedup", "coderforge.data.dedup:run_dedup",
         "Exact and MinHash near-duplicate removal; every drop names its kept twin.",
         output="kept", inputs=(Input("in_dir", "Dataset", ("filter",)),), sections=("dedup", "executor"),
         pipelines=_DATA),
    Step("decontam", "coderforge.data.decontam:run_decontam",
         "Remove documents sharing a word n-gram (10 by default) or a function name with the benchmarks.",
         output="kept", inputs=(Input("in_dir", "Dataset", ("dedup",)),), sections=("decontam", "executor"),
         pipelines=_DATA),
    Step("quality", "coderforge.data.quality:run_quality",
         "Coarse-to-fine fastText text-code grounding chain over the text documents (Qwen2.5-Coder).",
         output="kept", inputs=(Input("docs_dir", "Dataset", ("decontam",)),), sections=("quality",),
         pipelines=_DATA, enabled=lambda cfg: cfg.quality.enabled),
    Step("tokenizer", "coderforge.tokens.tokenizer:run_tokenizer",
         "Train a byte-level BPE with the Qwen2.5-Coder control tokens (or load one) in HF format.",
         output="tokenizer", output_kind="Model", inputs=(Input("docs_dir", "Dataset", _DOCS_AFTER_CURATION),),
         sections=("tokenizer",)),
    Step("mixture", "coderforge.data.mixture:run_mixture",
         "Code / text / math sampled to a token budget at the configured ratios (70/20/10 by default).",
         output="mixed", inputs=(Input("docs_dir", "Dataset", _DOCS_AFTER_CURATION),
                                 Input("tokenizer_dir", "Model", ("tokenizer",))),
         sections=("mixture", "decontam"), enabled=lambda cfg: cfg.mixture.enabled),
    Step("pack", "coderforge.tokens.packing:run_pack",
         "Tokenise and pack documents into fixed-length rows with document boundaries (train/heldout).",
         output="tokens", inputs=(Input("docs_dir", "Dataset", ("mixture", *_DOCS_AFTER_CURATION)),
                                  Input("tokenizer_dir", "Model", ("tokenizer",))),
         sections=("pack", "data", "fim")),
    Step("pack_anneal", "coderforge.anneal_data:run_pack_anneal",
         "Instruction samples of the anneal phase (train.anneal) as ChatML text, packed whole with document "
         "boundaries into code and natural-language rows.",
         output="tokens", inputs=(Input("tokenizer_dir", "Model", ("tokenizer",)),),
         sections=("train", "pack", "decontam", "verify"), enabled=lambda cfg: cfg.train.anneal.instruction_share > 0),
    Step("pretrain", "coderforge.train.pretrain:run_pretrain",
         "File-level pretraining of a Qwen2ForCausalLM with Ray Train (local Ray, or a KubeRay RayJob).",
         output="model", output_kind="Model", payload="model",
         inputs=(Input("data_dir", "Dataset", ("pack",)), Input("tokenizer_dir", "Model", ("tokenizer",)),
                 Input("anneal_dir", "Dataset", ("pack_anneal",), optional=True)),
         sections=("model", "train", "pack"), resources="ray"),
    Step("pack_repo", "coderforge.tokens.packing:run_pack",
         "Repo-level samples (files in dependency order, repo-level FIM) packed into repo.seq_len rows.",
         output="tokens", inputs=(Input("docs_dir", "Dataset", _DOCS_AFTER_CURATION),
                                  Input("tokenizer_dir", "Model", ("tokenizer",))),
         sections=("repo", "pack", "data", "fim"), fixed=(("stage", "repo"),),
         enabled=lambda cfg: cfg.repo.enabled),
    Step("pretrain_repo", "coderforge.train.pretrain:run_pretrain",
         "Repo-level pretraining (32K rows, RoPE base 1M) from the file-level checkpoint.",
         output="model", output_kind="Model", payload="model",
         inputs=(Input("data_dir", "Dataset", ("pack_repo",)), Input("tokenizer_dir", "Model", ("tokenizer",)),
                 Input("init_from", "Model", ("pretrain",))),
         sections=("model", "train", "repo"), resources="ray", fixed=(("stage", "repo"),),
         enabled=lambda cfg: cfg.repo.enabled),
    Step("seeds", "coderforge.posttrain.seeds:run_seeds",
         "Functions and classes with docstrings (and doctests) mined from the curated corpus, with provenance.",
         output="seeds", inputs=(Input("docs_dir", "Dataset", _DOCS_AFTER_CURATION, fallback="posttrain.docs"),),
         sections=("synth", "posttrain", "executor"), **_POST),
    Step("synthesise", "coderforge.posttrain.synthesise:run_synthesise",
         "A teacher model served by vLLM turns each seed into a problem, a solution and unit tests.",
         output="samples", inputs=(Input("seeds_dir", "Dataset", ("seeds",)),
                                   Input("model_dir", "Model", _FINAL_MODEL, fallback="posttrain.model")),
         sections=("synth", "vllm", "posttrain"), resources="vllm", **_POST),
    Step("verify", "coderforge.posttrain.verify:run_verify",
         "Solution + tests run in the sandbox; passing samples deduplicated and decontaminated.",
         output="instructions", inputs=(Input("samples_dir", "Dataset", ("synthesise",)),),
         sections=("verify", "sandbox", "decontam", "dedup", "executor"), **_POST),
    Step("sft", "coderforge.posttrain.sft:run_sft",
         "Supervised fine-tuning on Ray Train: ChatML samples (verified synthetic set, seeds, instruction files, "
         "FIM instructions), loss on assistant turns, packed with document masking.",
         output="model", output_kind="Model", payload="model",
         inputs=(Input("instructions_dir", "Dataset", ("verify",), optional=True),
                 Input("seeds_dir", "Dataset", ("seeds",), optional=True),
                 Input("docs_dir", "Dataset", _DOCS_AFTER_CURATION, fallback="posttrain.docs"),
                 Input("model_dir", "Model", _FINAL_MODEL, fallback="posttrain.model")),
         sections=("sft", "train", "model", "decontam", "verify"), resources="ray", **_SFT),
    Step("dpo_pairs", "coderforge.posttrain.dpo_pairs:run_dpo_pairs",
         "k completions per tested prompt from the SFT model (vLLM), run in the sandbox: chosen passes, "
         "rejected fails.",
         output="pairs", inputs=(Input("instructions_dir", "Dataset", ("verify",)),
                                 Input("model_dir", "Model", ("sft", *_FINAL_MODEL), fallback="posttrain.model")),
         sections=("dpo", "vllm", "verify", "sandbox"), resources="vllm", **_DPO),
    Step("dpo", "coderforge.posttrain.dpo:run_dpo",
         "Offline DPO on Ray Train from the execution-feedback pairs; reference log-probabilities computed once.",
         output="model", output_kind="Model", payload="model",
         inputs=(Input("pairs_dir", "Dataset", ("dpo_pairs",)),
                 Input("model_dir", "Model", ("sft", *_FINAL_MODEL), fallback="posttrain.model")),
         sections=("dpo", "train", "model"), resources="ray", **_DPO),
    Step("evaluate", "coderforge.evals.step:run_evaluate",
         "Evaluate the final model: held-out perplexity, sandboxed HumanEval pass@k (and more per the recipe).",
         output="results", markdown_report="summary.md",
         inputs=(Input("model_dir", "Model", _FINAL_MODEL, fallback="posttrain.model"),
                 Input("data_dir", "Dataset", ("pack",), optional=True),
                 Input("sft_model_dir", "Model", ("sft",), optional=True),
                 Input("dpo_model_dir", "Model", ("dpo",), optional=True)),
         sections=("eval", "sandbox", "vllm"), resources="gpu", pipelines=("recipe", "posttrain")),
)

STEP_BY_NAME: dict[str, Step] = {s.name: s for s in STEPS}


def input_payload(inp: Input) -> str:
    """The subdirectory of the supplying step's output that ``inp`` reads (the same for every source)."""
    return STEP_BY_NAME[inp.sources[0]].payload


def _check_table() -> None:
    seen: set[str] = set()
    for step in STEPS:
        for inp in step.inputs:
            unknown = [s for s in inp.sources if s not in seen]
            if unknown:
                raise ValueError(f"step {step.name!r}: input {inp.arg!r} names {unknown}, not declared before it")
            kinds = {(STEP_BY_NAME[s].output_kind, STEP_BY_NAME[s].payload) for s in inp.sources}
            if kinds != {(inp.kind, input_payload(inp))}:
                raise ValueError(f"step {step.name!r}: the sources of {inp.arg!r} disagree on kind/payload: {kinds}")
        seen.add(step.name)


_check_table()


def get_step(name: str) -> Step:
    if name not in STEP_BY_NAME:
        raise KeyError(f"unknown step {name!r}; steps: {', '.join(STEP_BY_NAME)}")
    return STEP_BY_NAME[name]


def step_function(name: str) -> Callable[..., Any]:
    return get_step(name).load()


def steps_of(pipeline: str, cfg: RecipeConfig | None) -> tuple[str, ...]:
    """The steps ``pipeline`` runs for ``cfg``, in order (``cfg=None``: every step, as compiled
    without a recipe)."""
    if pipeline not in PIPELINES:
        raise ValueError(f"unknown pipeline {pipeline!r}; choose one of {', '.join(PIPELINES)}")
    return tuple(s.name for s in STEPS if pipeline in s.pipelines
                 and (cfg is None or pipeline in s.required_in or s.enabled(cfg)))


def wiring(pipeline: str, cfg: RecipeConfig | None) -> dict[str, dict[str, str]]:
    """For each step ``pipeline`` runs: input argument → the step that supplies it (an input with a
    recipe-key fallback and no supplier is left out: the step reads the recipe's path)."""
    running = steps_of(pipeline, cfg)
    out: dict[str, dict[str, str]] = {}
    for name in running:
        step = STEP_BY_NAME[name]
        out[name] = {}
        for inp in step.inputs:
            source = next((s for s in inp.sources if s in out), None)
            if source is not None:
                out[name][inp.arg] = source
            elif inp.optional:
                continue
            elif not inp.fallback:
                raise ValueError(f"pipeline {pipeline!r}: no step before {name!r} supplies {inp.arg!r} "
                                 f"(one of {', '.join(inp.sources)})")
            elif cfg is not None and not recipe_value(cfg, inp.fallback):
                raise ValueError(f"pipeline {pipeline!r}: step {name!r} reads {inp.arg!r} from the recipe key "
                                 f"{inp.fallback} (no step of this pipeline makes it); set it")
    return out


def recipe_value(cfg: RecipeConfig, dotted: str):
    value = cfg
    for key in dotted.split("."):
        value = getattr(value, key)
    return value


def step_params(cfg: RecipeConfig, name: str) -> dict[str, str]:
    """The recipe sections the step reads, flattened: its MLflow child run's parameters."""
    sections = set(get_step(name).sections)
    return {k: v for k, v in cfg.flat_params().items() if k.split(".", 1)[0] in sections}


def step_key(cfg: RecipeConfig, name: str) -> str:
    """Hash of what the step reads from the recipe: equal keys, equal configuration of the step."""
    blob = json.dumps(step_params(cfg, name), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
