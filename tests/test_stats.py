"""Seed statistics of ``muonlab bench claims``: t quantiles, intervals, paired differences, verdicts."""

from __future__ import annotations

import math

import pytest

from muonlab.bench.stats import (DOES_NOT_HOLD, HOLDS, NOT_RESOLVED, Interval, mean_ci, paired_difference,
                                 t_quantile_975, verdict)


@pytest.mark.parametrize("df, expected", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423),
                                          (120, 1.9799), (math.inf, 1.9600)])
def test_t_quantile_table_values(df, expected):
    """Tabulated degrees of freedom give the published critical values."""
    assert t_quantile_975(df) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("df, exact", [(35, 2.030108), (50, 2.008559), (80, 1.990063), (1000, 1.962339)])
def test_t_quantile_interpolated(df, exact):
    """Between table rows the 1/df interpolation stays within 1e-4 of the exact quantile (exact values: scipy.stats.t.ppf)."""
    assert t_quantile_975(df) == pytest.approx(exact, abs=1e-4)


def test_t_quantile_rejects_df_below_one():
    """df < 1 has no interval: ValueError naming df."""
    with pytest.raises(ValueError, match="df"):
        t_quantile_975(0)


def test_mean_ci_known_values():
    """1..5: mean 3, s = sqrt(2.5), half width t_{.975,4} s / sqrt(5) = 1.96317."""
    ci = mean_ci([1, 2, 3, 4, 5])
    half = 2.776445 * math.sqrt(2.5) / math.sqrt(5)
    assert ci.mean == pytest.approx(3.0)
    assert ci.lo == pytest.approx(3 - half, abs=1e-4) and ci.hi == pytest.approx(3 + half, abs=1e-4)
    assert ci.n == 5


def test_mean_ci_single_value_has_no_interval():
    """One seed: the mean, NaN bounds, and the verdict rule cannot resolve anything."""
    ci = mean_ci([0.5])
    assert ci.mean == 0.5 and math.isnan(ci.lo) and math.isnan(ci.hi)
    assert verdict(ci) == NOT_RESOLVED


def test_mean_ci_rejects_non_finite():
    """A diverged (infinite) value must be dealt with before the statistics, not averaged silently."""
    with pytest.raises(ValueError):
        mean_ci([1.0, math.inf])


def test_paired_difference_removes_shared_seed_noise():
    """Big seed-to-seed noise shared by both arms cancels in the paired interval."""
    a = {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0}
    b = {0: 1.1, 1: 2.1, 2: 3.12, 3: 4.08}
    d = paired_difference(a, b)
    assert d.mean == pytest.approx(-0.1)
    assert d.hi < 0  # resolved although the per-arm intervals overlap almost completely
    assert mean_ci(a.values()).hi > mean_ci(b.values()).lo
    assert verdict(d) == HOLDS


def test_paired_difference_uses_common_seeds_only():
    """Seeds run by one arm only are left out of the pairing."""
    d = paired_difference({0: 1.0, 1: 2.0, 5: 9.0}, {0: 0.5, 1: 1.5, 7: 0.0})
    assert d.n == 2 and d.mean == pytest.approx(0.5)
    with pytest.raises(ValueError, match="common seeds"):
        paired_difference({0: 1.0}, {1: 1.0})


@pytest.mark.parametrize("interval, expected", [
    (Interval(-0.05, -0.08, -0.02, 3), HOLDS),            # entirely below zero: A lower than B
    (Interval(0.05, 0.02, 0.08, 3), DOES_NOT_HOLD),       # entirely above zero
    (Interval(-0.01, -0.04, 0.02, 3), NOT_RESOLVED),      # spans zero
    (Interval(0.0, -0.01, 0.01, 3), NOT_RESOLVED),        # centred on zero
    (Interval(-0.01, -0.02, 0.0, 3), NOT_RESOLVED),       # touches zero: not strictly below
    (Interval(-0.5, math.nan, math.nan, 1), NOT_RESOLVED),  # one pair: no interval
])
def test_verdict_rule(interval, expected):
    """The verdict depends only on where the interval of A - B lies relative to zero."""
    assert verdict(interval) == expected


def test_verdict_from_synthetic_seeds():
    """End to end on synthetic seeds: a clear gap holds, the reverse does not, noise alone is unresolved."""
    base = {s: 2.0 + 0.1 * s for s in range(4)}
    better = {s: v - 0.05 + 0.002 * (-1) ** s for s, v in base.items()}
    noisy = {s: v + 0.05 * (-1) ** s for s, v in base.items()}
    assert verdict(paired_difference(better, base)) == HOLDS
    assert verdict(paired_difference(base, better)) == DOES_NOT_HOLD
    assert verdict(paired_difference(noisy, base)) == NOT_RESOLVED
