"""Recipe sections of tokens and training: tokenizer, packing, FIM, repo-level stage, model,
training, sandbox, evaluation and tracking."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from coderforge.config.base import Section


class TokenizerSection(Section):
    """Byte-level BPE with Qwen2.5's 22 control tokens after the regular vocabulary (recipe.md §2)."""

    mode: Literal["train", "load"] = "train"
    path: str | None = Field(None, description="tokenizer directory (mode=load)")
    total_vocab_size: int = Field(8192, ge=256 + 1 + 22, description="mode=train: len(tokenizer), the regular "
                                  "BPE tokens plus the 22 control tokens, which take the last 22 ids (Qwen2.5: "
                                  "151665 = 151643 regular + 22, <|endoftext|> = 151643)")
    min_frequency: int = Field(2, ge=1)
    max_training_chars: int = Field(50_000_000, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _renamed_vocab_size(cls, data):
        if isinstance(data, dict) and "vocab_size" in data:
            n = data["vocab_size"]
            raise ValueError(f"tokenizer.vocab_size is no longer accepted (it was read as the total while "
                             f"recipes described it as the regular tokens): write tokenizer.total_vocab_size = "
                             f"regular BPE tokens + 22 control tokens (vocab_size {n} meant total_vocab_size "
                             f"{n}; Qwen2.5's 151643 regular tokens are total_vocab_size 151665)")
        return data

    @model_validator(mode="after")
    def _load_needs_path(self):
        if self.mode == "load" and not self.path:
            raise ValueError("tokenizer.mode=load needs tokenizer.path")
        return self


class PackSection(Section):
    seq_len: int = Field(8192, ge=16)
    rows_per_shard: int = Field(4096, ge=1)
    packing: Literal["best_fit", "stream"] = Field(
        "best_fit", description="best_fit keeps samples whole in a row when they fit; stream cuts rows at seq_len")
    max_open_rows: int = Field(512, ge=1, description="best_fit: rows kept open for filling")


class FimSection(Section):
    """File-level fill-in-the-middle (recipe.md §3.1, §3.4): per document, before packing."""

    rate: float = Field(0.5, ge=0, le=1, description="fraction of training documents turned into FIM samples")
    spm_rate: float = Field(0.0, ge=0, le=1, description="fraction of FIM samples in SPM order (Qwen: PSM only)")
    seed: int | None = Field(None, description="FIM randomness; default run.seed")
    apply_to_heldout: bool = Field(False, description="FIM held-out documents too (default: plain, for perplexity)")


class RepoSection(Section):
    """Repo-level samples (recipe.md §3.2, §9.3): files in dependency order, `<|repo_name|>`/`<|file_sep|>`."""

    enabled: bool = Field(True, description="run the repo-level stage (pack + pretrain) in the recipe DAG")
    steps: int | None = Field(None, ge=1, description="optimizer steps of the repo stage (default train.steps)")
    micro_batch_size: int | None = Field(None, ge=1, description="rows per worker step (default train's)")
    lr: float | None = Field(None, gt=0, description="peak learning rate of the repo stage (default train.lr)")
    seq_len: int = Field(32768, ge=16, description="row length of the repo-level stage")
    fim_rate: float = Field(0.5, ge=0, le=1, description="repo-level FIM of the last file of a sample")
    fim_reserve_tokens: int = Field(8, ge=0, description="room kept per sample for the FIM control tokens")


class ModelSection(Section):
    """A Qwen2ForCausalLM shape: a named Qwen2.5-Coder size or an explicit debug shape."""

    size: Literal["debug", "debug-tiny", "debug-small", "debug-medium", "0.5B", "1.5B", "3B", "7B", "14B", "32B",
                  "custom"] = Field("debug", description="a Qwen2.5-Coder size, a named debug size, or debug/custom "
                                                         "= the explicit fields below")
    hidden_size: int = Field(64, ge=8)
    num_hidden_layers: int = Field(2, ge=1)
    num_attention_heads: int = Field(4, ge=1)
    num_key_value_heads: int = Field(2, ge=1)
    intermediate_size: int = Field(176, ge=8)
    rope_theta: float = Field(10_000.0, gt=0)
    max_position_embeddings: int = Field(8192, ge=16)
    tie_word_embeddings: bool = True
    init_from: str | None = Field(None, description="continue pretraining from this HF checkpoint")


class AnnealFile(Section):
    """An instruction JSONL file mixed into the anneal phase (the format of ``sft.files``)."""

    path: str = Field(..., description="JSONL of {'messages': [{'role', 'content'}, ...]} (local or s3://)")
    name: str | None = Field(None, description="label of its samples (default: the file name)")
    kind: Literal["code", "nl", "auto"] = Field(
        "auto", description="code or natural-language instructions; auto: per sample, code when it names a "
                            "programming language or its answer has a fenced block tagged with one")


class AnnealSection(Section):
    """The last phase of a WSD / WCL schedule (recipe.md §9.5-§9.6, §10): its length, the shape of its
    learning-rate decay and the data it trains on."""

    fraction: float | None = Field(
        None, gt=0, lt=1, description="share of a stage's steps in the anneal phase; default: wcl 7/102 "
                                      "(Table 2-1: 7B linear-stage tokens after 95B), wsd 0.1 (MiniCPM)")
    shape: Literal["linear", "exponential"] = Field(
        "linear", description="decay to min_lr_ratio x peak: linear (Abacus) or exponential (MiniCPM's WSD)")
    mix: dict[Literal["pretrain", "instructions"], float] = Field(
        default_factory=lambda: {"pretrain": 1.0}, description="file-level stage: rows of the anneal phase "
        "by source, relative weights (Abacus: pretrain 0.8, instructions 0.2); pretrain rows continue the "
        "pretraining stream, instruction rows come from the pack_anneal step")
    code_nl: tuple[float, float] = Field((1.0, 1.0), description="code : natural-language instruction rows "
                                                                 "inside the instruction share (Abacus 1:1)")
    instruction_files: list[AnnealFile] = Field(default_factory=list, description="instruction JSONL files")

    @model_validator(mode="after")
    def _check(self):
        if any(w < 0 for w in self.mix.values()) or sum(self.mix.values()) <= 0:
            raise ValueError(f"train.anneal.mix needs non-negative weights with a positive sum, got {self.mix}")
        if min(self.code_nl) < 0 or sum(self.code_nl) <= 0:
            raise ValueError(f"train.anneal.code_nl needs non-negative weights with a positive sum: {self.code_nl}")
        if self.instruction_share > 0 and not self.instruction_files:
            raise ValueError("train.anneal.mix gives instructions a share: list train.anneal.instruction_files")
        labels = [f.name or f.path.rstrip("/").rsplit("/", 1)[-1] for f in self.instruction_files]
        if len(set(labels)) != len(labels):
            raise ValueError(f"train.anneal.instruction_files: labels must differ (set name): {labels}")
        return self

    @property
    def instruction_share(self) -> float:
        return self.mix.get("instructions", 0.0) / sum(self.mix.values())

    def source_weights(self) -> dict[str, float]:
        """Share of the anneal rows per source (``pretrain``, ``code``, ``nl``), summing to 1; ``{}``
        when the anneal phase trains on pretraining rows only (no data switch)."""
        q = self.instruction_share
        if q <= 0:
            return {}
        c = self.code_nl[0] / sum(self.code_nl)
        return {k: v for k, v in (("pretrain", 1 - q), ("code", q * c), ("nl", q * (1 - c))) if v > 0}


class TrainSection(Section):
    steps: int = Field(100, ge=1)
    micro_batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(3e-3, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int = Field(10, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    schedule: Literal["cosine", "wsd", "wcl", "constant"] = "cosine"
    num_workers: int = Field(2, ge=1)
    use_gpu: bool = False
    dtype: Literal["float32", "bfloat16"] = "float32"
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(50, ge=1)
    strategy: Literal["ddp", "fsdp2", "deepspeed"] = Field(
        "ddp", description="data parallelism: DDP, FSDP2 (fully_shard per layer) or DeepSpeed ZeRO-2")
    attention: Literal["auto", "sdpa", "flex", "varlen"] = Field(
        "auto", description="document-masked attention: flex (FlexAttention BlockMask, GPU), sdpa (dense "
                            "mask) or varlen (per-document sdpa, no SxS mask); auto = flex on GPU, on CPU "
                            "sdpa below 2048-token rows and varlen from there")
    activation_checkpointing: bool = False
    compile: bool = Field(False, description="torch.compile each decoder layer and the loss chunk")
    loss_chunk_tokens: int = Field(4096, ge=1, description="tokens per chunk of the chunked cross-entropy")
    anneal: AnnealSection = Field(default_factory=AnnealSection, description="wsd/wcl: the last phase (length, "
                                  "decay shape, data mix)")
    wcl_cosine_end: float = Field(0.62, gt=0, le=1, description="WCL: cosine phase ends at this x peak LR")
    max_failures: int = Field(2, ge=0, description="Ray Train FailureConfig: worker-group restarts")
    checkpoints_to_keep: int = Field(2, ge=1)
    storage: str | None = Field(None, description="Ray Train storage (local path or s3://); default "
                                                  "WORKDIR/ray_results")
    peak_tflops: float | None = Field(None, gt=0, description="per-device peak for MFU (default: known GPUs)")

    @model_validator(mode="after")
    def _anneal_needs_its_phase(self):
        if self.anneal.instruction_share > 0 and self.schedule not in ("wsd", "wcl"):
            raise ValueError(f"train.anneal.mix switches the data in the anneal phase, which schedule "
                             f"{self.schedule!r} does not have: use wsd or wcl")
        if self.anneal.shape == "exponential" and self.min_lr_ratio <= 0:
            raise ValueError("train.anneal.shape=exponential decays towards min_lr_ratio x peak: it must be > 0")
        return self


class SandboxSection(Section):
    """Where model-written code runs (coderforge.sandbox)."""

    allow_unisolated: bool = Field(False, description="run with resource limits only where namespaces are "
                                                      "unavailable (otherwise such runs are refused)")
    workers: int | None = Field(None, ge=1, description="parallel programs; default: CPUs available")
    scratch_mb: int = Field(64, ge=1, description="size of the per-run scratch tmpfs")
    max_output_bytes: int = Field(65536, ge=1024)


YARN_BETA_FAST, YARN_BETA_SLOW = 32.0, 1.0  # YaRN's (and Qwen's) ramp bounds when a recipe leaves them unset


class LongContextSection(Section):
    """YaRN at inference time (recipe.md §5.1). Models are saved as trained (no rope_scaling,
    max_position_embeddings = the trained length); this switch adds YaRN to the model's config when it is
    loaded or served: RoPE scaled by ``yarn_factor`` from ``original_max_position_embeddings``."""

    enabled: bool = Field(False, description="turn YaRN on (off: the model runs as saved, up to its trained length)")
    yarn_factor: float = Field(4.0, gt=1, description="context extension factor (Qwen2.5-Coder: 4, 32K -> 128K)")
    original_max_position_embeddings: int | None = Field(
        None, ge=16, description="the trained length YaRN scales from; default: the model's max_position_embeddings")
    beta_fast: float | None = Field(None, gt=0, description="YaRN keeps RoPE dimensions turning more than this many "
                                    "times over the trained length (unset: 32, the YaRN/Qwen default)")
    beta_slow: float | None = Field(None, gt=0, description="and interpolates those turning fewer times than this "
                                    "(unset: 1); models trained far shorter than 32K need both lower "
                                    "(benchmarks/long_context.py: 4 and 0.5 at 128 tokens)")

    @model_validator(mode="after")
    def _betas_ordered(self):
        fast, slow = self.betas()
        if fast <= slow:
            raise ValueError(f"long_context: beta_fast ({fast}) must be above beta_slow ({slow})")
        return self

    def betas(self) -> tuple[float, float]:
        """(beta_fast, beta_slow) as YaRN applies them: the recipe's, or YaRN's defaults 32 and 1."""
        return (self.beta_fast or YARN_BETA_FAST, self.beta_slow or YARN_BETA_SLOW)


class EvalSection(Section):
    humaneval_problems: int = Field(5, ge=0, le=164, description="first N HumanEval problems (0 = skip)")
    max_new_tokens: int = Field(128, ge=1)
    timeout_s: float = Field(5.0, gt=0)
    memory_mb: int = Field(512, ge=64)
    heldout_max_rows: int = Field(64, ge=1)
    suite: list[Literal["heldout", "humaneval", "mbpp", "humaneval_plus", "mbpp_plus", "multipl_e", "fim",
                        "needle"]] = Field(
        default_factory=lambda: ["heldout", "humaneval"], description="benchmarks the evaluate step runs")
    backend: Literal["vllm", "transformers"] = Field(
        "vllm", description="generation: a vLLM server per model (the vllm section), or transformers in-process")
    mbpp_path: str | None = Field(None, description="MBPP JSONL (original or evalplus format)")
    humaneval_plus_path: str | None = Field(None, description="HumanEval+ JSONL (evalplus format)")
    mbpp_plus_path: str | None = Field(None, description="MBPP+ JSONL (evalplus format)")
    jsonl_problems: int | None = Field(None, ge=1, description="first N problems of each JSONL benchmark")
    samples: int = Field(1, ge=1, description="completions per problem of the sampled run (pass@k)")
    temperature: float = Field(0.0, ge=0.0, description="0: greedy pass@1 only; >0: also a sampled run of "
                                                        "`samples` completions per problem for pass@k")
    pass_k: list[int] = Field(default_factory=lambda: [1], description="k of the sampled run's pass@k (k <= samples)")
    fim_problems: int = Field(20, ge=1, le=164, description="HumanEval-FIM single-line tasks")
    needle_lengths: list[int] = Field(default_factory=lambda: [256], description="haystack lengths in tokens")
    needle_depths: list[float] = Field(default_factory=lambda: [0.0, 0.5, 1.0])
    long_context: LongContextSection = Field(
        default_factory=LongContextSection, description="YaRN for needle lengths beyond the model's trained "
        "length (run on a separate backend, metrics needle_yarn_*); every other benchmark runs without it")
    batch_size: int = Field(8, ge=1, description="prompts per generation batch (transformers backend)")
    multipl_e_paths: dict[Literal["python", "javascript", "java", "cpp"], str] = Field(
        default_factory=dict, description="MultiPL-E JSONL per language (fields: name or task_id, prompt, tests, "
                                          "stop_tokens, language); benchmark multipl_e_<language>")
    instruct_max_new_tokens: int = Field(512, ge=1, description="answer length of SFT/DPO models (chat template)")
    instruct_prefill: bool = Field(True, description="start the assistant turn with the opening code fence and "
                                                     "stop at the closing one (Qwen2.5-Coder's EvalPlus protocol)")


class TrackingSection(Section):
    experiment: str = "coderforge"
    uri: str | None = Field(None, description="MLflow tracking URI; MLFLOW_TRACKING_URI overrides; "
                                             "default sqlite under the work directory")


