"""Polar Express: per-step minimax-optimal odd quintics, and their generator.

At step t the singular values are known to lie in ``[l_t, u_t]``. Polar Express
picks the odd quintic ``p_t`` that best approximates 1 on that interval in the
sup norm (a minimax problem solved by a Remez exchange), then propagates the
interval: ``l_{t+1} = p_t(l_t)``, ``u_{t+1} = 2 - l_{t+1}`` (the minimax error is
attained with equal size at both ends). The composition is worst-case optimal
among compositions of odd quintics chosen greedily (arXiv 2505.16932, Thm 3.1).

Two practical tweaks (arXiv 2505.16932, §4; NoahAmsel/PolarExpress ``optimal_composition``):

* cushion: the quintic is fitted on ``[max(l, cushion*u), u]`` instead of
  ``[l, u]`` (early steps with tiny l would otherwise produce huge coefficients),
  then rescaled by a constant so that it is again centred on the true interval:
  ``1 - p(l) = p(u) - 1``.
* safety: every step but the last uses ``p(x / s)``, s slightly above 1, so that
  bf16 round-off that pushes a singular value above ``u_t`` is still mapped well.

The shipped lists live in :mod:`muonlab.orth.schedules`; this module regenerates
them (tests check the agreement).

References:
    Amsel, Persson, Musco, Gower, "The Polar Express: Optimal Matrix Sign Methods
        and Their Application to the Muon Algorithm", arXiv 2505.16932;
        https://github.com/NoahAmsel/PolarExpress.
    Remez, "Sur le calcul effectif des polynomes d'approximation de Tchebichef" (1934).
"""

from __future__ import annotations

import math

import torch

from muonlab.orth.schedules import POLAR_EXPRESS, POLAR_EXPRESS_DION, POLAR_EXPRESS_RAW, Triple

__all__ = [
    "PAPER_CUSHION",
    "POLAR_EXPRESS",
    "POLAR_EXPRESS_DION",
    "POLAR_EXPRESS_RAW",
    "optimal_quintic",
    "polar_express_coefficients",
]

# Cushion that reproduces the published raw paper list (about 0.024; the PolarExpress repository's
# default call uses 0.02, which gives the Dion list instead); we solved for the cushion at which this generator's first coefficient
# equals the published 8.28721201814563 (bisection on [0.02, 0.03], re-done in
# tests/test_orth_polar_express.py). With it, entries 1-6 match to ~1e-15 relative, entry 7
# to ~1e-11 and entry 8 to ~5e-9 (the published entry 8 is exactly (15/8, -10/8, 3/8)).
PAPER_CUSHION = 0.0240732742418274

# Below this relative interval width the 4x4 Remez system is numerically singular and
# the minimax quintic equals its limit, the Taylor-optimal (15/8, -10/8, 3/8) rescaled to u.
_NARROW = 5e-6


def _p(coeffs: Triple, x: float) -> float:
    a, b, c = coeffs
    return a * x + b * x**3 + c * x**5


def optimal_quintic(lo: float, hi: float, *, tol: float = 1e-15, max_iter: int = 100) -> Triple:
    """Minimax odd quintic ``p`` approximating 1 on ``[lo, hi]`` (sup-norm optimal).

    Remez exchange: with alternation points ``lo < q < r < hi`` solve the linear system
    ``p(lo) = 1 - E, p(q) = 1 + E, p(r) = 1 - E, p(hi) = 1 + E`` for ``(a, b, c, E)``, move
    ``q, r`` to the interior extrema of ``p`` (roots of ``p'(x) = a + 3b x^2 + 5c x^4``),
    repeat until ``E`` is stable.

    Args:
        lo: lower end, ``0 < lo <= hi``.
        hi: upper end.
        tol: stop when ``|E_new - E_old| <= tol``.
        max_iter: iteration cap.

    Returns:
        ``(a, b, c)`` as Python floats.

    References:
        arXiv 2505.16932, Algorithm 2 and §4; https://github.com/NoahAmsel/PolarExpress.
    """
    if not (0 < lo <= hi):
        raise ValueError(f"need 0 < lo <= hi, got lo={lo!r}, hi={hi!r}")
    if lo / hi >= 1 - _NARROW:
        return (15 / 8) / hi, (-10 / 8) / hi**3, (3 / 8) / hi**5
    # Initial alternation points: quarter points of the interval (exact as lo -> hi).
    q, r = (3 * lo + hi) / 4, (lo + 3 * hi) / 4
    E, a, b, c = math.inf, 0.0, 0.0, 0.0
    for _ in range(max_iter):
        pts = (lo, q, r, hi)
        signs = (1.0, -1.0, 1.0, -1.0)  # row: p(x) + sign*E = 1
        lhs = torch.tensor([[x, x**3, x**5, s] for x, s in zip(pts, signs)], dtype=torch.float64)
        a, b, c, E_new = torch.linalg.solve(lhs, torch.ones(4, dtype=torch.float64)).tolist()
        disc = math.sqrt(max(9 * b * b - 20 * a * c, 0.0))
        q, r = (math.sqrt((-3 * b - s * disc) / (10 * c)) for s in (1.0, -1.0))
        q, r = min(q, r), max(q, r)
        if abs(E_new - E) <= tol:
            break
        E = E_new
    return float(a), float(b), float(c)


def polar_express_coefficients(
    steps: int = 8,
    l0: float = 1e-3,
    cushion: float = PAPER_CUSHION,
    safety: float = 1.01,
) -> list[Triple]:
    """Generate a Polar Express schedule of ``steps`` odd quintics.

    Algorithm (arXiv 2505.16932, §4)::

        l <- l0, u <- 1
        for t = 1..T:
            (a, b, c) <- optimal_quintic(max(l, cushion*u), u)
            (a, b, c) <- (a, b, c) * 2 / (p(l) + p(u))        # recentre on [l, u]
            if t < T: (a, b, c) <- (a/s, b/s^3, c/s^5)          # safety s
            l <- p(l); u <- 2 - l

    Note the safety enters the interval propagation here (this is how the Dion /
    modded-nanogpt 5-step list was made). The paper's raw list is ``safety=1.0``; the
    shipped ``"polar_express"`` schedule divides that raw list by 1.01 afterwards,
    which is *not* the same as ``safety=1.01`` here (the intervals differ slightly).

    Args:
        steps: number of quintics T (>= 1).
        l0: assumed lower bound of the normalised singular values (0 < l0 <= 1).
        cushion: fit on ``[max(l, cushion*u), u]``; 0 disables it. Default: the value
            that reproduces the published paper list.
        safety: factor s >= 1 applied to steps 1..T-1; 1.0 disables it.

    Returns:
        List of ``(a, b, c)`` triples.

    References:
        arXiv 2505.16932; https://github.com/NoahAmsel/PolarExpress;
        microsoft/dion ``dion/polar_express.py``.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not (0 < l0 <= 1):
        raise ValueError(f"l0 must be in (0, 1], got {l0!r}")
    if not (0 <= cushion < 1):
        raise ValueError(f"cushion must be in [0, 1), got {cushion!r}")
    if safety < 1:
        raise ValueError(f"safety must be >= 1, got {safety!r}")
    lo, hi = float(l0), 1.0
    out: list[Triple] = []
    for t in range(steps):
        coeffs = optimal_quintic(max(lo, cushion * hi), hi)
        # Recentre: after fitting on the cushioned interval the error at lo is larger than
        # at hi; a constant factor makes 1 - p(lo) = p(hi) - 1 again (no-op without cushion).
        k = 2.0 / (_p(coeffs, lo) + _p(coeffs, hi))
        a, b, c = (k * v for v in coeffs)
        if t < steps - 1:
            a, b, c = a / safety, b / safety**3, c / safety**5
        out.append((a, b, c))
        lo = _p((a, b, c), lo)
        hi = 2.0 - lo
    return out
