"""The anneal phase's data (recipe.md §9.6): from its first step on, rows come from several sources at
fixed proportions; before it, the pretraining rows exactly as without an anneal phase.

Sample order. The training loop reads global sample indices ``i = 0, 1, 2, …`` (rank ``r`` of
``world`` takes ``i ≡ r (mod world)``, as in ``tokens.shards.ResumableSampler``). With ``G`` =
the anneal's first step x the rows per optimizer step:

* ``i < G``: pretraining row ``ResumableSampler(rows, seed).row_of(i)``, the same as a run without
  an anneal phase;
* ``i ≥ G``: ``j = i − G`` picks its source from :class:`MixPlan`: blocks of ``B`` consecutive
  indices hold exactly ``count[s]`` rows of source ``s`` (``count[s]/B`` = the source's weight), in
  an order shuffled per block by ``(seed, block)``. The ``k``-th row of a source in that sequence is
  its row ``k`` in its own shuffled order: pretraining continues its stream at ``G + k`` (the anneal
  reads on through the epoch, then the next epochs, as pretraining would have), an instruction source
  (``code``, ``nl``: the ``pack_anneal`` step's token shards) reads its rows in a per-epoch shuffle of
  its own and repeats them when the phase needs more rows than it has.

Every row is a pure function of ``i``: a run resumed at any data position (before, at or after the
switch) reads exactly the rows of the uninterrupted run, and the proportions hold exactly on every
block of ``B`` consecutive rows. Proportions are in rows (rows are ``seq_len`` tokens with padding
only where a row's samples do not fill it; the build step reports the instruction rows' padding).
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np

from coderforge.tokens.shards import ResumableSampler, Row, TokenShards

INSTRUCTION_SOURCES = ("code", "nl")
SOURCES = ("pretrain", *INSTRUCTION_SOURCES)
MAX_BLOCK = 1000
META = "anneal.json"


def block_counts(weights: dict[str, float], max_block: int = MAX_BLOCK) -> dict[str, int]:
    """Rows per source in a block: the smallest block (up to ``max_block``) in which every weight is a
    whole number of rows; else ``max_block`` rows split by largest remainder."""
    total = sum(weights.values())
    if not weights or total <= 0 or min(weights.values()) < 0:
        raise ValueError(f"mix weights must be non-negative with a positive sum: {weights}")
    shares = {s: w / total for s, w in weights.items()}
    den = math.lcm(*(Fraction(v).limit_denominator(max_block).denominator for v in shares.values()))
    if den <= max_block and all(abs(v * den - round(v * den)) < 1e-6 for v in shares.values()):
        return {s: round(v * den) for s, v in shares.items() if round(v * den) > 0}
    base = {s: math.floor(v * max_block) for s, v in shares.items()}
    rest = max_block - sum(base.values())
    for s in sorted(shares, key=lambda s: (-(shares[s] * max_block - base[s]), s))[:rest]:
        base[s] += 1
    return {s: n for s, n in base.items() if n > 0}


class MixPlan:
    """Anneal-local index ``j`` → (source, that source's ordinal), exact per block of ``block`` rows."""

    def __init__(self, weights: dict[str, float], seed: int):
        self.counts = block_counts(weights)
        self.block = sum(self.counts.values())
        self.seed = seed
        self._pattern = [s for s in sorted(self.counts) for _ in range(self.counts[s])]
        self._cached: tuple[int, list[str], list[int]] | None = None

    def _block(self, b: int) -> tuple[list[str], list[int]]:
        """Block ``b``'s sources in order, and for each position how many rows of its source precede it."""
        if self._cached is None or self._cached[0] != b:
            seq = [self._pattern[k] for k in np.random.default_rng([self.seed, 0xA22EA1, b]).permutation(self.block)]
            seen: dict[str, int] = {}
            ordinal = []
            for s in seq:
                ordinal.append(seen.get(s, 0))
                seen[s] = ordinal[-1] + 1
            self._cached = (b, seq, ordinal)
        return self._cached[1], self._cached[2]

    def source_of(self, j: int) -> tuple[str, int]:
        b, pos = divmod(j, self.block)
        seq, ordinal = self._block(b)
        return seq[pos], b * self.counts[seq[pos]] + ordinal[pos]


class _Order:
    """An instruction source's rows, a new shuffle every epoch, by ``(seed, source)``."""

    def __init__(self, num_rows: int, seed: int, source: str):
        if num_rows <= 0:
            raise ValueError(f"anneal source {source!r} has no rows")
        self.num_rows, self.key = num_rows, [seed, 0xA22EA2, SOURCES.index(source)]
        self._epoch, self._perm = -1, None

    def row_of(self, k: int) -> int:
        epoch, pos = divmod(k, self.num_rows)
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, np.random.default_rng([*self.key, epoch]).permutation(self.num_rows)
        return int(self._perm[pos])


class MixedRows:
    """The rows of every source behind one index space: pretraining rows first, then each instruction
    source's (``row(v)`` is what ``task.make_batch`` reads)."""

    def __init__(self, pretrain: TokenShards, others: dict[str, TokenShards]):
        self.parts = [("pretrain", pretrain), *sorted(others.items())]
        self.offset, n = {}, 0
        for name, sh in self.parts:
            if sh.seq_len != pretrain.seq_len:
                raise ValueError(f"anneal source {name!r} has rows of {sh.seq_len} tokens, pretraining "
                                 f"{pretrain.seq_len}: build it with the same pack.seq_len")
            if sh.meta.get("vocab_size") != pretrain.meta.get("vocab_size"):
                raise ValueError(f"anneal source {name!r} was tokenised with another vocabulary "
                                 f"({sh.meta.get('vocab_size')} vs {pretrain.meta.get('vocab_size')} tokens)")
            self.offset[name], n = n, n + len(sh)
        self.seq_len = pretrain.seq_len

    def row(self, v: int) -> Row:
        for name, sh in reversed(self.parts):
            if v >= self.offset[name]:
                return sh.row(v - self.offset[name])
        raise IndexError(v)

    def source_of_row(self, v: int) -> str:
        return next(name for name, _ in reversed(self.parts) if v >= self.offset[name])


class AnnealData:
    """Which rows a rank reads, given where the anneal starts (picklable: no open memory maps)."""

    def __init__(self, anneal_dir: str | None, mix: dict[str, float], switch_step: int, grad_accum: int,
                 seed: int):
        unknown = set(mix) - set(SOURCES)
        if unknown:
            raise ValueError(f"unknown anneal sources {sorted(unknown)} ({', '.join(SOURCES)})")
        if set(mix) & set(INSTRUCTION_SOURCES) and not anneal_dir:
            raise ValueError("the anneal mix has instruction rows but no anneal data directory was given")
        self.anneal_dir, self.mix = anneal_dir, dict(mix)
        self.switch_step, self.grad_accum, self.seed = switch_step, grad_accum, seed

    def switch_index(self, micro_batch: int, world: int) -> int:
        """The first global sample index of the anneal phase."""
        return self.switch_step * micro_batch * self.grad_accum * world

    def rows(self, pretrain: TokenShards) -> MixedRows:
        others = {s: TokenShards(Path(self.anneal_dir) / s) for s in INSTRUCTION_SOURCES if self.mix.get(s, 0) > 0}
        return MixedRows(pretrain, others)

    def stream(self, rows: MixedRows, start: int, rank: int, world: int, micro_batch: int):
        """This rank's rows (indices into ``rows``) from global sample index ``start`` on, endlessly."""
        G = self.switch_index(micro_batch, world)
        pre = ResumableSampler(len(rows.parts[0][1]), self.seed)
        plan = MixPlan(self.mix, self.seed)
        orders = {name: _Order(len(sh), self.seed, name) for name, sh in rows.parts[1:]}
        i = start + (rank - start) % world
        while True:
            if i < G:
                yield pre.row_of(i)
            else:
                src, k = plan.source_of(i - G)
                yield pre.row_of(G + k) if src == "pretrain" else rows.offset[src] + orders[src].row_of(k)
            i += world
