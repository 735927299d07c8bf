"""Recipe sections of post-training data: where generation runs (vLLM), seed mining, synthesis with
a teacher model, and execution verification of the synthetic instruction set."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from coderforge.config.base import Section
from coderforge.config.training import LongContextSection

SANDBOX_LANGUAGES = ("python", "javascript", "java", "cpp")


class PosttrainSection(Section):
    """What ``--pipeline posttrain`` starts from when no step of the pipeline makes it."""

    model: str | None = Field(None, description="the model to post-train: HF directory or s3:// prefix")
    docs: str | None = Field(None, description="curated document shards to mine seeds from (directory or s3://)")


class VLLMSection(Section):
    """vLLM's OpenAI-compatible server: started by the step from its own environment (local), or a
    server already running (``base_url``, e.g. the chart's vLLM Deployment on Kubernetes)."""

    base_url: str | None = Field(None, description="a running server's URL (…/v1 or its root); unset: start one")
    python: str | None = Field(None, description="the vLLM environment's interpreter (default: created on first use)")
    dtype: str = Field("auto", description="vLLM --dtype (float32 on CPU)")
    max_model_len: int = Field(2048, ge=64)
    tensor_parallel_size: int = Field(1, ge=1)
    replicas: int = Field(1, ge=1, description="Kubernetes: server replicas (data parallel)")
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    concurrency: int = Field(16, ge=1, description="requests in flight")
    request_timeout_s: float = Field(600.0, gt=0)
    max_retries: int = Field(4, ge=0)
    startup_timeout_s: float = Field(900.0, gt=0)
    seed: int = 0
    long_context: LongContextSection = Field(
        default_factory=LongContextSection, description="YaRN for every request of a server this recipe starts "
        "(--hf-overrides), for long inputs; the chart's vllm.longContext. The evaluate step sets its own")


class ProblemFile(Section):
    path: str = Field(..., description="JSONL of {'problem', 'solution', 'tests', 'language', 'id'?} (local or s3://)")
    name: str | None = Field(None, description="label (default: the file name without extension)")


class SynthSection(Section):
    """Seeds mined from the curated corpus, turned by a teacher model into problems with solutions and
    unit tests (OSS-Instruct style, recipe.md §6-§7), then kept only when they run in the sandbox."""

    enabled: bool = Field(False, description="run seeds → synthesise → verify in the recipe DAG")
    languages: list[Literal["python", "javascript", "java", "cpp"]] = Field(
        default_factory=lambda: list(SANDBOX_LANGUAGES))
    max_seeds_per_language: int = Field(200, ge=1)
    min_docstring_chars: int = Field(20, ge=1)
    prefer_doctests: bool = Field(True, description="seeds with examples (doctests, @example) are chosen first")
    max_seed_chars: int = Field(4000, ge=100)
    teacher: str | None = Field(None, description="HF causal LM directory or s3:// prefix; unset: this run's model")
    prompts_dir: str | None = Field(None, description="prompt templates (default: coderforge/posttrain/prompts)")
    samples_per_seed: int = Field(1, ge=1)
    problems: list[ProblemFile] = Field(default_factory=list, description=(
        "problem files with solutions and tests, verified in the sandbox alongside the teacher's samples"))
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(1024, ge=16)
    seed: int = 0


class VerifySection(Section):
    timeout_s: float = Field(10.0, gt=0, description="per sample (solution + tests)")
    memory_mb: int = Field(1024, ge=64)
    workers: int | None = Field(None, ge=1, description="parallel sandbox runs (default: the CPU count)")
    executor: Literal["local", "ray"] = Field("local", description="process pool here, Ray tasks on a cluster")
    near_dedup_threshold: float = Field(0.7, gt=0, le=1, description="MinHash Jaccard for instruction near-dups")
    decontam_ngram: int = Field(10, ge=1)
    decontam_function_names: bool = Field(True, description="recipe.md §4.5's function-name rule")


class StageOverrides(Section):
    """Training values of a post-training stage where they differ from the recipe's ``train``."""

    steps: int | None = Field(None, ge=1)
    micro_batch_size: int | None = Field(None, ge=1)
    grad_accum: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)
    warmup_steps: int | None = Field(None, ge=0)
    schedule: Literal["cosine", "wsd", "wcl", "constant"] | None = None
    checkpoint_every: int | None = Field(None, ge=1)


class InstructionFile(Section):
    path: str = Field(..., description="JSONL of {'messages': [{'role', 'content'}, ...]} (local or s3://)")
    name: str | None = Field(None, description="label in the mix (default: the file name)")


class SFTSection(Section):
    """Supervised fine-tuning (recipe.md §7.1-§7.3): ChatML samples, loss on assistant turns only."""

    enabled: bool = Field(False, description="run sft in the recipe DAG")
    seq_len: int = Field(2048, ge=64, description="packed row length; longer samples are dropped, never cut")
    only_last_turn: bool = Field(False, description="train only the last assistant turn of each conversation")
    files: list[InstructionFile] = Field(default_factory=list, description="user instruction JSONL files")
    mix: dict[str, float] = Field(default_factory=lambda: {"synthetic": 1.0, "seeds": 1.0, "files": 1.0},
                                  description="relative weights of the sources: synthetic, seeds, files")
    fim_share: float = Field(0.1, ge=0, lt=1, description="share of FIM-format instruction samples (§7.2)")
    max_samples: int | None = Field(None, ge=1)
    heldout_fraction: float = Field(0.1, ge=0, lt=0.5, description="samples held out for the SFT eval loss")
    train: StageOverrides = Field(default_factory=StageOverrides)


class DPOSection(Section):
    """Offline DPO from execution feedback (recipe.md §7.4)."""

    enabled: bool = Field(False, description="run dpo_pairs and dpo in the recipe DAG")
    beta: float = Field(0.1, gt=0)
    completions: int = Field(4, ge=2, description="samples per prompt from the SFT model")
    temperature: float = Field(0.8, gt=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(512, ge=16)
    max_prompts: int | None = Field(None, ge=1)
    reference_as_chosen: bool = Field(True, description="no passing completion: the verified solution is chosen")
    seq_len: int = Field(2048, ge=64)
    heldout_fraction: float = Field(0.1, ge=0, lt=0.5, description="pairs held out for reward accuracy")
    train: StageOverrides = Field(default_factory=lambda: StageOverrides(lr=5e-5, warmup_steps=0))
