"""Preference pairs → DPO rows (``dpo_task.DPORows``), with every pair accounted for in the ledger.

Tokenisation follows the reference recipe (recipe.md §7.4, TRL's ``DPOTrainer``): the prompt is the
pair's ``prompt`` (already rendered with the SFT tokenizer's chat template and a generation prompt by
``dpo_pairs``); each response is its text followed by the end-of-turn token (``<|im_end|>``; the
tokenizer's EOS token where it has no such token), tokenised without added special tokens. Only
response tokens are trained (the prompt is masked). A pair whose prompt + chosen or prompt + rejected
exceeds ``dpo.seq_len`` tokens is dropped (``too_long``), never cut; one whose rendered prompt is
empty is dropped ``empty_prompt``.

Rows are written per split (``train`` / ``heldout``) into ``DIR/<split>``, a row length that is the
longest pair (both sequences) rounded up to a multiple of 128 (FlexAttention's block). A directory
whose ``dpo_rows.json`` already names the same content (``key``: a hash of the pair ids and their
tokens) is left as it is, so a re-run keeps its reference log-probabilities.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from coderforge.ledger import Ledger
from coderforge.posttrain.dpo_records import HELDOUT, TRAIN, PreferencePair
from coderforge.posttrain.dpo_task import ROWS_FILE

END_OF_TURN = "<|im_end|>"
ROW_MULTIPLE = 128
TOO_LONG, EMPTY_PROMPT = "too_long", "empty_prompt"


@dataclass
class Encoded:
    pair: PreferencePair
    prompt: list[int]
    chosen: list[int]  # response tokens + the end-of-turn token
    rejected: list[int]

    @property
    def longest(self) -> int:
        return len(self.prompt) + max(len(self.chosen), len(self.rejected))

    @property
    def row_tokens(self) -> int:
        return 2 * len(self.prompt) + len(self.chosen) + len(self.rejected)


def end_of_turn(tok) -> str:
    """``<|im_end|>`` when the tokenizer has it as one token, else its EOS token."""
    ids = tok.encode(END_OF_TURN, add_special_tokens=False)
    if len(ids) == 1 and ids[0] != tok.unk_token_id:
        return END_OF_TURN
    if not tok.eos_token:
        raise ValueError("the tokenizer has neither <|im_end|> nor an EOS token to end a response with")
    return tok.eos_token


def encode_pairs(pairs: list[PreferencePair], tok) -> list[Encoded]:
    end = end_of_turn(tok)

    def ids(texts: list[str]) -> list[list[int]]:
        return tok(texts, add_special_tokens=False, verbose=False)["input_ids"] if texts else []

    prompts = ids([p.prompt for p in pairs])
    chosen = ids([p.chosen + end for p in pairs])
    rejected = ids([p.rejected + end for p in pairs])
    return [Encoded(p, list(a), list(b), list(c)) for p, a, b, c in zip(pairs, prompts, chosen, rejected, strict=True)]


def select(encoded: list[Encoded], seq_len: int, ledger: Ledger) -> dict[str, list[Encoded]]:
    """The pairs that fit, per split; the others dropped in ``ledger``."""
    out: dict[str, list[Encoded]] = {TRAIN: [], HELDOUT: []}
    for e in encoded:
        p = e.pair
        if not e.prompt:
            ledger.drop(p, EMPTY_PROMPT, "the rendered prompt has no tokens")
        elif e.longest > seq_len:
            ledger.drop(p, TOO_LONG, f"prompt {len(e.prompt)} + chosen {len(e.chosen)} / rejected "
                                     f"{len(e.rejected)} tokens > dpo.seq_len {seq_len}")
        else:
            out[HELDOUT if p.split == HELDOUT else TRAIN].append(e)
            ledger.keep(p, detail=f"{p.split}: {e.row_tokens} tokens")
    return out


def content_key(encoded: list[Encoded]) -> str:
    h = hashlib.sha256()
    for e in encoded:
        h.update(json.dumps([e.pair.id, e.prompt, e.chosen, e.rejected]).encode())
    return h.hexdigest()[:24]


def write_rows(out_dir: str | Path, encoded: list[Encoded], vocab_size: int, pad_id: int, eos_id: int) -> bool:
    """Write ``encoded`` as DPO rows into ``out_dir``; False when it already held exactly these rows."""
    from coderforge.tokens.shards import TokenShardWriter

    out = Path(out_dir)
    key = content_key(encoded)
    rows_file = out / ROWS_FILE
    if rows_file.exists() and (out / "meta.json").exists() and json.loads(rows_file.read_text())["key"] == key:
        return False
    shutil.rmtree(out, ignore_errors=True)
    longest = max(e.row_tokens for e in encoded)
    row_len = -(-longest // ROW_MULTIPLE) * ROW_MULTIPLE
    writer = TokenShardWriter(out, seq_len=row_len, pad_id=pad_id, eos_id=eos_id, vocab_size=vocab_size,
                              extra_meta={"dpo_pairs": len(encoded)})
    for e in encoded:
        writer.add_row(e.prompt + e.chosen + e.prompt + e.rejected,
                       [len(e.prompt) + len(e.chosen), len(e.prompt) + len(e.rejected)])
    writer.close()
    rows_file.write_text(json.dumps({"pair_ids": [e.pair.id for e in encoded],
                                     "prompt_lens": [len(e.prompt) for e in encoded], "key": key}))
    return True
