"""Schedule shapes: cosine, WSD (MiniCPM, recipe.md §10), WCL (Abacus Table 2-1, recipe.md §9.5)."""

from __future__ import annotations

import math

import pytest

from coderforge.train.schedules import curve, lr_at, plot_schedules

PEAK, T, W = 1e-3, 1000, 100


def test_warmup_is_linear_for_every_schedule():
    for name in ("cosine", "wsd", "wcl", "constant"):
        c = curve(T, PEAK, W, name, 0.1)
        assert c[0] == pytest.approx(PEAK / W) and c[W - 1] == pytest.approx(PEAK)
        assert all(b > a for a, b in zip(c[:W - 1], c[1:W], strict=False))


def test_cosine_reaches_the_floor_monotonically():
    c = curve(T, PEAK, W, "cosine", 0.1)
    assert all(b <= a + 1e-15 for a, b in zip(c[W:], c[W + 1:], strict=False))
    assert c[-1] == pytest.approx(0.1 * PEAK)
    mid = W + (T - 1 - W) // 2
    assert c[mid] == pytest.approx(0.1 * PEAK + 0.9 * PEAK * 0.5 * (1 + math.cos(math.pi * (mid - W) / (T - 1 - W))))


def test_wsd_stable_then_exponential_decay_over_last_tenth():
    c = curve(T, PEAK, W, "wsd", 0.1, wsd_decay_fraction=0.1)
    stable = c[W:int(W + 0.9 * (T - 1 - W))]
    assert all(v == PEAK for v in stable)  # the stable phase is exactly the peak
    decay = c[int(W + 0.9 * (T - 1 - W)) + 1:]
    assert all(b < a for a, b in zip(decay, decay[1:], strict=False))
    assert c[-1] == pytest.approx(0.1 * PEAK)
    # exponential: equal steps divide the LR by the same factor (MiniCPM's 0.5^(t/T_half))
    ratios = [b / a for a, b in zip(decay, decay[1:], strict=False)]
    assert max(ratios) - min(ratios) < 1e-9


def test_wcl_matches_abacus_table_2_1():
    """Warmup to 1e-3, truncated cosine to 6.2e-4 (ρ = 0.4229), then linear to the floor (1e-4)."""
    c = curve(T, PEAK, W, "wcl", 0.1, wcl_linear_fraction=0.1, wcl_cosine_end=0.62)
    boundary = W + 0.9 * (T - 1 - W)
    assert lr_at(int(boundary), T, PEAK, W, "wcl", 0.1) == pytest.approx(6.2e-4, rel=2e-3)
    assert math.acos(2 * 0.62 - 1) / math.pi == pytest.approx(0.4229, abs=1e-4)
    assert c[-1] == pytest.approx(1e-4)
    cos_part = c[W:int(boundary)]
    assert all(b < a for a, b in zip(cos_part, cos_part[1:], strict=False))
    lin = c[int(boundary) + 1:]
    diffs = [b - a for a, b in zip(lin, lin[1:], strict=False)]
    assert max(diffs) - min(diffs) < 1e-12 and diffs[0] < 0  # linear
    # the cosine phase decays slower than a full cosine to the floor over the same steps
    full = curve(T, PEAK, W, "cosine", 0.1)
    assert c[W + 400] > full[W + 400]


def test_unknown_schedule_fails():
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_at(200, T, PEAK, W, "linear-ish", 0.1)


def test_plot(tmp_path):
    path = plot_schedules(str(tmp_path / "s.png"), T, PEAK, W, 0.1, "wcl")
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.endswith("s.png")
