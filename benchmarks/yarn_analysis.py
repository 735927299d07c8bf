"""YaRN's RoPE dimension ramp at small scale, for ``benchmarks/long_context.py`` (recipe.md §5.1, issue 14).

transformers' YaRN (rope_type ``yarn``) keeps the RoPE dimension pairs that turn more than ``beta_fast``
times over the original (trained) length, interpolates (divides the frequency by the factor) those turning
fewer than ``beta_slow`` times, and ramps linearly between them; the attention logits are scaled by
(0.1 ln(factor) + 1)^2. The betas count rotations, so their meaning does not depend on the trained length,
but at a trained length of a few hundred tokens no pair turns 32 times (the default ``beta_fast``), so the
defaults put every high-frequency pair on the ramp.
"""

from __future__ import annotations

import math


def correction_range(beta_fast: float, beta_slow: float, head_dim: int, theta: float, length: int):
    """YaRN's (kept below, interpolated above) dimension-pair indices, before transformers rounds them
    (floor/ceil, ``truncate``): find_correction_range of transformers' ``_compute_yarn_parameters``."""
    def dim(rot: float) -> float:
        return head_dim * math.log(length / (rot * 2 * math.pi)) / (2 * math.log(theta))
    return max(dim(beta_fast), 0.0), min(dim(beta_slow), head_dim / 2 - 1)


def rotations(head_dim: int, theta: float, length: int) -> list[float]:
    """How many times each dimension pair turns over ``length`` tokens (pair 0 fastest)."""
    return [length / (2 * math.pi * theta ** (2 * i / head_dim)) for i in range(head_dim // 2)]


def qwen_share_betas(head_dim: int, theta: float, length: int) -> dict:
    """beta_fast/beta_slow that keep/interpolate the shares of dimension pairs YaRN's defaults (32, 1) keep
    and interpolate for Qwen2.5-Coder's repo-level model (head_dim 128, base 1M, 32,768 tokens). At a short
    trained length this keeps pairs that never completed a turn in training (their angles at 4x were never
    seen), which is why it helps at 2x and not at 4x."""
    lo, hi = correction_range(32, 1, 128, 1e6, 32768)
    fast, slow = lo / 64, hi / 64

    def rot(share: float) -> float:
        return length / (2 * math.pi * theta ** (2 * share * (head_dim / 2) / head_dim))
    return {"beta_fast": rot(fast), "beta_slow": rot(slow), "qwen_kept_share": round(fast, 3),
            "qwen_interpolated_share": round(1 - slow, 3)}


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    """95 % Wilson score interval of a proportion k/n."""
    if n == 0:
        return [0.0, 1.0]
    p = k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, mid - half), 3), round(min(1.0, mid + half), 3)]


def pick_betas(grid: dict) -> tuple[float, float]:
    """The (beta_fast, beta_slow) of ``grid`` {(fast, slow): {length: accuracy}} with the highest accuracy
    summed over its lengths; ties go to the larger beta_fast, then the larger beta_slow (nearer YaRN's
    defaults)."""
    return max(grid, key=lambda fs: (round(sum(grid[fs].values()), 6), fs[0], fs[1]))
