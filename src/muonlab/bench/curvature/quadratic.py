"""Section-5 stylized quadratic: GD vs Adam vs Muon with exact line search (Figure-7 style).

On ``Q(Y) = ½⟨Y, H[Y]⟩ − ⟨G, Y⟩ + c`` (``muonlab.data.quadratic.StructuredQuadratic``), from
``Y_0 = 0`` each method picks a direction ``Z_t`` from the residual ``R_t = G − H[Y_t]`` (the
negative gradient) and steps ``Y_{t+1} = Y_t + η_t Z_t`` with the exact line search
``η_t = max(0, ⟨R_t, Z_t⟩ / ⟨Z_t, H[Z_t]⟩)``:

* GD: ``Z = R``;
* Muon (no momentum): ``Z = polar(R) = U Vᵀ`` over the nonzero singular values of ``R`` (SVD);
* Adam: ``Z = m̂ / (√v̂ + ε)`` with ``m``, ``v`` the usual moment EMAs of ``R`` — coordinate-wise,
  hence misaligned with the random eigenbases ``U``, ``V``.

Recorded per step: ``NDS_t = ⟨Z, H Z⟩ / ‖Z‖²`` and ``Q(Y_t)``. Theorem 5.5: Muon's time-averaged NDS
is below GD's for every horizon; if ``ρ + 1 > 1/α > 1 + σ_H/σ_L`` Muon's loss is also lower.

References:
    Wang et al., "Why Muon Outperforms Adam: A Curvature Perspective", arXiv 2606.04662 (2026), §5,
    Theorem 5.5, Figure 7 (its exact parameters were not available; the grid here is ours).
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import torch

from muonlab.data.quadratic import StructuredQuadratic

METHODS = ("gd", "adam", "muon")


def polar(r: torch.Tensor, rtol: float = 1e-10) -> torch.Tensor:
    """``U Vᵀ`` over the singular values above ``rtol · σ_max`` (zero matrix -> zero)."""
    u, s, vh = torch.linalg.svd(r, full_matrices=False)
    if s.numel() == 0 or float(s[0]) == 0.0:
        return torch.zeros_like(r)
    keep = s > rtol * s[0]
    return u[:, keep] @ vh[keep]


def run_quadratic(problem: StructuredQuadratic, method: str, steps: int, *,
                  betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-12) -> dict[str, torch.Tensor]:
    """Run one method for ``steps`` exact-line-search steps from ``Y = 0``.

    Returns:
        ``{"nds": (steps,), "loss": (steps + 1,), "eta": (steps,)}`` (``loss[0] = Q(0)``).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    y = torch.zeros(problem.d1, problem.d2, dtype=problem.G.dtype)
    m, v = torch.zeros_like(y), torch.zeros_like(y)
    nds, loss, etas = [], [float(problem.loss(y))], []
    for t in range(1, steps + 1):
        r = -problem.grad(y)  # residual G − H[Y]
        if method == "gd":
            z = r
        elif method == "muon":
            z = polar(r)
        else:
            m = betas[0] * m + (1 - betas[0]) * r
            v = betas[1] * v + (1 - betas[1]) * r * r
            z = (m / (1 - betas[0] ** t)) / ((v / (1 - betas[1] ** t)).sqrt() + eps)
        hz = problem.hvp(z)
        curv, zz = float((z * hz).sum()), float((z * z).sum())
        eta = max(0.0, float((r * z).sum()) / curv) if curv > 0 else 0.0
        y = y + eta * z
        nds.append(curv / zz if zz > 0 else float("nan"))
        loss.append(float(problem.loss(y)))
        etas.append(eta)
    return {"nds": torch.tensor(nds), "loss": torch.tensor(loss), "eta": torch.tensor(etas)}


def theorem_condition(rho: float, alpha: float, sigma_ratio: float) -> bool:
    """Theorem 5.5, part 2: alignment ``σ_H > σ_L`` (Assumption 5.4) and ``ρ + 1 > 1/α > 1 + σ_H/σ_L``."""
    return sigma_ratio > 1 and rho + 1 > 1 / alpha > 1 + sigma_ratio


def compare(problem: StructuredQuadratic, steps: int, betas: Sequence[float] = (0.9, 0.999)) -> dict[str, Any]:
    """Every method on one problem: traces plus time-averaged NDS and loss decrease, and ratios to GD."""
    runs = {k: run_quadratic(problem, k, steps, betas=betas) for k in METHODS}
    out: dict[str, Any] = {"runs": runs}
    for k, r in runs.items():
        out[f"nds_avg/{k}"] = float(r["nds"].nanmean())
        out[f"decrease/{k}"] = float(r["loss"][0] - r["loss"][-1])
    gd_loss = runs["gd"]["loss"]
    for k in ("adam", "muon"):
        out[f"nds_ratio/{k}"] = out[f"nds_avg/{k}"] / out["nds_avg/gd"]
        out[f"decrease_ratio/{k}"] = out[f"decrease/{k}"] / out["decrease/gd"]
        # Theorem 5.5 compares Q(Y_T) at every T: 1.0 when the method is never above GD (round-off aside).
        below = runs[k]["loss"][1:] <= gd_loss[1:] * (1 + 1e-9) + 1e-12 * float(gd_loss[0])
        out[f"below_gd_every_t/{k}"] = float(bool(below.all()))
    return out


def sweep(d: int, steps: int, rhos: Sequence[float], alphas: Sequence[float], sigma_ratios: Sequence[float],
          betas: Sequence[float] = (0.9, 0.999), seed: int = 0) -> list[dict[str, float]]:
    """:func:`compare` over the ``(ρ, α, σ_H/σ_L)`` grid; one flat row of floats per problem."""
    rows = []
    for rho, alpha, sr in itertools.product(rhos, alphas, sigma_ratios):
        prob = StructuredQuadratic(d, d, alpha=alpha, rho=rho, sigma_ratio=sr, seed=seed)
        res = compare(prob, steps, betas)
        row = {"rho": float(rho), "alpha": float(alpha), "alpha_realized": prob.alpha, "sigma_ratio": float(sr),
               "condition": float(theorem_condition(rho, prob.alpha, sr))}
        row.update({k: v for k, v in res.items() if k != "runs"})
        rows.append(row)
    return rows
