"""Learning-rate schedules: cosine, WSD (MiniCPM, recipe.md §10), WCL (Abacus, recipe.md §9.5), constant.

All start with a linear warmup ``η_max·(s+1)/W`` for ``s < W``. With ``T`` total steps and
``u = (s − W)/(T − W)`` the post-warmup progress in [0, 1]:

* cosine: ``η_min + (η_max − η_min)·½(1 + cos πu)``, ``η_min = min_ratio·η_max``;
* WSD: stable at ``η_max`` until ``u = 1 − decay_fraction``, then MiniCPM's exponential decay
  ``η_max·0.5^((s−T_d)/T_half)`` with ``T_half`` chosen so the last step reaches ``η_min``;
* WCL: a truncated half-cosine ``η_max·½(1 + cos(π·ρ·v))``, ``ρ = arccos(2·r − 1)/π``, over the
  cosine share ``v ∈ [0, 1]`` of the post-warmup steps (ends exactly at ``r·η_max``, r = 0.62 in
  Abacus's Table 2-1), then linear from ``r·η_max`` to ``η_min`` over the last ``linear_fraction``.
"""

from __future__ import annotations

import math


def lr_at(step: int, total: int, peak: float, warmup: int, schedule: str, min_ratio: float,
          wsd_decay_fraction: float = 0.1, wcl_linear_fraction: float = 0.1, wcl_cosine_end: float = 0.62) -> float:
    """Learning rate at (0-based) optimizer ``step`` of ``total``."""
    if warmup and step < warmup:
        return peak * (step + 1) / warmup
    floor = peak * min_ratio
    span = max(1, total - 1 - warmup)
    u = min(1.0, max(0.0, (step - warmup) / span))
    if schedule == "constant":
        return peak
    if schedule == "cosine":
        return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * u))
    if schedule == "wsd":
        start = 1.0 - wsd_decay_fraction
        if u <= start or wsd_decay_fraction <= 0:
            return peak
        frac = (u - start) / wsd_decay_fraction  # 0 → 1 over the decay phase
        if min_ratio <= 0:
            return peak * (1 - frac)
        return peak * min_ratio ** frac  # = peak · 0.5^(t / T_half), T_half = D·ln2/ln(1/min_ratio)
    if schedule == "wcl":
        cos_share = 1.0 - wcl_linear_fraction
        mid = wcl_cosine_end * peak
        if u <= cos_share and cos_share > 0:
            rho = math.acos(2 * wcl_cosine_end - 1) / math.pi
            return peak * 0.5 * (1 + math.cos(math.pi * rho * u / cos_share))
        return mid + (floor - mid) * (u - cos_share) / max(1e-12, wcl_linear_fraction)
    raise ValueError(f"unknown schedule {schedule!r}")


def schedule_kwargs(cfg: dict) -> dict:
    return {k: cfg[k] for k in ("wsd_decay_fraction", "wcl_linear_fraction", "wcl_cosine_end") if k in cfg}


def curve(total: int, peak: float, warmup: int, schedule: str, min_ratio: float, **kw) -> list[float]:
    return [lr_at(s, total, peak, warmup, schedule, min_ratio, **kw) for s in range(total)]


def plot_schedules(path: str, total: int, peak: float, warmup: int, min_ratio: float, chosen: str, **kw) -> str:
    """A PNG with every schedule's curve, the recipe's chosen one drawn bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name in ("cosine", "wsd", "wcl", "constant"):
        ax.plot(range(total), curve(total, peak, warmup, name, min_ratio, **kw), label=name,
                linewidth=2.5 if name == chosen else 1.0, alpha=1.0 if name == chosen else 0.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_title(f"LR schedule (chosen: {chosen}; warmup {warmup}, floor {min_ratio:g}·peak)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
