"""A recipe: pydantic models loaded from YAML, validated before anything runs.

Unknown keys and wrong types fail with the file, the dotted key and what was expected.
``--set key.sub=value`` overrides are applied to the YAML mapping before validation (values are
parsed as YAML scalars, so ``--set train.steps=20`` is an int). ``${stdlib}`` in source paths
expands to the running Python's standard library, ``${workdir}`` to the run's work directory,
``${recipe_dir}`` to the directory of the recipe file (for data files shipped next to a recipe).
"""

from __future__ import annotations

import base64
import hashlib
import json
import sysconfig
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from coderforge.config.base import B64_PREFIX, ConfigError, Section
from coderforge.config.data import (
    DataSection,
    DecontamSection,
    DedupSection,
    ExecutorSection,
    FilterSection,
    MixtureSection,
    QualitySection,
    RunSection,
)
from coderforge.config.k8s import K8sSection
from coderforge.config.posttrain import (
    DPOSection,
    PosttrainSection,
    SFTSection,
    SynthSection,
    VerifySection,
    VLLMSection,
)
from coderforge.config.training import (
    EvalSection,
    FimSection,
    ModelSection,
    PackSection,
    RepoSection,
    SandboxSection,
    TokenizerSection,
    TrackingSection,
    TrainSection,
)


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
    posttrain: PosttrainSection = Field(default_factory=PosttrainSection)
    synth: SynthSection = Field(default_factory=SynthSection)
    verify: VerifySection = Field(default_factory=VerifySection)
    vllm: VLLMSection = Field(default_factory=VLLMSection)
    sft: SFTSection = Field(default_factory=SFTSection)
    dpo: DPOSection = Field(default_factory=DPOSection)
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
                     workdir: str | None = None, recipe_dir: str | None = None,
                     defer: tuple[str, ...] = ()) -> RecipeConfig:
    """``defer``: variables left as they are, for the process that runs the step to expand (``stdlib`` for a
    container, whose Python is not this one)."""
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
    if recipe_dir:
        variables["recipe_dir"] = recipe_dir
    wd = (data.get("run") or {}).get("workdir") if isinstance(data.get("run"), dict) else None
    if wd:
        variables["workdir"] = str(wd)
    data = _expand(data, {k: v for k, v in variables.items() if k not in defer})
    try:
        return RecipeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(origin, exc)) from None


def load_recipe(path: str | Path, overrides: list[str] | None = None, workdir: str | None = None,
                defer: tuple[str, ...] = ()) -> RecipeConfig:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: recipe file not found")
    return load_recipe_text(path.read_text(), origin=str(path), overrides=overrides, workdir=workdir,
                            recipe_dir=str(path.resolve().parent), defer=defer)
