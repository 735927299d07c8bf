"""The model registry against a real SQLite MLflow store: a tiny Qwen2 model (with the ChatML tokenizer)
registered from a step's run, loaded back with mlflow (transformers flavour and pyfunc) and with
transformers, versions counting up, tags on every version, the pyfunc fallback."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from coderforge.config import load_recipe_text
from coderforge.registry import TAG_FINGERPRINT, TAG_STAGE, model_tags, register_model
from coderforge.tracking import StepRun, _client
from tests.generate.conftest import build_vllm_test_model

PROMPT = "def add(a, b):\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_vllm_test_model(tmp_path_factory.mktemp("registry-model"), seed=3, hidden=64, heads=2, kv_heads=1,
                                 intermediate=128)


@pytest.fixture
def cfg():
    return load_recipe_text("run:\n  name: reg\ndata:\n  sources: [{uri: /tmp}]\n")


def _greedy(model, tok, prompt: str, n: int = 8) -> str:
    import torch

    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.eos_token_id)
    return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def test_register_load_back_versions_and_tags(tiny, cfg, mlflow_uri, tmp_path, monkeypatch):
    import mlflow
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from coderforge.tokens.tokenizer import CHATML_TEMPLATE

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)  # models:/ URIs resolve through the global URI
    with StepRun(mlflow_uri, None, "sft") as run:
        t0 = time.monotonic()
        info = register_model(mlflow_uri, run.run_id, str(tiny), "tiny-sft", model_tags(cfg, "sft"))
        first_seconds = time.monotonic() - t0
    assert (info.flavor, info.version, info.hf_dir, info.model_uri) == ("transformers", "1", "model",
                                                                        "models:/tiny-sft/1")
    assert first_seconds < 60, first_seconds
    ref_model = AutoModelForCausalLM.from_pretrained(str(tiny))
    ref_tok = AutoTokenizer.from_pretrained(str(tiny))
    expected = _greedy(ref_model, ref_tok, PROMPT)

    # back through mlflow: the transformers flavour's pipeline generates what the original model does
    pipe = mlflow.transformers.load_model(info.model_uri)
    assert _greedy(pipe.model, pipe.tokenizer, PROMPT) == expected
    assert pipe.tokenizer.chat_template == CHATML_TEMPLATE
    pyfunc_out = mlflow.pyfunc.load_model(info.model_uri).predict([PROMPT], params={"max_new_tokens": 4})
    assert isinstance(pyfunc_out, list) and isinstance(pyfunc_out[0], str)

    # back with plain transformers from the downloaded artifacts: the same weights
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "dl")))
    loaded = AutoModelForCausalLM.from_pretrained(local / info.hf_dir)
    ref_sd, got_sd = ref_model.state_dict(), loaded.state_dict()
    assert ref_sd.keys() == got_sd.keys() and all(torch.equal(ref_sd[k], got_sd[k]) for k in ref_sd)
    tok = AutoTokenizer.from_pretrained(local / "components" / "tokenizer")
    assert tok.chat_template == CHATML_TEMPLATE and tok.get_vocab() == ref_tok.get_vocab()

    # registering again (another run of the recipe) makes version 2, with its tags
    with StepRun(mlflow_uri, None, "sft") as run2:
        info2 = register_model(mlflow_uri, run2.run_id, str(tiny), "tiny-sft", model_tags(cfg, "sft", note="again"))
    assert info2.version == "2"
    client = _client(mlflow_uri)
    versions = sorted(int(v.version) for v in client.search_model_versions("name='tiny-sft'"))
    assert versions == [1, 2]
    v2 = client.get_model_version("tiny-sft", "2")
    assert v2.run_id == run2.run_id and v2.tags[TAG_FINGERPRINT] == cfg.fingerprint()
    assert v2.tags[TAG_STAGE] == "sft" and v2.tags["note"] == "again"
    assert v2.tags["coderforge.model_format"] == "transformers"
    assert client.get_run(run2.run_id).data.tags["coderforge.registered_model"] == "tiny-sft/2"
    assert client.get_model_version("tiny-sft", "1").run_id == run.run_id


def test_pyfunc_format_and_the_automatic_fallback(tiny, cfg, mlflow_uri, tmp_path, monkeypatch):
    import mlflow
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    with StepRun(mlflow_uri, None, "dpo") as run:
        info = register_model(mlflow_uri, run.run_id, str(tiny), "tiny-dpo", model_tags(cfg, "dpo"), flavor="pyfunc")
    assert (info.flavor, info.hf_dir) == ("pyfunc", f"artifacts/{tiny.name}")
    model = mlflow.pyfunc.load_model(info.model_uri)
    assert model.metadata.signature.inputs.input_types()[0].name == "string"
    out = model.predict([PROMPT, "x = "], params={"max_new_tokens": 4})
    assert len(out) == 2 and all(isinstance(x, str) for x in out)
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "dl")))
    AutoModelForCausalLM.from_pretrained(local / info.hf_dir)

    # a directory without a tokenizer: no text-generation pipeline, so the files go in as a pyfunc model
    broken = tmp_path / "no-tokenizer"
    shutil.copytree(tiny, broken)
    for f in broken.glob("tokenizer*"):
        f.unlink()
    with StepRun(mlflow_uri, None, "dpo") as run:
        info = register_model(mlflow_uri, run.run_id, str(broken), "tiny-dpo", model_tags(cfg, "dpo"))
    assert (info.flavor, info.version) == ("pyfunc", "2") and info.tags["coderforge.flavor_fallback"]
    with pytest.raises(Exception):  # noqa: B017 - explicit flavour: the failure is the caller's
        with StepRun(mlflow_uri, None, "dpo") as run:
            register_model(mlflow_uri, run.run_id, str(broken), "tiny-dpo", model_tags(cfg, "dpo"),
                           flavor="transformers")


def test_bad_calls_are_refused(tiny, mlflow_uri, tmp_path):
    with StepRun(mlflow_uri, None, "sft") as run:
        with pytest.raises(ValueError, match="coderforge.stage"):
            register_model(mlflow_uri, run.run_id, str(tiny), "x", {TAG_FINGERPRINT: "abc"})
        with pytest.raises(FileNotFoundError, match="no Hugging Face model"):
            register_model(mlflow_uri, run.run_id, str(tmp_path), "x", {TAG_FINGERPRINT: "a", TAG_STAGE: "sft"})


def test_register_from_s3(tiny, cfg, mlflow_uri, s3_env):
    from coderforge import storage

    storage.upload_dir(tiny, f"{s3_env}/sft/model")
    with StepRun(mlflow_uri, None, "sft") as run:
        info = register_model(mlflow_uri, run.run_id, f"{s3_env}/sft/model", "tiny-s3", model_tags(cfg, "sft"))
    assert info.version == "1" and info.tags["coderforge.source_dir"] == f"{s3_env}/sft/model"
