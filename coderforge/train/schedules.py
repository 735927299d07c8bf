"""Learning-rate schedules: cosine, WSD (MiniCPM, recipe.md §10), WCL (Abacus, recipe.md §9.5), constant.

All start with a linear warmup ``η_max·(s+1)/W`` for ``s < W``. With ``T`` total steps:

* cosine: ``η_min + (η_max − η_min)·½(1 + cos πu)``, ``u = (s − W)/(T − 1 − W)``, ``η_min = min_ratio·η_max``;
* WSD and WCL end with an *anneal* phase of ``D`` steps, the last ``D`` steps ``[T − D, T)``
  (:func:`anneal_steps`: ``round(fraction·T)``, never into the warmup; default fraction 0.1 for WSD,
  MiniCPM's "about 10 % of the tokens", and 7/102 for WCL, Table 2-1's 7B linear-stage tokens of
  95B + 7B). Before it, WSD holds ``η_max`` (stable); WCL follows a truncated half-cosine
  ``η_max·½(1 + cos(π·ρ·v))``, ``ρ = arccos(2·r − 1)/π``, ``v = (s − W)/(T − D − 1 − W)``, which ends
  exactly at ``r·η_max`` on the last step before the anneal (r = 0.62 in Table 2-1).
* The anneal goes from the phase's start value (``η_max``; WCL ``r·η_max``) to ``η_min``, reached on
  the last step; with ``a = (s − (T − D) + 1)/D`` in (0, 1]: ``shape="linear"`` (Abacus, the default)
  ``start + (η_min − start)·a``; ``shape="exponential"`` (MiniCPM) ``start·(η_min/start)^a``, i.e.
  ``start·0.5^(t/T_half)`` with ``T_half`` chosen so the last step reaches ``η_min`` (needs η_min > 0).

The anneal's first step is also where the data switches to the anneal mix (``coderforge.train.anneal``):
:func:`anneal_steps` is the one place that decides it.
"""

from __future__ import annotations

import math

ANNEAL_SCHEDULES = ("wsd", "wcl")
SHAPES = ("linear", "exponential")
WSD_ANNEAL_SHARE = 0.1  # MiniCPM: decay over about 10 % of the tokens (recipe.md §10)
WCL_ANNEAL_SHARE = 7 / 102  # Abacus Table 2-1: 7B linear-stage tokens after 95B cosine-stage tokens (§9.5)


def default_anneal_fraction(schedule: str) -> float:
    """The share of a stage's steps in the anneal phase when the recipe gives none (0: no anneal phase)."""
    return {"wsd": WSD_ANNEAL_SHARE, "wcl": WCL_ANNEAL_SHARE}.get(schedule, 0.0)


def anneal_steps(total: int, schedule: str, fraction: float | None = None, warmup: int = 0) -> int:
    """Optimizer steps of the anneal phase (the last ones) of a ``total``-step stage: ``round(fraction·total)``,
    at least 1 for WSD/WCL, but never into the warmup (a stage that is all warmup has none); 0 for
    schedules without one."""
    if schedule not in ANNEAL_SCHEDULES:
        return 0
    share = default_anneal_fraction(schedule) if fraction is None else fraction
    if not 0 < share < 1:
        raise ValueError(f"anneal fraction must be in (0, 1), got {share}")
    return max(0, min(max(1, round(share * total)), total - warmup))


def _decay(start: float, floor: float, a: float, shape: str) -> float:
    if shape == "linear":
        return start + (floor - start) * a
    if shape == "exponential":
        if floor <= 0:
            raise ValueError("an exponential anneal needs a floor above zero (train.min_lr_ratio > 0)")
        return start * (floor / start) ** a
    raise ValueError(f"unknown anneal shape {shape!r} ({', '.join(SHAPES)})")


def lr_at(step: int, total: int, peak: float, warmup: int, schedule: str, min_ratio: float,
          anneal_steps: int | None = None, anneal_shape: str = "linear", wcl_cosine_end: float = 0.62) -> float:
    """Learning rate at (0-based) optimizer ``step`` of ``total``. ``anneal_steps`` None: the schedule's
    default share (:func:`anneal_steps`)."""
    if warmup and step < warmup:
        return peak * (step + 1) / warmup
    floor = peak * min_ratio
    if schedule == "constant":
        return peak
    if schedule == "cosine":
        u = min(1.0, max(0.0, (step - warmup) / max(1, total - 1 - warmup)))
        return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * u))
    if schedule not in ANNEAL_SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}")
    n = _anneal_len(total, schedule, warmup, anneal_steps)
    start = total - n
    top = peak if schedule == "wsd" else wcl_cosine_end * peak
    if step < start:
        if schedule == "wsd":
            return peak
        rho = math.acos(2 * wcl_cosine_end - 1) / math.pi
        v = min(1.0, (step - warmup) / max(1, start - 1 - warmup))
        return peak * 0.5 * (1 + math.cos(math.pi * rho * v))
    return _decay(top, floor, min(1.0, (step - start + 1) / n), anneal_shape)


def _anneal_len(total: int, schedule: str, warmup: int, given: int | None) -> int:
    return anneal_steps(total, schedule, None, warmup) if given is None else max(0, min(int(given), total))


def schedule_kwargs(cfg: dict) -> dict:
    """The schedule's keyword arguments among a loop configuration's fields."""
    return {k: cfg[k] for k in ("anneal_steps", "anneal_shape", "wcl_cosine_end") if k in cfg}


def curve(total: int, peak: float, warmup: int, schedule: str, min_ratio: float, **kw) -> list[float]:
    return [lr_at(s, total, peak, warmup, schedule, min_ratio, **kw) for s in range(total)]


def plot_schedules(path: str, total: int, peak: float, warmup: int, min_ratio: float, chosen: str, **kw) -> str:
    """A PNG with every schedule's curve, the recipe's chosen one drawn bold (its anneal phase shaded);
    ``anneal_steps`` in ``kw`` applies to the chosen schedule, the others take their default share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name in ("cosine", "wsd", "wcl", "constant"):
        own = kw if name == chosen else {k: v for k, v in kw.items() if k != "anneal_steps"}
        try:
            values = curve(total, peak, warmup, name, min_ratio, **own)
        except ValueError:  # another schedule's default anneal does not fit this stage: not drawn
            if name == chosen:
                raise
            continue
        ax.plot(range(total), values, label=name, linewidth=2.5 if name == chosen else 1.0,
                alpha=1.0 if name == chosen else 0.5)
    if chosen in ANNEAL_SCHEDULES:
        n = _anneal_len(total, chosen, warmup, kw.get("anneal_steps"))
        ax.axvspan(total - n, total - 1, alpha=0.12, label=f"anneal ({kw.get('anneal_shape', 'linear')})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_title(f"LR schedule (chosen: {chosen}; warmup {warmup}, floor {min_ratio:g}·peak)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
