"""The SFT step's samples: where they come from, what is wrong with them, how they are mixed.

Every sample is a ``ChatSample``: a conversation (``messages``: ``{"role", "content"}`` with roles
system / user / assistant) from one *source*, the label ``sft.mix`` weighs it by:

* ``synthetic``: the verified synthetic set (``instructions_dir``, the verify step's
  ``InstructionSample`` shards, already in chat form);
* ``seeds``: mined seeds as instructions. Rule: user "Write the <Language> <function|class>
  `<name>` documented as follows:" and the seed's cleaned docstring; assistant: the seed's code
  (declaration with its documentation, as written in the corpus) in a fenced block;
* every ``sft.files`` entry: a JSONL file, one ``{"messages": [...]}`` per line (optional
  ``"language"``); its label is its ``name`` when one is mixed under it, else ``files`` (blank lines
  are not samples);
* ``fim``: FIM-format instructions from the curated documents (recipe.md §7.2), made by
  :func:`fim_middle`: tree-sitter parses the file, one AST node of a randomly chosen level
  (definition, block, multi-line statement, one-line statement) is the middle, the code before and
  after it (``seq_len // 2`` characters each, cut at line boundaries) the context. The user turn is
  Qwen's FIM prompt ``<|fim_prefix|>{pre}<|fim_suffix|>{suf}<|fim_middle|>`` with real control
  tokens (``pieces``), the assistant turn the middle.

Checks, in order, each with its ledger outcome: a malformed conversation (a role other than
system / user / assistant, system not first, non-string content, no assistant turn, a last turn that
is not the assistant's, a JSONL line that is not an object with a ``messages`` list) is quarantined
with the error; a conversation whose user or assistant turns are all blank is dropped ``empty``; a
source the mix does not weigh (weight 0 or absent) ``not_in_mix``; an overlap with a benchmark
``contaminated:<bench>/<item>`` (:func:`coderforge.posttrain.clean.decontaminate_samples`: word
n-grams over prompt + answer + tests, and the function names the answer defines).

Mixing (:func:`mix_copies`): ``sft.mix[source]`` is the source's sampling rate. A source of ``n``
usable samples enters ``round(rate * n)`` times: every sample ``floor(rate)`` times, and the rest of
the copies go to its samples ranked by a hash of ``(run.seed, sample id)`` (1 = each sample once,
0.5 = a deterministic half, 2 = each twice). With ``sft.max_samples`` the rates are scaled down
together so the set (FIM samples included) stays within it; the relative weights are kept.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from coderforge import records, storage
from coderforge.config import RecipeConfig
from coderforge.data.filters.syntax import GRAMMARS, parser_for
from coderforge.posttrain.clean import Drop, decontaminate_samples
from coderforge.posttrain.parse import LANG_TAGS, display_name, fenced
from coderforge.posttrain.samples import InstructionSample, read_samples, read_seeds
from coderforge.tokens import formats as F

ROLES = ("system", "user", "assistant")
FIM_GRAMMARS = {"python": "python", **GRAMMARS}  # document language -> tree-sitter grammar
FIM_SOURCE = "fim"
MIN_MIDDLE_CHARS = 8
_FENCE_TAG = re.compile(r"`{3,}[ \t]*([\w+#.-]+)")


@dataclass
class ChatSample:
    id: str  # unique over the step's inputs: "<source>:<original id>"
    source: str  # the label sft.mix weighs it by
    messages: list[dict]  # {"role", "content"} (+ "pieces": text and control tokens, for FIM prompts)
    language: str = ""
    repo: str = ""
    path: str = ""
    tests: str = ""

    @property
    def content(self) -> str:  # what the ledger counts as the sample's bytes
        return "".join(m["content"] for m in self.messages)


@dataclass
class Bad:
    """An input that is not a sample: quarantined with ``error``."""

    id: str
    repo: str
    path: str
    error: str
    nbytes: int = 0


# --- checks --------------------------------------------------------------------------------------
def message_error(messages) -> str | None:
    """Why ``messages`` is not a trainable conversation, or None."""
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty list"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            return f"message {i} must be an object with 'role' and 'content'"
        if m["role"] not in ROLES:
            return f"message {i}: unknown role {m['role']!r} (system, user, assistant)"
        if not isinstance(m.get("content"), str):
            return f"message {i}: content must be a string"
        if m["role"] == "system" and i:
            return f"message {i}: a system message can only come first"
    if messages[-1]["role"] != "assistant":
        return "the last message must be the assistant's (nothing to train on after it)"
    return None


def is_empty(messages: list[dict]) -> bool:
    def blank(role):
        return all(not m["content"].strip() for m in messages if m["role"] == role)

    return blank("assistant") or blank("user")


# --- sources -------------------------------------------------------------------------------------
def synthetic_samples(instructions_dir: str) -> Iterator[ChatSample | Bad]:
    for s in read_samples(instructions_dir):
        msgs = [{"role": m.get("role"), "content": m.get("content")} for m in (s.messages or [])]
        sid = f"synthetic:{s.id}"
        err = message_error(msgs)
        if err:
            yield Bad(sid, s.repo, s.path, err, len(s.content.encode("utf-8", "surrogatepass")))
        else:
            yield ChatSample(sid, "synthetic", msgs, s.language, s.repo, s.path, s.tests)


def seed_messages(language: str, kind: str, name: str, docstring: str, code: str) -> list[dict]:
    """A seed as an instruction: write the documented function or class; the answer is its code."""
    what = "class" if kind == "class" else "function"
    user = f"Write the {display_name(language)} {what} `{name}` documented as follows:\n\n{docstring.strip()}"
    return [{"role": "user", "content": user}, {"role": "assistant", "content": fenced(language, code)}]


def seed_samples(seeds_dir: str) -> Iterator[ChatSample]:
    for s in read_seeds(seeds_dir):
        yield ChatSample(f"seeds:{s.id}", "seeds", seed_messages(s.language, s.kind, s.name, s.docstring, s.code),
                         s.language, s.repo, s.path, s.doctest)


def file_label(cfg: RecipeConfig, f) -> str:
    """A file's label: its ``name`` (else its file name) when ``sft.mix`` weighs it alone, else ``files``."""
    name = f.name or Path(f.path).name
    return name if name in cfg.sft.mix else "files"


def file_samples(path: str, label: str) -> Iterator[ChatSample | Bad]:
    """The conversations of a JSONL file; a line that is not one is a ``Bad`` naming its error."""
    name = Path(path).name
    for no, line in enumerate(storage.read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        sid, where = f"{label}:{name}:{no}", f"{path}:{no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield Bad(sid, label, where, f"invalid JSON: {exc}", len(line.encode()))
            continue
        msgs = row.get("messages") if isinstance(row, dict) else None
        err = message_error(msgs) if isinstance(row, dict) else "a line must be a JSON object"
        if err:
            yield Bad(sid, label, where, err, len(line.encode()))
        else:
            yield ChatSample(sid, label, [{"role": m["role"], "content": m["content"]} for m in msgs],
                             str(row.get("language") or ""), label, where)


def count_file_lines(path: str) -> int:
    return sum(1 for line in storage.read_text(path).splitlines() if line.strip())


# --- FIM instructions from the curated documents ----------------------------------------------------
def _level(node, text: bytes) -> str | None:
    t = node.type
    if t.endswith(("_definition", "_declaration")):
        return "definition"
    if t == "block" or t.endswith(("_block", "_body")) or t == "compound_statement":
        return "block"
    if t.endswith("_statement"):
        return "statement" if b"\n" in text[node.start_byte:node.end_byte] else "line"
    return None


def fim_middle(content: str, grammar: str, rng: np.random.Generator, max_middle: int,
               context: int) -> tuple[str, str, str] | None:
    """(prefix, middle, suffix) around one AST node of ``content``, or None when no node qualifies.

    Candidates: named nodes without parse errors whose text is ``MIN_MIDDLE_CHARS``..``max_middle``
    characters; a level is drawn uniformly among the levels present, then a node of it. The prefix is
    at most ``context`` characters, starting at a line start; the suffix likewise, ending at a line end."""
    data = content.encode("utf-8", "surrogatepass")
    root = parser_for(grammar).parse(data).root_node
    levels: dict[str, list] = {}
    stack = [root]
    while stack:
        node = stack.pop()
        stack.extend(node.named_children)
        level = _level(node, data) if node.is_named and not node.has_error else None
        if level and MIN_MIDDLE_CHARS <= node.end_byte - node.start_byte <= max_middle:
            levels.setdefault(level, []).append(node)
    if not levels:
        return None
    names = sorted(levels)
    nodes = sorted(levels[names[int(rng.integers(len(names)))]], key=lambda n: (n.start_byte, n.end_byte))
    node = nodes[int(rng.integers(len(nodes)))]

    def dec(b: bytes) -> str:
        return b.decode("utf-8", "surrogatepass")

    pre, mid, suf = dec(data[:node.start_byte]), dec(data[node.start_byte:node.end_byte]), dec(data[node.end_byte:])
    if len(pre) > context:
        pre = pre[-context:]
        pre = pre[pre.index("\n") + 1:] if "\n" in pre else ""
    if len(suf) > context:
        suf = suf[:context]
        suf = suf[:suf.rindex("\n") + 1] if "\n" in suf else ""
    return pre, mid, suf


def fim_messages(pre: str, mid: str, suf: str) -> list[dict]:
    pieces = [F.PRE, pre, F.SUF, suf, F.MID]
    return [{"role": "user", "content": F.render(pieces), "pieces": pieces}, {"role": "assistant", "content": mid}]


def rank_unit(seed: int, key: str, salt: str) -> float:
    h = hashlib.blake2b(f"{salt}\x00{seed}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0**64


def fim_candidates(docs_dir: str, seed: int, limit: int) -> list[records.Document]:
    """The ``limit`` documents with a FIM grammar ranked first by a hash of ``(seed, id)``, in rank order
    (a bounded heap: the corpus is streamed, never held)."""
    heap: list[tuple[float, str, records.Document]] = []
    for doc in records.read_documents(docs_dir):
        if doc.lang not in FIM_GRAMMARS or not doc.content.strip():
            continue
        item = (-rank_unit(seed, doc.id, "sft-fim"), doc.id, doc)
        if len(heap) < limit:
            heapq.heappush(heap, item)
        elif item[:2] > heap[0][:2]:
            heapq.heapreplace(heap, item)
    return [d for _, _, d in sorted(heap, key=lambda x: (-x[0], x[1]))]


def fim_sample(doc: records.Document, seed: int, seq_len: int) -> ChatSample | str:
    """A FIM instruction from ``doc``, or the reason there is none (``no_fim_block``)."""
    rng = F.doc_rng(seed, doc.id, salt="sft-fim")
    grammar = FIM_GRAMMARS[doc.lang]
    if grammar == "c" and doc.path.endswith(".h"):
        grammar = "cpp"
    got = fim_middle(doc.content, grammar, rng, max_middle=seq_len // 2, context=seq_len // 2)
    if got is None:
        return "no_fim_block"
    pre, mid, suf = got
    lang = "cpp" if doc.lang in ("c", "c++") else doc.lang
    return ChatSample(f"{FIM_SOURCE}:{doc.id}", FIM_SOURCE, fim_messages(pre, mid, suf), lang, doc.repo, doc.path)


# --- decontamination and mixing ---------------------------------------------------------------------
def guess_language(s: ChatSample) -> str:
    """The sample's language, else the first fence tag of its answers that names one."""
    if s.language:
        return s.language
    for m in s.messages:
        if m["role"] == "assistant":
            for tag in _FENCE_TAG.findall(m["content"]):
                lang = next((k for k, tags in LANG_TAGS.items() if tag.lower() in tags), None)
                if lang:
                    return lang
    return ""


def decontaminate(cfg: RecipeConfig, samples: list[ChatSample]) -> dict[str, Drop]:
    """Sample id -> ``contaminated:<bench>/<item>`` for every sample overlapping a benchmark.

    The view matched is prompt (system + user turns), answer (assistant turns) and tests; a sample of
    unknown language has the function names of its answers read as Python, JavaScript and C-like code."""
    views = []
    for s in samples:
        prompt = "\n".join(m["content"] for m in s.messages if m["role"] != "assistant")
        answer = "\n".join(m["content"] for m in s.messages if m["role"] == "assistant")
        lang = guess_language(s)
        for language in [lang] if lang else ["python", "javascript", "cpp"]:
            views.append(InstructionSample(s.id, language, "", "", s.repo, s.path, "", problem=prompt,
                                           solution=answer, tests=s.tests))
    return decontaminate_samples(cfg, views)


def mix_copies(ids_by_source: dict[str, list[str]], rates: dict[str, float], seed: int) -> dict[str, int]:
    """Sample id -> copies (0 = not used): ``round(rate * n)`` per source, ``floor(rate)`` each and the
    remainder to the samples ranked first by a hash of ``(seed, id)``."""
    out: dict[str, int] = {}
    for source, ids in ids_by_source.items():
        rate = max(0.0, rates.get(source, 0.0))
        whole = math.floor(rate)
        extra = round(rate * len(ids)) - whole * len(ids)
        ranked = sorted(ids, key=lambda i: (rank_unit(seed, i, "sft-mix"), i))
        for k, sid in enumerate(ranked):
            out[sid] = whole + (1 if k < extra else 0)
    return out


def mix_rates(cfg: RecipeConfig, counts: dict[str, int]) -> dict[str, float]:
    """The sampling rate of each source: ``sft.mix``, scaled down together to fit ``sft.max_samples``."""
    rates = {s: float(cfg.sft.mix.get(s, 0.0)) for s in counts}
    cap = cfg.sft.max_samples
    if cap:
        budget = cap * (1.0 - cfg.sft.fim_share)
        total = sum(rates[s] * n for s, n in counts.items())
        if total > budget:
            rates = {s: r * budget / total for s, r in rates.items()}
    return rates


@dataclass
class Collected:
    samples: list[ChatSample] = field(default_factory=list)
    bad: list[Bad] = field(default_factory=list)
    dropped: list[tuple[ChatSample, str, str]] = field(default_factory=list)  # (sample, reason, detail)
    inputs: int = 0  # inputs read (the ledger's expected count for these sources)


def collect(cfg: RecipeConfig, instructions_dir: str | None, seeds_dir: str | None) -> Collected:
    """Every conversation of the synthetic set, the seeds and the instruction files, checked: usable
    samples in ``samples``, the rest in ``bad`` (quarantine) or ``dropped`` (with the reason)."""
    out = Collected()
    streams = []
    if instructions_dir:
        streams.append(synthetic_samples(instructions_dir))
        out.inputs += records.count_documents(instructions_dir)
    if seeds_dir:
        streams.append(seed_samples(seeds_dir))
        out.inputs += records.count_documents(seeds_dir)
    for f in cfg.sft.files:
        streams.append(file_samples(f.path, file_label(cfg, f)))
        out.inputs += count_file_lines(f.path)
    usable = []
    for stream in streams:
        for s in stream:
            if isinstance(s, Bad):
                out.bad.append(s)
            elif is_empty(s.messages):
                out.dropped.append((s, "empty", "no user or no assistant text"))
            elif cfg.sft.mix.get(s.source, 0.0) <= 0:
                out.dropped.append((s, "not_in_mix", f"sft.mix has no weight for {s.source!r}"))
            else:
                usable.append(s)
    drops = decontaminate(cfg, usable)
    for s in usable:
        d = drops.get(s.id)
        if d is None:
            out.samples.append(s)
        else:
            out.dropped.append((s, d.reason, d.detail))
    return out
