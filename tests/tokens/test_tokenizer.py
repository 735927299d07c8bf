"""Tokenizer: Qwen2-style BPE training, the Qwen2.5 control-token layout, loading real Qwen files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer
from tokenizers.models import BPE

from coderforge import ledger
from coderforge.tokens import tokenizer as T
from coderforge.tracking import NullRun
from tests.tokens._corpus import recipe


def test_control_tokens_follow_the_vocabulary_in_qwen_order(small_tokenizer):
    tok = Tokenizer.from_file(str(Path(small_tokenizer) / "tokenizer.json"))
    base = tok.get_vocab_size(with_added_tokens=False)
    assert base == 2048 - 22
    ids = [tok.token_to_id(t) for t in T.CONTROL_TOKENS]
    assert ids == list(range(base, base + 22))
    assert T.CONTROL_TOKENS[0] == "<|endoftext|>" and T.CONTROL_TOKENS[16] == "<|fim_prefix|>"
    assert T.CONTROL_TOKENS[-2:] == ("<|repo_name|>", "<|file_sep|>")
    flags = {a.content: a.special for a in tok.get_added_tokens_decoder().values()}
    assert [flags[t] for t in T.CONTROL_TOKENS] == [True] * 14 + [False] * 8


def test_saved_tokenizer_loads_with_transformers(small_tokenizer):
    hf = T.load_hf(small_tokenizer)
    info = T.tokenizer_info(small_tokenizer)
    assert len(hf) == info.vocab_size == 2048
    assert hf.eos_token == hf.pad_token == "<|endoftext|>"
    assert hf.eos_token_id == hf.pad_token_id == info.eos_id == 2048 - 22
    assert hf.bos_token is None
    text = "total = 12345 + x\n"
    ids = hf(text)["input_ids"]
    # digits are split one by one (Qwen2 pre-tokenisation)
    digit_tokens = [hf.convert_ids_to_tokens(i) for i in ids if hf.decode([i]).strip().isdigit()]
    assert digit_tokens == ["1", "2", "3", "4", "5"]
    assert hf.decode(ids) == text
    fim = "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>c<|endoftext|>"
    fim_ids = hf(fim)["input_ids"]
    assert fim_ids[0] == info.id("<|fim_prefix|>")
    # FIM tokens are not "special": skip_special_tokens keeps them, drops <|endoftext|>
    assert hf.decode(fim_ids, skip_special_tokens=True) == "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>c"


def test_chat_template_is_chatml(small_tokenizer):
    hf = T.load_hf(small_tokenizer)
    convo = [{"role": "user", "content": "Write add(a, b)."}, {"role": "assistant", "content": "def add(a, b): ..."}]
    rendered = hf.apply_chat_template(convo, tokenize=False)
    assert rendered == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                        "<|im_start|>user\nWrite add(a, b).<|im_end|>\n"
                        "<|im_start|>assistant\ndef add(a, b): ...<|im_end|>\n")
    assert rendered == T.chatml(convo)
    with_system = [{"role": "system", "content": "Be terse."}, convo[0]]
    assert hf.apply_chat_template(with_system, tokenize=False, add_generation_prompt=True) == \
        T.chatml(with_system, add_generation_prompt=True)
    assert T.chatml(with_system, add_generation_prompt=True).endswith("<|im_start|>assistant\n")


def test_run_tokenizer_accounts_for_every_document(small_docs, small_tokenizer):
    rows = ledger.read_ledger(small_tokenizer)
    summary = ledger.read_summary(small_tokenizer)
    assert summary["in"] == len(rows) == summary["kept"] + summary["dropped"] + summary["quarantined"]
    assert {r["reason"] for r in rows if r["status"] == "dropped"} == {"empty"}
    assert any(r["id"] == "control-text" and r["status"] == "kept" for r in rows)


def test_training_char_budget_is_a_deterministic_sample(small_docs, tmp_path):
    cfg = recipe(tokenizer={"total_vocab_size": 600, "max_training_chars": 200_000})
    a = T.run_tokenizer(cfg, small_docs, str(tmp_path / "a"), NullRun())
    b = T.run_tokenizer(cfg, small_docs, str(tmp_path / "b"), NullRun())
    assert 0 < a.metrics["training_chars"] <= 200_000
    assert a.ledger.reasons.get("beyond_training_char_budget", 0) > 0
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()
    assert b.metrics == a.metrics


def qwen_format_tokenizer(out: Path) -> Path:
    """A tokenizer laid out exactly like Qwen2.5-Coder's: 151,643 regular tokens (a BPE trained on a
    little text, padded with unreachable filler entries to Qwen's size), the 22 control tokens on
    ids 151643…151664, Qwen's pre-tokeniser and tokenizer_config."""
    small = T.train_bpe(["def add(a, b):\n    return a + b\n" * 50, "class Foo:\n    pass\n" * 20], 300, 1)
    model = json.loads(small.to_str())["model"]
    vocab = dict(model["vocab"])
    for i in range(T.QWEN_REGULAR_VOCAB - len(vocab)):
        vocab[f"\u0100filler{i}"] = len(vocab)
    assert len(vocab) == T.QWEN_REGULAR_VOCAB
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tok = T.qwen_pipeline(Tokenizer(BPE(vocab=vocab, merges=merges, unk_token=None, fuse_unk=False,
                                        byte_fallback=False)))
    T.add_control_tokens(tok)
    out.mkdir(parents=True)
    T.save_hf(tok, out)
    return out


def test_real_qwen_format_tokenizer_loads_unchanged_and_keeps_ids(tmp_path):
    src = qwen_format_tokenizer(tmp_path / "qwen")
    cfg = recipe(tokenizer={"mode": "load", "path": str(src)})
    res = T.run_tokenizer(cfg, "/unused-in-load-mode", str(tmp_path / "out"), NullRun())
    out = tmp_path / "out"
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (out / name).read_bytes() == (src / name).read_bytes()
    assert res.ledger is None
    assert res.metrics["vocab_size"] == 151_665
    expected = {
        "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<tool_call>": 151657,
        "</tool_call>": 151658, "<|fim_prefix|>": 151659, "<|fim_middle|>": 151660, "<|fim_suffix|>": 151661,
        "<|fim_pad|>": 151662, "<|repo_name|>": 151663, "<|file_sep|>": 151664,
    }
    hf = T.load_hf(out)
    assert len(hf) == 151_665
    for token, tid in expected.items():
        assert hf.convert_tokens_to_ids(token) == tid
        assert res.info["control_ids"][token] == tid
    assert hf.eos_token_id == hf.pad_token_id == 151643
    ids = hf("<|repo_name|>r\n<|file_sep|>a.py\ndef add(a, b):")["input_ids"]
    assert ids[0] == 151663 and 151664 in ids
    assert all(i < T.QWEN_REGULAR_VOCAB or i in expected.values() for i in ids)


def test_load_mode_accepts_a_lone_tokenizer_json(tmp_path):
    src = qwen_format_tokenizer(tmp_path / "qwen")
    cfg = recipe(tokenizer={"mode": "load", "path": str(src / "tokenizer.json")})
    res = T.run_tokenizer(cfg, "/unused", str(tmp_path / "out"), NullRun())
    assert res.info["eos_id"] == 151643
    assert T.load_hf(tmp_path / "out").convert_tokens_to_ids("<|fim_middle|>") == 151660


def test_too_small_vocab_is_refused():
    with pytest.raises(ValueError, match="no room"):
        T.train_bpe(["abc"], 270)


def test_training_that_cannot_fill_the_regular_vocabulary_fails_instead_of_moving_the_ids():
    # this text yields 283 regular tokens (256 bytes + 27 merges): 600 - 22 = 578 cannot be reached
    with pytest.raises(ValueError, match=r"yielded 283 regular tokens, not 578.*ids 283\.\. instead of 578"):
        T.train_bpe(["def add(a, b):\n    return a + b\n" * 50, "class Foo:\n    pass\n" * 20], 600, 1)


def _layout_view(tok: Tokenizer) -> dict:
    """What the layout consists of: sizes, every added token with its id and flags, the saved config's
    added_tokens_decoder."""
    added = {i: (a.content, a.special, a.normalized, a.lstrip, a.rstrip, a.single_word)
             for i, a in tok.get_added_tokens_decoder().items()}
    return {"regular": tok.get_vocab_size(with_added_tokens=False), "total": tok.get_vocab_size(),
            "added": added, "config_decoder": T.tokenizer_config(tok)["added_tokens_decoder"]}


@pytest.mark.parametrize("total", [700, 1500])
def test_layout_tokenizer_equals_real_training(total, stdlib_dir):
    """The cheap layout (no training) has exactly the ids, flags and sizes real BPE training produces."""
    texts = [(stdlib_dir / n).read_text() for n in ("textwrap.py", "heapq.py", "bisect.py", "fnmatch.py")]
    trained = T.train_bpe(texts, total, 2)
    cheap = T.layout_tokenizer(total)
    assert _layout_view(cheap) == _layout_view(trained)
    assert {t: trained.token_to_id(t) for t in T.CONTROL_TOKENS} == T.control_token_ids(total)
    assert trained.get_vocab_size() == total


def test_layout_tokenizer_equals_the_trained_tokenizer_step(small_tokenizer, tmp_path):
    """The step's saved tokenizer (trained, total_vocab_size 2048) and the saved layout of 2048 read the same
    through tokenizer_info and transformers."""
    T.save_hf(T.layout_tokenizer(2048), tmp_path / "layout")
    trained, cheap = T.tokenizer_info(small_tokenizer), T.tokenizer_info(tmp_path / "layout")
    assert cheap == trained
    assert trained.control_ids == T.control_token_ids(2048)
    hf_trained, hf_cheap = T.load_hf(small_tokenizer), T.load_hf(tmp_path / "layout")
    assert len(hf_cheap) == len(hf_trained) == 2048
    assert hf_cheap.convert_tokens_to_ids(list(T.CONTROL_TOKENS)) == \
        hf_trained.convert_tokens_to_ids(list(T.CONTROL_TOKENS))
    assert hf_cheap.all_special_ids == hf_trained.all_special_ids


def test_qwen_total_is_its_regular_vocabulary_plus_the_control_tokens():
    ids = T.control_token_ids(T.QWEN_TOTAL_VOCAB)
    assert ids["<|endoftext|>"] == T.QWEN_REGULAR_VOCAB == 151643
    assert ids["<|fim_prefix|>"] == 151659 and ids["<|file_sep|>"] == 151664 == T.QWEN_TOTAL_VOCAB - 1
