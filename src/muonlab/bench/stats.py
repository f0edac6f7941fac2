"""Seed statistics for benchmark claims: t intervals, paired differences and the verdict rule.

Everything here is plain numpy (no scipy): a claim is judged from a handful of seeds, so the
statistics are the textbook small-sample ones.

* :func:`mean_ci` -- mean of ``n`` values and its two-sided 95% Student t interval
  ``mean ± t_{0.975, n-1} · s / sqrt(n)`` (``s`` the sample standard deviation).
* :func:`paired_difference` -- the same interval for the per-seed differences ``a_s - b_s`` over the
  seeds both arms ran. Two arms that share a seed share the model initialisation and the data order,
  so differencing removes that shared noise; an interval on the difference is the right object, and
  two overlapping per-arm intervals are **never** used to decide anything.
* :func:`verdict` -- "A beats B" (lower loss is better) **holds** when the whole interval of
  ``A - B`` lies below zero, **does not hold** when it lies above zero, and is **not resolved** when
  it contains zero (or when fewer than two pairs exist, so no interval can be formed).

The t quantiles come from a table (:data:`T975`, df 1-30, then 40, 60, 120, inf, linearly
interpolated in ``1/df`` between rows), accurate to the 4 decimals printed in standard tables.

References:
    Student (W. S. Gosset), "The probable error of a mean", Biometrika 6 (1908).
    NIST/SEMATECH e-Handbook of Statistical Methods, §1.3.6.7.2 "Critical values of the Student's t
    distribution" (the table values), https://www.itl.nist.gov/div898/handbook/eda/section3/eda3672.htm
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

HOLDS, DOES_NOT_HOLD, NOT_RESOLVED = "holds", "does not hold", "not resolved"

# Two-sided 95% critical values t_{0.975, df} (NIST e-Handbook table, 4 decimals).
T975: dict[float, float] = {
    1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 6: 2.4469, 7: 2.3646, 8: 2.3060, 9: 2.2622,
    10: 2.2281, 11: 2.2010, 12: 2.1788, 13: 2.1604, 14: 2.1448, 15: 2.1314, 16: 2.1199, 17: 2.1098,
    18: 2.1009, 19: 2.0930, 20: 2.0860, 21: 2.0796, 22: 2.0739, 23: 2.0687, 24: 2.0639, 25: 2.0595,
    26: 2.0555, 27: 2.0518, 28: 2.0484, 29: 2.0452, 30: 2.0423, 40: 2.0211, 60: 2.0003, 120: 1.9799,
    math.inf: 1.9600,
}


def t_quantile_975(df: float) -> float:
    """``t_{0.975, df}``: the two-sided 95% Student t critical value (``df >= 1``).

    Exact table values for integer ``df <= 30`` and 40, 60, 120; in between, linear interpolation in
    ``1/df`` (the standard rule for t tables; within 1e-4 of the exact quantile); ``inf`` gives the normal 1.96.
    """
    if not df >= 1:
        raise ValueError(f"df must be >= 1, got {df!r}")
    if df in T975:
        return T975[df]
    keys = sorted(T975)
    hi = next(k for k in keys if k > df)
    lo = max(k for k in keys if k < df)
    w = (1 / lo - 1 / df) / (1 / lo - (0 if math.isinf(hi) else 1 / hi))
    return T975[lo] + w * (T975[hi] - T975[lo])


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% t interval over ``n`` values (``lo``/``hi`` are NaN when ``n < 2``)."""

    mean: float
    lo: float
    hi: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    def __str__(self) -> str:
        if self.n < 2 or not math.isfinite(self.lo):
            return f"{self.mean:+.4f} (n={self.n}, no interval)"
        return f"{self.mean:+.4f} [{self.lo:+.4f}, {self.hi:+.4f}] (n={self.n})"


def mean_ci(values: Sequence[float]) -> Interval:
    """Mean and two-sided 95% Student t interval of ``values`` (all finite)."""
    x = np.asarray(list(values), dtype=np.float64)
    if x.size == 0:
        raise ValueError("mean_ci needs at least one value")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"mean_ci needs finite values, got {x.tolist()}")
    mean = float(x.mean())
    if x.size < 2:
        return Interval(mean, math.nan, math.nan, int(x.size))
    half = t_quantile_975(x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return Interval(mean, mean - half, mean + half, int(x.size))


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> Interval:
    """95% t interval of ``a[s] - b[s]`` over the seeds ``s`` present in both (paired by seed)."""
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError(f"no common seeds to pair (a: {sorted(a)}, b: {sorted(b)})")
    return mean_ci([a[s] - b[s] for s in common])


def verdict(diff: Interval) -> str:
    """The rule for a claim "A has lower loss than B", given the interval of ``A - B``.

    ``hi < 0``: **holds**; ``lo > 0``: **does not hold**; otherwise (the interval contains zero, or
    no interval exists because fewer than two pairs were run): **not resolved**.
    """
    if diff.n < 2 or not (math.isfinite(diff.lo) and math.isfinite(diff.hi)):
        return NOT_RESOLVED
    if diff.hi < 0:
        return HOLDS
    if diff.lo > 0:
        return DOES_NOT_HOLD
    return NOT_RESOLVED
