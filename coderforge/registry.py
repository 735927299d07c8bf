"""The model registry: a step's model directory logged as an MLflow model in the step's run and
registered under a name, one new version per registration.

Format (decided by ``tests/test_registry.py``): MLflow's **transformers flavour** (task
``text-generation``) — ``mlflow.transformers.load_model`` gives a ready pipeline, pyfunc ``predict``
and ``mlflow models serve`` work, and the files stay a Hugging Face checkpoint (``model/`` holds the
config and safetensors weights, ``components/tokenizer/`` the tokenizer with its chat template), so
``transformers.AutoModelForCausalLM.from_pretrained`` loads them as they are. With mlflow 3.17.2 and
transformers 5.23.0 it works offline under two conditions, both met here:

* the model and tokenizer are passed as objects: passing the checkpoint's path fails
  (``mlflow.transformers`` reads ``pipelines.check_task(task)[1]["impl"].__name__``, and transformers 5
  names the pipeline class as a string there: ``AttributeError``);
* ``pip_requirements`` are given: MLflow's default requirement list pins ``torchvision`` for every
  torch model and fails where it is not installed (as here); the requirements written are the
  installed torch and transformers (and accelerate, if installed).

The checkpoint is loaded in memory to be logged (``dtype="auto"``: as stored). Where the
transformers flavour cannot be built (a model transformers' text-generation pipeline does not take,
a directory without tokenizer files), ``flavor="auto"`` falls back to a **pyfunc** model that carries the
directory unchanged as the artifact ``model`` (``artifacts/<directory name>/``), with a string → string signature
(``predict`` generates greedily; parameter ``max_new_tokens``), and says so in the version's tags.

Each version carries the caller's tags, which must include the recipe fingerprint
(``coderforge.recipe_fingerprint``) and the stage (``coderforge.stage``; ``model_tags`` builds both),
plus ``coderforge.model_format`` and ``coderforge.hf_dir`` (where the Hugging Face directory lies in
the logged model). The run gets the tag ``coderforge.registered_model = <name>/<version>``.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import mlflow.pyfunc

from coderforge import storage

log = logging.getLogger("coderforge.registry")

TAG_FINGERPRINT = "coderforge.recipe_fingerprint"
TAG_STAGE = "coderforge.stage"
REQUIRED_TAGS = (TAG_FINGERPRINT, TAG_STAGE)
ARTIFACT_PATH = "model"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


@dataclass(frozen=True)
class RegisteredModel:
    """What ``register_model`` registered (the fields of MLflow's ``ModelVersion`` a caller needs)."""

    name: str
    version: str
    run_id: str
    source: str  # the logged model's artifact URI
    flavor: str  # "transformers" | "pyfunc"
    hf_dir: str  # the Hugging Face directory inside the logged model
    tags: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def model_tags(cfg, stage: str, **extra: str) -> dict[str, str]:
    """The tags every registered version carries: the recipe fingerprint, the stage, the run's name."""
    return {TAG_FINGERPRINT: cfg.fingerprint(), TAG_STAGE: stage, "coderforge.run_name": cfg.run.name,
            **{k: str(v) for k, v in extra.items()}}


def _requirements() -> list[str]:
    reqs = []
    for dist in ("torch", "transformers", "accelerate"):
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        reqs.append(f"{dist}=={version.split('+')[0]}")  # no local label (+cpu): installable from PyPI
    return reqs


class CausalLMModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper of a Hugging Face causal LM directory (the artifact ``model``): prompts in,
    greedy continuations out."""

    def load_context(self, context):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = context.artifacts["model"]
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path).eval()

    def predict(self, context, model_input, params=None):
        import torch

        prompts = model_input.iloc[:, 0].tolist() if hasattr(model_input, "iloc") else list(model_input)
        max_new = int((params or {}).get("max_new_tokens", 64))
        out = []
        for prompt in prompts:
            ids = self.tokenizer(str(prompt), return_tensors="pt", add_special_tokens=False)
            with torch.no_grad():
                gen = self.model.generate(**ids, max_new_tokens=max_new, do_sample=False,
                                          pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
            out.append(self.tokenizer.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
        return out


def _save_transformers(model_dir: Path, dest: Path) -> str:
    import mlflow.transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not any((model_dir / f).exists() for f in TOKENIZER_FILES):
        # transformers 5 then returns an empty Qwen2Tokenizer (1 token) instead of failing
        raise FileNotFoundError(f"no tokenizer in {model_dir} (none of {', '.join(TOKENIZER_FILES)})")
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype="auto")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    mlflow.transformers.save_model({"model": model, "tokenizer": tokenizer}, str(dest), task="text-generation",
                                   pip_requirements=_requirements())
    return "model"


def _save_pyfunc(model_dir: Path, dest: Path) -> str:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    signature = ModelSignature(inputs=Schema([ColSpec("string")]), outputs=Schema([ColSpec("string")]),
                               params=ParamSchema([ParamSpec("max_new_tokens", "long", 64)]))
    mlflow.pyfunc.save_model(str(dest), python_model=CausalLMModel(), artifacts={"model": str(model_dir)},
                             signature=signature, pip_requirements=_requirements())
    from mlflow.models import Model

    # the artifact's directory is named after the source directory: where it went is in the MLmodel
    return Model.load(str(dest / "MLmodel")).flavors["python_function"]["artifacts"]["model"]["path"]


def save_model(model_dir: Path, dest: Path, flavor: str = "auto") -> tuple[str, str, str]:
    """Write the MLflow model of ``model_dir`` to ``dest``; ``(flavor used, the Hugging Face directory in
    it, why the transformers flavour was not used or "")``."""
    if flavor not in ("auto", "transformers", "pyfunc"):
        raise ValueError(f"flavor must be auto, transformers or pyfunc, got {flavor!r}")
    reason = ""
    if flavor in ("auto", "transformers"):
        try:
            return "transformers", _save_transformers(model_dir, dest), ""
        except Exception as exc:  # any failure to build the flavour: fall back (auto) or fail (transformers)
            if flavor == "transformers":
                raise
            reason = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("registry: the transformers flavour failed for %s (%s); logging a pyfunc model", model_dir,
                        reason)
            import shutil

            shutil.rmtree(dest, ignore_errors=True)
    return "pyfunc", _save_pyfunc(model_dir, dest), reason


def _ensure_registered(client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description="coderforge models (one version per registered run)")
    except MlflowException as exc:  # registered before (by this or a concurrent step)
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code) and "already exists" not in str(exc):
            raise


def register_model(tracking_uri: str, run_id: str, model_dir: str, name: str, tags: dict[str, str], *,
                   flavor: str = "auto", artifact_path: str = ARTIFACT_PATH) -> RegisteredModel:
    """Log ``model_dir`` (a Hugging Face causal LM directory with its tokenizer, local or ``s3://``) as an
    MLflow model in run ``run_id`` and register it as a new version of ``name`` with ``tags``."""
    from mlflow.tracking import MlflowClient

    missing = [t for t in REQUIRED_TAGS if not tags.get(t)]
    if missing:
        raise ValueError(f"register_model: tags must include {', '.join(missing)} (see model_tags)")
    t0 = time.monotonic()
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    with tempfile.TemporaryDirectory(prefix="coderforge-register-") as tmp:
        local = Path(storage.download_dir(model_dir, Path(tmp) / "hf")) if storage.is_s3(model_dir) \
            else Path(storage.local_path(model_dir))
        if not (local / "config.json").exists():
            raise FileNotFoundError(f"register_model: {model_dir} holds no Hugging Face model (no config.json)")
        used, hf_dir, fallback = save_model(local, Path(tmp) / "mlflow-model", flavor)
        client.log_artifacts(run_id, str(Path(tmp) / "mlflow-model"), artifact_path)
    source = client.get_run(run_id).info.artifact_uri.rstrip("/") + "/" + artifact_path
    all_tags = {**{k: str(v) for k, v in tags.items()}, "coderforge.model_format": used,
                "coderforge.hf_dir": hf_dir, "coderforge.source_dir": str(model_dir)}
    if fallback:
        all_tags["coderforge.flavor_fallback"] = fallback
    _ensure_registered(client, name)
    mv = client.create_model_version(name, source, run_id=run_id, tags=all_tags,
                                     description=f"{tags[TAG_STAGE]} model of run {run_id}")
    client.set_tag(run_id, "coderforge.registered_model", f"{name}/{mv.version}")
    seconds = round(time.monotonic() - t0, 3)
    log.info("registry: %s version %s (%s) from %s in %.1f s", name, mv.version, used, model_dir, seconds)
    return RegisteredModel(name, str(mv.version), run_id, source, used, hf_dir, all_tags, seconds)
