"""Tokenizer step: train a Qwen2-style byte-level BPE on the corpus, or load an existing tokenizer.

A trained tokenizer mirrors Qwen2.5-Coder's layout (recipe.md §2):

* NFC normalisation, Qwen2's pre-tokenisation regex (digits split one by one: ``\\p{N}`` alone), then
  byte-level mapping with no prefix space; byte-level decoder; BPE with no unk token;
* the regular vocabulary first, then the 22 Qwen2.5 control tokens in Qwen's order
  (``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``, … ``<|fim_prefix|>``, … ``<|file_sep|>``) as
  one contiguous block right after it. ``tokenizer.total_vocab_size`` counts both (``len(tokenizer)``):
  Qwen's 151,665 = 151,643 regular + 22 control puts them on ids 151643…151664; a smaller vocabulary
  keeps the same order and contiguity. Training that cannot fill the regular part fails rather than
  shift the ids, so the ids are a function of the recipe alone (``control_token_ids``, and
  ``layout_tokenizer`` builds the same layout without training);
* ``special: false`` for ``<tool_call>``…``<|file_sep|>`` as Qwen ships them (so
  ``skip_special_tokens`` does not strip FIM tokens), ``additional_special_tokens`` = the 13 tokens
  ``<|im_start|>``…``<|video_pad|>``, pad = eos = ``<|endoftext|>``, no BOS, a ChatML chat template;
* saved in Hugging Face format (``tokenizer.json`` + ``tokenizer_config.json``) so
  ``AutoTokenizer.from_pretrained(dir)`` loads it.

``load`` mode copies an existing tokenizer directory (or a lone ``tokenizer.json``) unchanged: a real
Qwen2.5-Coder tokenizer keeps its ids.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer

from coderforge import records, storage
from coderforge.ledger import Ledger
from coderforge.steps import StepResult

log = logging.getLogger(__name__)

QWEN_REGULAR_VOCAB = 151_643
QWEN_TOTAL_VOCAB = 151_665  # len(tokenizer) of Qwen2.5(-Coder): 151,643 regular + 22 control tokens
QWEN_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
    r"""\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# (token, special) in Qwen2.5's order: ids 151643 + i in the released tokenizer.
QWEN_CONTROL_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)
CONTROL_TOKENS = tuple(t for t, _ in QWEN_CONTROL_TOKENS)
ADDITIONAL_SPECIAL_TOKENS = CONTROL_TOKENS[1:14]  # <|im_start|> … <|video_pad|>

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FIM_PAD = "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>"
REPO_NAME, FILE_SEP = "<|repo_name|>", "<|file_sep|>"

DEFAULT_SYSTEM = "You are a helpful assistant."

# ChatML (recipe.md §3.3): a system turn is added with the default text when the conversation has none.
CHATML_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' -}}"
    "{%- set rest = messages[1:] -%}"
    "{%- else -%}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' -}}"
    "{%- set rest = messages -%}"
    "{%- endif -%}"
    "{%- for message in rest -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def chatml(messages: list[dict[str, str]], add_generation_prompt: bool = False,
           default_system: str = DEFAULT_SYSTEM) -> str:
    """The ChatML text of a conversation, exactly what the chat template renders."""
    out = []
    if not messages or messages[0]["role"] != "system":
        out.append(f"{IM_START}system\n{default_system}{IM_END}\n")
    for m in messages:
        out.append(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n")
    if add_generation_prompt:
        out.append(f"{IM_START}assistant\n")
    return "".join(out)


def qwen_pipeline(tok: Tokenizer) -> Tokenizer:
    """Install Qwen2's normaliser, pre-tokeniser, decoder and post-processor on ``tok``."""
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def empty_bpe() -> Tokenizer:
    return qwen_pipeline(Tokenizer(BPE(dropout=None, unk_token=None, continuing_subword_prefix="",
                                       end_of_word_suffix="", fuse_unk=False, byte_fallback=False)))


def add_control_tokens(tok: Tokenizer) -> dict[str, int]:
    """Append the 22 control tokens right after the regular vocabulary, in Qwen's order."""
    base = tok.get_vocab_size(with_added_tokens=False)
    for token, special in QWEN_CONTROL_TOKENS:
        added = AddedToken(token, single_word=False, lstrip=False, rstrip=False, normalized=False,
                           special=special)
        if special:
            tok.add_special_tokens([added])
        else:
            tok.add_tokens([added])
    ids = {t: tok.token_to_id(t) for t in CONTROL_TOKENS}
    expected = {t: base + i for i, t in enumerate(CONTROL_TOKENS)}
    if ids != expected:
        raise RuntimeError(f"control tokens did not land contiguously after the vocabulary: {ids}")
    return ids


def control_token_ids(total_vocab_size: int) -> dict[str, int]:
    """The id of every control token in a tokenizer of ``total_vocab_size`` tokens made here (trained or
    ``layout_tokenizer``): the 22 tokens fill the last ids, in Qwen's order."""
    regular = regular_size(total_vocab_size)
    return {t: regular + i for i, t in enumerate(CONTROL_TOKENS)}


def regular_size(total_vocab_size: int) -> int:
    """Regular (BPE) tokens of a tokenizer with ``total_vocab_size`` tokens in all."""
    regular = total_vocab_size - len(QWEN_CONTROL_TOKENS)
    if regular < 256 + 1:
        raise ValueError(f"total_vocab_size {total_vocab_size} leaves no room for merges beyond the 256 bytes "
                         f"and the {len(QWEN_CONTROL_TOKENS)} control tokens")
    return regular


def train_bpe(texts: Iterable[str], total_vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """A byte-level BPE with ``total_vocab_size`` tokens in all: ``total_vocab_size - 22`` regular tokens
    (the 256 bytes and the merges), then the 22 control tokens. Fails if the texts do not yield that many
    merges at ``min_frequency`` (the control-token ids would move)."""
    regular = regular_size(total_vocab_size)
    tok = empty_bpe()
    trainer = BpeTrainer(vocab_size=regular, min_frequency=min_frequency, show_progress=False,
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(texts, trainer=trainer)
    got = tok.get_vocab_size(with_added_tokens=False)
    if got != regular:
        raise ValueError(f"BPE training yielded {got} regular tokens, not {regular} (total_vocab_size "
                         f"{total_vocab_size} - {len(QWEN_CONTROL_TOKENS)} control tokens): the control tokens "
                         f"would land on ids {got}.. instead of {regular}..; give more training text "
                         f"(tokenizer.max_training_chars), lower tokenizer.min_frequency ({min_frequency}) "
                         f"or lower tokenizer.total_vocab_size")
    add_control_tokens(tok)
    return tok


def layout_tokenizer(total_vocab_size: int) -> Tokenizer:
    """A tokenizer with the layout ``train_bpe(texts, total_vocab_size)`` produces, without training:
    the 256 byte tokens, unreachable placeholder entries up to the regular size (no merges), then the
    control tokens added by the same code as training. For checking ids of large vocabularies cheaply."""
    regular = regular_size(total_vocab_size)
    vocab = {ch: i for i, ch in enumerate(pre_tokenizers.ByteLevel.alphabet())}
    vocab.update({f"\u0100<placeholder {i}>": len(vocab) + i for i in range(regular - len(vocab))})
    tok = qwen_pipeline(Tokenizer(BPE(vocab=vocab, merges=[], dropout=None, unk_token=None,
                                      continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False,
                                      byte_fallback=False)))
    add_control_tokens(tok)
    return tok


def tokenizer_config(tok: Tokenizer, model_max_length: int = 32768) -> dict:
    """A ``tokenizer_config.json`` in the form Qwen2.5-Coder ships (base model)."""
    decoder = {}
    for token, special in QWEN_CONTROL_TOKENS:
        decoder[str(tok.token_to_id(token))] = {
            "content": token, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": special,
        }
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": list(ADDITIONAL_SPECIAL_TOKENS),
        "bos_token": None,
        "chat_template": CHATML_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": ENDOFTEXT,
        "errors": "replace",
        "model_max_length": model_max_length,
        "pad_token": ENDOFTEXT,
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def save_hf(tok: Tokenizer, out_dir: str | Path, model_max_length: int = 32768) -> Path:
    """Write ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(tok, model_max_length), indent=2,
                                                          ensure_ascii=False))
    (out / "special_tokens_map.json").write_text(json.dumps({
        "additional_special_tokens": list(ADDITIONAL_SPECIAL_TOKENS),
        "eos_token": ENDOFTEXT, "pad_token": ENDOFTEXT,
    }, indent=2))
    return out


@dataclass
class TokenizerInfo:
    """The ids a packing/FIM/training step needs, read from a saved tokenizer."""

    vocab_size: int  # len(tokenizer): regular + added tokens
    eos_id: int
    pad_id: int
    control_ids: dict[str, int]

    def id(self, token: str) -> int:
        if token not in self.control_ids:
            raise KeyError(f"the tokenizer has no {token!r} token")
        return self.control_ids[token]


def load_fast(tokenizer_dir: str | Path) -> Tokenizer:
    """The raw ``tokenizers.Tokenizer`` of a saved tokenizer (fast batch encoding)."""
    path = Path(tokenizer_dir)
    return Tokenizer.from_file(str(path / "tokenizer.json" if path.is_dir() else path))


def tokenizer_info(tokenizer_dir: str | Path) -> TokenizerInfo:
    tok = load_fast(tokenizer_dir)
    control = {t: tok.token_to_id(t) for t in CONTROL_TOKENS if tok.token_to_id(t) is not None}
    path = Path(tokenizer_dir)
    cfg_path = path / "tokenizer_config.json" if path.is_dir() else None
    eos_tok = pad_tok = ENDOFTEXT
    if cfg_path is not None and cfg_path.exists():
        conf = json.loads(cfg_path.read_text())
        eos_tok = _token_str(conf.get("eos_token")) or eos_tok
        pad_tok = _token_str(conf.get("pad_token")) or eos_tok
    eos_id = tok.token_to_id(eos_tok)
    if eos_id is None:
        raise ValueError(f"{tokenizer_dir}: eos token {eos_tok!r} is not in the vocabulary")
    pad_id = tok.token_to_id(pad_tok)
    return TokenizerInfo(vocab_size=tok.get_vocab_size(with_added_tokens=True), eos_id=eos_id,
                         pad_id=eos_id if pad_id is None else pad_id, control_ids=control)


def _token_str(value) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value


def load_hf(tokenizer_dir: str | Path):
    """``transformers.AutoTokenizer`` over a saved tokenizer directory (offline)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)


def copy_tokenizer(src: str, out_dir: Path) -> None:
    """Copy an existing tokenizer (a directory, or a lone ``tokenizer.json``) byte for byte."""
    if storage.is_s3(src):
        storage.download_dir(src, out_dir)
        return
    path = storage.local_path(src)
    if path.is_dir():
        for f in sorted(path.iterdir()):
            if f.is_file() and (f.name.startswith(("tokenizer", "special_tokens", "added_tokens"))
                                or f.name in ("vocab.json", "merges.txt", "chat_template.jinja")):
                shutil.copy2(f, out_dir / f.name)
    elif path.name.endswith(".json"):
        shutil.copy2(path, out_dir / "tokenizer.json")
    else:
        raise FileNotFoundError(f"tokenizer path {src} is neither a directory nor a tokenizer.json")
    if not (out_dir / "tokenizer.json").exists():
        raise FileNotFoundError(f"tokenizer path {src} has no tokenizer.json")
    if not (out_dir / "tokenizer_config.json").exists():
        tok = load_fast(out_dir)
        conf = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False}
        if tok.token_to_id(ENDOFTEXT) is not None:
            conf.update(eos_token=ENDOFTEXT, pad_token=ENDOFTEXT)
        (out_dir / "tokenizer_config.json").write_text(json.dumps(conf, indent=2))


def _hash_unit(doc_id: str, salt: str) -> float:
    h = hashlib.blake2b(f"{salt}\x00{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0**64


def _training_texts(docs_dir: str, budget: int, ledger: Ledger) -> Iterator[str]:
    """Documents for BPE training: all of them if they fit ``budget`` characters, else a
    deterministic hash sample of about ``budget`` characters. Every document lands in ``ledger``."""
    total = sum(len(d.content) for d in records.read_documents(docs_dir))
    rate = 1.0 if total <= budget else budget / total
    used = 0
    for doc in records.read_documents(docs_dir):
        if not doc.content:
            ledger.drop(doc, "empty")
        elif (rate >= 1.0 or _hash_unit(doc.id, "tokenizer") < rate) and used + len(doc.content) <= budget:
            used += len(doc.content)
            ledger.keep(doc, detail="trained_on")
            yield doc.content
        else:
            ledger.drop(doc, "beyond_training_char_budget")


def run_tokenizer(cfg, docs_dir: str, out_dir: str, run) -> StepResult:
    """Train (``tokenizer.mode=train``) or load (``mode=load``) the tokenizer into ``out_dir``.

    Train mode writes a ledger over the input documents: kept = trained on, dropped = ``empty`` or
    ``beyond_training_char_budget`` (not used for training; the documents still flow on to packing).
    """
    tc = cfg.tokenizer
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "tokenizer"
        local.mkdir()
        summary = None
        chars = 0
        if tc.mode == "load":
            copy_tokenizer(tc.path, local)
        else:
            ledger = Ledger("tokenizer")
            texts = _training_texts(docs_dir, tc.max_training_chars, ledger)

            def counted():
                nonlocal chars
                for t in texts:
                    chars += len(t)
                    yield t

            tok = train_bpe(counted(), tc.total_vocab_size, tc.min_frequency)
            save_hf(tok, local, model_max_length=max(cfg.pack.seq_len, 32768))
            summary = ledger.close(out_dir, expected_inputs=records.count_documents(docs_dir))
        info = tokenizer_info(local)
        hf = load_hf(local)  # fails here, not in training, if transformers cannot load it
        if len(hf) != info.vocab_size:
            raise RuntimeError(f"transformers sees {len(hf)} tokens, tokenizers {info.vocab_size}")
        storage.upload_dir(local, out_dir)
    metrics = {"vocab_size": info.vocab_size, "training_chars": chars,
               "control_tokens": len(info.control_ids)}
    missing = [t for t in (ENDOFTEXT, FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, REPO_NAME, FILE_SEP)
               if t not in info.control_ids]
    if missing:
        log.warning("tokenizer at %s lacks %s: FIM / repo-level samples are unavailable", out_dir, missing)
    return StepResult(ledger=summary, metrics=metrics,
                      info={"mode": tc.mode, "eos_id": info.eos_id, "pad_id": info.pad_id,
                            "control_ids": info.control_ids, "missing_control_tokens": missing})
