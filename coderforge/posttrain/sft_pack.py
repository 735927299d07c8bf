"""SFT samples as token ids with their loss mask, packed into token shards (train / heldout).

Chat format: the tokenizer's own chat template, which must be ChatML (recipe.md §3.3, Qwen2.5-Coder):
``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, with the template's default system turn
first when a conversation has none. :func:`template_default_system` reads that default from the
template and checks that the template renders probe conversations exactly so; a template that does
not fails the step before any sample is encoded.

Loss mask (recipe.md §7.3): the content of an assistant turn, its ``<|im_end|>`` and the newline after
it are targets; everything else (system and user turns, the ``<|im_start|>assistant\\n`` header) is
context. ``sft.only_last_turn`` trains only the last assistant turn. A conversation is encoded as
pieces: control tokens as their ids; the text between two control tokens (``"{role}\\n{content}"``,
the ``"\\n"`` after ``<|im_end|>``) through the tokenizer without its added tokens, so text never
forges a control token and the pieces end exactly where the template's control tokens split the
render: the concatenation equals ``apply_chat_template``'s tokens wherever the content holds no
control-token spelling. A token is a target when every character it covers is (the offsets of the
encoding), so a token straddling the header and the answer (``"\\n\\n"`` when the answer starts with a
newline) stays context.

Packing: whole samples into rows of ``sft.seq_len`` by best fit decreasing (never cut: a longer
sample was dropped ``too_long``), each sample its own segment, so attention is document-masked and
positions restart per sample exactly as in pretraining; the mask travels in the shards
(``NAME.lossmask.npy``, :mod:`coderforge.tokens.shards`).
"""

from __future__ import annotations

import bisect
import hashlib
import io
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from coderforge.ledger import DocRef, Ledger
from coderforge.posttrain import sft_data as D
from coderforge.text_tokenizer import plain_text_tokenizer
from coderforge.tokens import formats as F
from coderforge.tokens.packing import heldout_unit, is_heldout
from coderforge.tokens.shards import TokenShardWriter
from coderforge.tokens.tokenizer import IM_END, IM_START, load_hf, tokenizer_info

PROBE = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
         {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}]
_SYSTEM = re.compile(r"<\|im_start\|>system\n(.*?)<\|im_end\|>\n", re.S)

Item = tuple[str, bool, bool]  # (text or control token, is a control token, is a target)


def chat_items(messages: list[dict], default_system: str | None, only_last_turn: bool) -> list[Item]:
    """A conversation as ChatML pieces with their loss flags."""
    if default_system is not None and (not messages or messages[0]["role"] != "system"):
        messages = [{"role": "system", "content": default_system}, *messages]
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
    items: list[Item] = []
    for i, m in enumerate(messages):
        target = m["role"] == "assistant" and (not only_last_turn or i == last)
        items += [(IM_START, True, False), (f"{m['role']}\n", False, False)]
        items += [(str(p), isinstance(p, F.Ctrl), target) for p in m.get("pieces") or [m["content"]] if p]
        items += [(IM_END, True, target), ("\n", False, target)]
    return items


def render_chat(messages: list[dict], default_system: str | None) -> str:
    return "".join(text for text, _, _ in chat_items(messages, default_system, False))


def template_default_system(hf) -> str | None:
    """The system text the tokenizer's chat template adds when a conversation has none (None: adds none);
    raises when the template is missing or does not render ChatML."""
    if not getattr(hf, "chat_template", None):
        raise ValueError("the model's tokenizer has no chat template (SFT needs its ChatML template)")
    m = _SYSTEM.match(hf.apply_chat_template(PROBE, tokenize=False))
    default = m.group(1) if m else None
    for conv in (PROBE, [{"role": "system", "content": "S"}, *PROBE]):
        got, want = hf.apply_chat_template(conv, tokenize=False), render_chat(conv, default)
        if got != want:
            raise ValueError(f"the tokenizer's chat template is not ChatML: it renders {got!r}, expected {want!r}")
    return default


class ChatEncoder:
    """Token ids and loss masks of conversations with a saved tokenizer (its template's ChatML)."""

    def __init__(self, tokenizer_dir: str | Path):
        self.info = tokenizer_info(tokenizer_dir)
        missing = [t for t in (IM_START, IM_END) if t not in self.info.control_ids]
        if missing:
            raise ValueError(f"tokenizer at {tokenizer_dir} lacks the ChatML tokens {missing}")
        self.plain = plain_text_tokenizer(tokenizer_dir)
        self.default_system = template_default_system(load_hf(tokenizer_dir))

    def has(self, *tokens: str) -> bool:
        return all(t in self.info.control_ids for t in tokens)

    def encode(self, conversations: list[list[dict]], only_last_turn: bool) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(ids uint32, mask uint8)`` per conversation (mask 1 = a target)."""
        plans, chunks = [], []
        for msgs in conversations:
            plan: list = []  # control id, or index of a text chunk with its per-character target flags
            for text, ctrl, target in chat_items(msgs, self.default_system, only_last_turn):
                if ctrl:
                    plan.append((self.info.id(text), target))
                elif plan and isinstance(plan[-1], list):
                    plan[-1][1].append((len(text), target))
                    chunks[plan[-1][0]] += text
                else:
                    plan.append([len(chunks), [(len(text), target)]])
                    chunks.append(text)
            plans.append(plan)
        encodings = self.plain.encode_batch(chunks, add_special_tokens=False) if chunks else []
        return [self._assemble(plan, encodings) for plan in plans]

    @staticmethod
    def _assemble(plan: list, encodings) -> tuple[np.ndarray, np.ndarray]:
        ids, mask = [], []
        for part in plan:
            if isinstance(part, tuple):
                ids.append(part[0])
                mask.append(int(part[1]))
                continue
            enc = encodings[part[0]]
            flags = np.concatenate([np.full(n, t, dtype=bool) for n, t in part[1]])
            untrained = np.concatenate([[0], np.cumsum(~flags)])
            last = len(flags) - 1
            for tok, (a, b) in zip(enc.ids, enc.offsets, strict=True):
                a = min(a, last)  # a token covers at least the character it starts at
                ids.append(tok)
                mask.append(int(untrained[max(b, a + 1)] - untrained[a] == 0))
        return np.asarray(ids, dtype=np.uint32), np.asarray(mask, dtype=np.uint8)


# --- packing -------------------------------------------------------------------------------------
def pack_rows(lengths: list[int], seq_len: int, max_open: int = 1024) -> list[list[int]]:
    """Sample indices per row: best fit decreasing, no sample cut; at most ``max_open`` rows open
    (past that the fullest is closed)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    keys: list[tuple[int, int]] = []
    bins: dict[int, list[int]] = {}
    rows, made = [], 0
    for i in order:
        n = lengths[i]
        if not 0 < n <= seq_len:
            raise ValueError(f"sample of {n} tokens does not fit a row of {seq_len}")
        k = bisect.bisect_left(keys, (n, -1))
        if k < len(keys):
            room, b = keys.pop(k)
        else:
            room, b, made = seq_len, made, made + 1
            bins[b] = []
        bins[b].append(i)
        room -= n
        if room == 0:
            rows.append(bins.pop(b))
            continue
        bisect.insort(keys, (room, b))
        if len(keys) > max_open:
            rows.append(bins.pop(keys.pop(0)[1]))
    return rows + [bins[b] for b in sorted(bins)]


def write_split(out_dir: Path, samples: list[tuple[np.ndarray, np.ndarray]], seq_len: int, info,
                extra_meta: dict, one_per_row: bool = False) -> dict:
    """Pack ``(ids, mask)`` samples into ``out_dir`` (one per row with ``one_per_row``); the shard meta."""
    writer = TokenShardWriter(out_dir, seq_len, info.pad_id, info.eos_id, info.vocab_size,
                              extra_meta={**extra_meta, "samples": len(samples)})
    rows = [[i] for i in range(len(samples))] if one_per_row else pack_rows([len(s[0]) for s in samples], seq_len)
    for row in rows:
        writer.add_row(np.concatenate([samples[i][0] for i in row]), [len(samples[i][0]) for i in row], row,
                       loss_mask=np.concatenate([samples[i][1] for i in row]))
    return writer.close()


def write_index(path: Path, rows: list[dict]) -> None:
    table = pa.Table.from_pylist(rows, schema=pa.schema([
        ("sample", pa.int64()), ("id", pa.string()), ("source", pa.string()), ("tokens", pa.int64()),
        ("targets", pa.int64())]))
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    path.write_bytes(buf.getvalue())


# --- the SFT data set ----------------------------------------------------------------------------
class Builder:
    """Encodes, length-checks, mixes and splits the samples, recording every input in ``ledger``."""

    def __init__(self, cfg, enc: ChatEncoder, ledger: Ledger):
        self.cfg, self.enc, self.ledger = cfg, enc, ledger
        self.seq_len = cfg.sft.seq_len
        self.inputs = 0
        self.usable: list[tuple[D.ChatSample, np.ndarray, np.ndarray]] = []
        self.rates: dict[str, float] = {}

    def drop(self, s, reason: str, detail: str = "") -> None:
        self.ledger.drop(s, reason, detail)

    def encoded(self, samples: list[D.ChatSample]) -> list[tuple[D.ChatSample, np.ndarray, np.ndarray]]:
        """The samples that fit a row, encoded; the others dropped ``too_long``."""
        out = []
        for s, (ids, mask) in zip(samples, self.enc.encode([s.messages for s in samples],
                                                           self.cfg.sft.only_last_turn), strict=True):
            if len(ids) > self.seq_len:
                self.drop(s, "too_long", f"{len(ids)} tokens > sft.seq_len {self.seq_len}")
            else:
                out.append((s, ids, mask))
        return out

    def chat_samples(self, instructions_dir, seeds_dir) -> dict[str, int]:
        """Sample id -> copies of the synthetic / seed / file samples (every input recorded)."""
        col = D.collect(self.cfg, instructions_dir, seeds_dir)
        self.inputs += col.inputs
        for b in col.bad:
            self.ledger.quarantine(b.id, b.error, b.repo, b.path, b.nbytes, reason="malformed")
        for s, reason, detail in col.dropped:
            self.drop(s, reason, detail)
        self.usable = self.encoded(col.samples)
        by_source: dict[str, list[str]] = {}
        for s, _, _ in self.usable:
            by_source.setdefault(s.source, []).append(s.id)
        self.rates = D.mix_rates(self.cfg, {k: len(v) for k, v in by_source.items()})
        copies = D.mix_copies(by_source, self.rates, self.cfg.run.seed)
        for s, _, _ in self.usable:
            if not copies[s.id]:
                self.drop(s, "downsampled", f"{s.source} sampled at rate {self.rates[s.source]:.4g}")
        return copies

    def fim_samples(self, docs_dir: str | None, need: int) -> list[tuple[D.ChatSample, np.ndarray, np.ndarray]]:
        """Up to ``need`` FIM instructions from ``docs_dir``, candidates in hash order (each recorded)."""
        if need <= 0 or not docs_dir:
            return []
        if not self.enc.has(F.PRE, F.SUF, F.MID):
            raise ValueError("sft.fim_share > 0 but the tokenizer lacks the FIM control tokens")
        got = []
        for doc in D.fim_candidates(docs_dir, self.cfg.run.seed, 3 * need + 16):
            if len(got) >= need:
                break
            self.inputs += 1
            s = D.fim_sample(doc, self.cfg.run.seed, self.seq_len)
            if isinstance(s, str):
                self.drop(DocRef(f"{D.FIM_SOURCE}:{doc.id}", doc.repo, doc.path, doc.content), s)
                continue
            hit = D.decontaminate(self.cfg, [s]).get(s.id)
            if hit is not None:
                self.drop(s, hit.reason, hit.detail)
                continue
            got += self.encoded([s])
        return got


def heldout_ids(ids: list[str], fraction: float) -> set[str]:
    """Samples held out by a hash of their id; never none when the fraction is positive and there are two."""
    held = {i for i in ids if is_heldout(i, fraction)}
    if fraction > 0 and not held and len(ids) > 1:
        held = {min(ids, key=heldout_unit)}
    return held


def build_sft_data(cfg, tokenizer_dir: str | Path, data_dir: Path, ledger: Ledger, docs_dir: str | None,
                   instructions_dir: str | None = None, seeds_dir: str | None = None) -> dict:
    """Write ``data_dir/train`` and ``data_dir/heldout`` (masked token shards + ``samples.parquet``);
    returns the counts the step reports, ``expected_inputs`` (the ledger's balance) and ``fingerprint``
    (a hash of every sample's ids and mask, split and order: equal fingerprints, equal training data)."""
    b = Builder(cfg, ChatEncoder(tokenizer_dir), ledger)
    copies = b.chat_samples(instructions_dir, seeds_dir)
    chosen = [(s, ids, m, copies[s.id]) for s, ids, m in b.usable if copies[s.id]]
    share = cfg.sft.fim_share
    need = round(share / (1.0 - share) * sum(k for *_, k in chosen))
    chosen += [(s, ids, m, 1) for s, ids, m in b.fim_samples(docs_dir, need)]
    if not chosen:
        raise ValueError("sft: no sample left to train on (see the ledger for why)")
    held = heldout_ids([s.id for s, *_ in chosen], cfg.sft.heldout_fraction)
    splits: dict[str, list] = {"train": [], "heldout": []}
    index: dict[str, list] = {"train": [], "heldout": []}
    per_source: Counter = Counter()
    for s, ids, mask, k in chosen:
        split = "heldout" if s.id in held else "train"
        n = 1 if split == "heldout" else k
        ledger.keep(s, detail=f"{split}:{s.source}:copies={n}")
        per_source[f"{split}.{s.source}"] += n
        for _ in range(n):
            index[split].append({"sample": len(splits[split]), "id": s.id, "source": s.source, "tokens": len(ids),
                                 "targets": int(mask[1:].sum())})
            splits[split].append((ids, mask))
    metas = {}
    fingerprint = hashlib.sha256(json.dumps(index, sort_keys=True).encode())
    for split, samples in splits.items():
        meta = {"stage": "sft", "split": split, "only_last_turn": cfg.sft.only_last_turn,
                "default_system": b.enc.default_system}
        metas[split] = write_split(data_dir / split, samples, cfg.sft.seq_len, b.enc.info, meta)
        write_index(data_dir / split / "samples.parquet", index[split])
        fingerprint.update(b"".join(s[0].tobytes() + s[1].tobytes() for s in samples))
    return {"expected_inputs": b.inputs, "metas": metas, "per_source": dict(per_source), "fim_needed": need,
            "fim_made": per_source["train.fim"] + per_source["heldout.fim"], "rates": b.rates,
            "fingerprint": fingerprint.hexdigest()}
