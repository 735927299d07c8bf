"""Schedule shapes: cosine, WSD (MiniCPM, recipe.md §10), WCL (Abacus Table 2-1, recipe.md §9.5), and
the anneal phase they end with (linear by default, MiniCPM's exponential decay by name)."""

from __future__ import annotations

import math

import pytest

from coderforge.train.schedules import anneal_steps, curve, default_anneal_fraction, lr_at, plot_schedules

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


def _diffs(xs):
    return [b - a for a, b in zip(xs, xs[1:], strict=False)]


def test_wsd_anneals_linearly_by_default_over_the_last_tenth():
    """Abacus's anneal (seed 004 §2.1.2): the decay phase is linear unless the recipe asks for MiniCPM's shape."""
    n = anneal_steps(T, "wsd")
    assert n == 100 and default_anneal_fraction("wsd") == 0.1  # MiniCPM: about 10 % of the tokens
    c = curve(T, PEAK, W, "wsd", 0.1)
    assert all(v == PEAK for v in c[W:T - n])  # the stable phase is exactly the peak
    decay = c[T - n:]
    assert decay[0] < PEAK and c[-1] == pytest.approx(0.1 * PEAK)
    d = _diffs(c[T - n - 1:])  # from the last stable step on: equal decrements
    assert max(d) - min(d) < 1e-15 and d[0] == pytest.approx(-(PEAK - 0.1 * PEAK) / n)


def test_wsd_exponential_anneal_is_minicpms_shape():
    c = curve(T, PEAK, W, "wsd", 0.1, anneal_shape="exponential")
    n = anneal_steps(T, "wsd")
    assert all(v == PEAK for v in c[W:T - n])
    decay = c[T - n - 1:]
    ratios = [b / a for a, b in zip(decay, decay[1:], strict=False)]
    assert max(ratios) - min(ratios) < 1e-9 and ratios[0] == pytest.approx(0.1 ** (1 / n))  # 0.5^(t/T_half)
    assert c[-1] == pytest.approx(0.1 * PEAK)
    linear = curve(T, PEAK, W, "wsd", 0.1)
    assert c[T - n // 2] < linear[T - n // 2]  # exponential falls faster early on
    with pytest.raises(ValueError, match="above zero"):
        lr_at(T - 1, T, PEAK, W, "wsd", 0.0, anneal_shape="exponential")
    with pytest.raises(ValueError, match="unknown anneal shape"):
        lr_at(T - 1, T, PEAK, W, "wsd", 0.1, anneal_shape="cosine")


def test_wcl_linear_share_defaults_to_table_2_1():
    """Table 2-1: 95B tokens of cosine decay, then 7B of linear decay: the linear phase is 7/102 of the steps."""
    assert default_anneal_fraction("wcl") == pytest.approx(7 / 102)
    assert anneal_steps(T, "wcl") == round(T * 7 / 102) == 69
    assert anneal_steps(10_700 + 800, "wcl") == 789  # Abacus: ~10.7k cosine + ~0.8k linear steps (§9.5)
    assert anneal_steps(T, "cosine") == anneal_steps(T, "constant") == 0
    assert anneal_steps(T, "wcl", fraction=0.2) == 200
    assert anneal_steps(20, "wsd", fraction=0.9, warmup=5) == 15  # never into the warmup
    assert anneal_steps(2, "wsd", warmup=2) == 0 and curve(2, PEAK, 2, "wsd", 0.1) == [PEAK / 2, PEAK]


def test_wcl_matches_abacus_table_2_1():
    """Warmup to 1e-3, truncated cosine to 6.2e-4 (ρ = 0.4229) ending where the anneal starts, then linear
    to the floor (1e-4) over Table 2-1's share of the steps."""
    n = anneal_steps(T, "wcl")
    c = curve(T, PEAK, W, "wcl", 0.1)
    assert c[T - n - 1] == pytest.approx(6.2e-4, rel=1e-12)  # the last cosine step
    assert math.acos(2 * 0.62 - 1) / math.pi == pytest.approx(0.4229, abs=1e-4)
    assert c[-1] == pytest.approx(1e-4)
    cos_part = c[W:T - n]
    assert all(b < a for a, b in zip(cos_part, cos_part[1:], strict=False))
    d = _diffs(c[T - n - 1:])
    assert max(d) - min(d) < 1e-15 and d[0] == pytest.approx((1e-4 - 6.2e-4) / n)  # linear
    # the cosine phase decays slower than a full cosine to the floor over the same steps
    full = curve(T, PEAK, W, "cosine", 0.1)
    assert c[W + 400] > full[W + 400]
    # an explicit anneal length moves the cosine's end with it
    c20 = curve(T, PEAK, W, "wcl", 0.1, anneal_steps=200)
    assert c20[T - 201] == pytest.approx(6.2e-4) and c20[-1] == pytest.approx(1e-4)


def test_unknown_schedule_fails():
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_at(200, T, PEAK, W, "linear-ish", 0.1)


def test_plot(tmp_path):
    path = plot_schedules(str(tmp_path / "s.png"), T, PEAK, W, 0.1, "wcl")
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.endswith("s.png")
