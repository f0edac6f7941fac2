"""Comparing two optimizers at matched validation loss, and trajectory-averaged NDS.

The paper's x-axis is validation loss, not step, which controls for "Muon is simply further
along". The paper's exact pairing rule was not available; we implement our own choice:
smooth each run's validation loss with a running minimum, take the loss interval both runs cover,
lay a grid uniform in log-loss over it, interpolate every metric onto the grid as a function of
validation loss, and report the mean and median of the ratio ``metric_a / metric_b`` over the grid,
plus the nearest-checkpoint variant (no interpolation). Ratios are taken only where both values are
positive (NDS and the curvature penalty can be negative; pitfall 9).

References:
    Wang et al., "Why Muon Outperforms Adam: A Curvature Perspective", arXiv 2606.04662 (2026), §3-4.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

Rows = Sequence[dict]


def checkpoints(rows: Rows, metrics: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(smoothed val loss, {metric: values})`` over the rows that have a probe and a val loss."""
    keep = [r for r in rows if "val_loss" in r and all(m in r for m in metrics)]
    val = np.minimum.accumulate(np.array([r["val_loss"] for r in keep], dtype=float))
    return val, {m: np.array([r[m] for r in keep], dtype=float) for m in metrics}


def _as_function_of_loss(val: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Increasing unique losses with the mean metric per loss (running-min plateaus averaged)."""
    uniq, inv = np.unique(val, return_inverse=True)
    sums = np.zeros_like(uniq)
    np.add.at(sums, inv, y)
    return uniq, sums / np.bincount(inv)


def _stats(ratios: np.ndarray) -> dict[str, float]:
    ok = ratios[np.isfinite(ratios)]
    if ok.size == 0:
        return {"mean": math.nan, "median": math.nan, "n": 0.0}
    return {"mean": float(ok.mean()), "median": float(np.median(ok)), "n": float(ok.size)}


def _positive_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((a > 0) & (b > 0), a / b, np.nan)


def match_by_val_loss(rows_a: Rows, rows_b: Rows, metrics: Sequence[str], *, grid: int = 50) -> dict:
    """Ratios ``a / b`` of each metric at matched validation loss.

    Returns:
        ``{"grid": val-loss grid (descending), "a": {m: curve}, "b": {m: curve},
        "ratio": {m: curve}, "interp": {m: {mean, median, n}}, "nearest": {m: {mean, median, n}},
        "overlap": (lo, hi)}``; empty curves and NaN statistics when the runs' losses do not overlap.
    """
    va, ma = checkpoints(rows_a, metrics)
    vb, mb = checkpoints(rows_b, metrics)
    out: dict = {"grid": np.array([]), "a": {}, "b": {}, "ratio": {}, "interp": {}, "nearest": {},
                 "overlap": (math.nan, math.nan)}
    if va.size < 2 or vb.size < 2:
        return out
    lo, hi = max(va.min(), vb.min()), min(va.max(), vb.max())
    out["overlap"] = (float(lo), float(hi))
    if not lo < hi:
        for m in metrics:
            out["interp"][m] = out["nearest"][m] = _stats(np.array([]))
        return out
    g = np.exp(np.linspace(math.log(hi), math.log(lo), grid))  # descending: training progresses left to right
    out["grid"] = g
    for m in metrics:
        xa, ya = _as_function_of_loss(va, ma[m])
        xb, yb = _as_function_of_loss(vb, mb[m])
        ca, cb = np.interp(g, xa, ya), np.interp(g, xb, yb)
        out["a"][m], out["b"][m] = ca, cb
        out["ratio"][m] = _positive_ratio(ca, cb)
        out["interp"][m] = _stats(out["ratio"][m])
        inside = (vb >= lo) & (vb <= hi)
        nearest = np.array([ma[m][int(np.argmin(np.abs(va - v)))] for v in vb[inside]])
        out["nearest"][m] = _stats(_positive_ratio(nearest, mb[m][inside]))
    return out


def trajectory_average(rows: Rows, key: str = "curv/nds", *, skip_first: int = 0) -> float:
    """Mean of ``key`` over the logged checkpoints (the paper's trajectory-averaged NDS), optionally skipping the first few."""
    vals = [r[key] for r in rows if key in r and math.isfinite(r[key])][skip_first:]
    return float(np.mean(vals)) if vals else math.nan
