"""The stylized matrix quadratic of the curvature paper's Section 5 (heterogeneous curvature).

For one weight matrix ``W`` of shape ``(d1, d2)`` the loss is

    L(W) = ½ <W, H[W]> − <G, W> + c,       H[W] = Σ_k A_k W B_k   (k = 1..r),

with ``A_k = U diag(a_k) Uᵀ`` and ``B_k = V diag(b_k) Vᵀ`` sharing the orthogonal bases ``U``, ``V``
(Assumptions 5.1–5.2: low Kronecker rank, jointly diagonalizable factors). ``H`` is diagonal in
the basis ``u_i v_jᵀ`` with eigenvalue ``λ_ij = Σ_k a_k[i] b_k[j]``. The *paired* modes
``M_j = u_j v_jᵀ`` carry the paired curvatures ``w_j = λ_jj``: ``w_H`` for ``j < m``, ``w_L`` for
``m <= j < q`` and 0 beyond (Assumption 5.3), and the gradient at 0 is ``G = Σ_{j<q} σ_j M_j``
with ``σ_H`` on the sharp modes and ``σ_L`` on the rest (Assumption 5.4, alignment ``σ_H > σ_L``).
The constant ``c = ½ <G, H⁺G>`` makes the minimum value exactly 0, so ``loss`` is suboptimality.

All factors are entrywise nonnegative, so ``H`` is positive semidefinite; the null space
(``j >= q`` columns of ``V``) is orthogonal to ``G``, so the minimum-norm optimum
``W* = Σ_j (σ_j / w_j) M_j`` is unique in the range of ``H``.

Construction (ours): term 1 is ``a_1 = b_1 = sqrt(w)``; terms 2..r are small random nonnegative
factors and ``b_1`` is corrected so that every paired sum stays exactly ``w_j``. Generic random
factors make the Kronecker rank exactly ``r``, which the diagnostics' ξ(r) test relies on.

Flattening convention: ``hessian()`` acts on ``W.reshape(-1)`` (row-major), where
``vec(A W B) = (A ⊗ Bᵀ) vec(W)``, so ``mat(H) = Σ_k A_k ⊗ B_k`` (the ``B_k`` are symmetric).

References:
    Wang, Zhang, Li, Bergemann, Yang. "Why Muon Outperforms Adam: A Curvature Perspective",
    arXiv:2606.04662, §5 (Assumptions 5.1–5.4, Theorem 5.5).
"""

from __future__ import annotations

import math

import torch

__all__ = ["StructuredQuadratic", "random_orthogonal"]


def random_orthogonal(d: int, generator: torch.Generator, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Haar-random orthogonal ``(d, d)`` matrix: QR of a Gaussian with the sign fix of R's diagonal."""
    q, r = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).to(dtype)


class StructuredQuadratic:
    """Matrix quadratic with two-level paired curvatures and an aligned gradient.

    Args:
        d1, d2: shape of ``W``.
        q: number of positive paired modes (default ``min(d1, d2)``).
        alpha: fraction ``m / q`` of sharp modes (``m = max(1, round(alpha q))``); the theorem
            needs ``alpha < 1/2``.
        rho: curvature imbalance ``w_H / w_L`` (>= 1); the main imbalance knob.
        sigma_ratio: gradient alignment ``σ_H / σ_L`` (> 0; 1 = unaligned control).
        r: Kronecker rank (>= 1).
        w_low, sigma_low: the low curvature ``w_L`` and low gradient level ``σ_L``.
        seed: seed for ``U``, ``V`` and the perturbation factors.
        dtype: dtype of every tensor (float64 for exact studies).

    Attributes:
        U, V: ``(d1, d1)`` and ``(d2, d2)`` orthogonal bases.
        a, b: ``(r, d1)`` and ``(r, d2)`` factor eigenvalues; ``A``, ``B``: ``(r, d1, d1)``, ``(r, d2, d2)``.
        w: ``(min(d1, d2),)`` paired curvatures; ``sigma``: ``(min(d1, d2),)`` gradient coefficients.
        G: ``(d1, d2)`` gradient at ``W = 0`` is ``-G``.

    References:
        arXiv:2606.04662 §5 (set-up) and Figure 7 (the experiment this reproduces).
    """

    def __init__(
        self,
        d1: int = 32,
        d2: int = 32,
        *,
        q: int | None = None,
        alpha: float = 0.1,
        rho: float = 100.0,
        sigma_ratio: float = 3.0,
        r: int = 4,
        w_low: float = 1.0,
        sigma_low: float = 1.0,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        p = min(d1, d2)
        q = p if q is None else q
        checks = {
            "d1": (d1, d1 >= 1), "d2": (d2, d2 >= 1), "q": (q, 1 <= q <= p), "alpha": (alpha, 0 < alpha < 1),
            "rho": (rho, math.isfinite(rho) and rho >= 1),
            "sigma_ratio": (sigma_ratio, math.isfinite(sigma_ratio) and sigma_ratio > 0),
            "r": (r, r >= 1), "w_low": (w_low, math.isfinite(w_low) and w_low > 0),
            "sigma_low": (sigma_low, math.isfinite(sigma_low) and sigma_low > 0),
        }
        for key, (value, ok) in checks.items():
            if not ok:
                raise ValueError(f"invalid {key}: {value!r}")
        self.d1, self.d2, self.q, self.r = d1, d2, q, r
        self.m = min(q, max(1, round(alpha * q)))
        g = torch.Generator().manual_seed(seed)
        f64 = torch.float64  # build in fp64, cast once at the end
        U, V = random_orthogonal(d1, g), random_orthogonal(d2, g)
        w = torch.zeros(p, dtype=f64)
        w[: self.m], w[self.m : q] = rho * w_low, w_low
        sigma = torch.zeros(p, dtype=f64)
        sigma[: self.m], sigma[self.m : q] = sigma_ratio * sigma_low, sigma_low
        a, b = torch.zeros(r, d1, dtype=f64), torch.zeros(r, d2, dtype=f64)
        a[0, :p] = w.sqrt()
        if r > 1:
            # eps² (r-1) <= w_L / 2 keeps the corrected b_1 >= sqrt(w_L)/2 > 0 (all factors >= 0).
            eps = math.sqrt(0.5 * w_low / (r - 1))
            a[1:] = eps * torch.rand(r - 1, d1, generator=g, dtype=f64)
            b[1:, :q] = eps * torch.rand(r - 1, q, generator=g, dtype=f64)
        # b_1 restores the paired sums exactly: Σ_k a_k[j] b_k[j] = w_j for j < q; columns j >= q stay 0.
        b[0, :q] = (w[:q] - (a[1:, :q] * b[1:, :q]).sum(0)) / a[0, :q]
        A = torch.einsum("ij,kj,lj->kil", U, a, U)  # (r, d1, d1)
        B = torch.einsum("ij,kj,lj->kil", V, b, V)  # (r, d2, d2)
        G = (U[:, :p] * sigma) @ V[:, :p].T  # (d1, d2)
        self.U, self.V, self.A, self.B, self.G = (t.to(dtype) for t in (U, V, A, B, G))
        self.w, self.sigma, self.a, self.b = (t.to(dtype) for t in (w, sigma, a, b))
        self.const = 0.5 * float((sigma[:q] ** 2 / w[:q]).sum())

    # --- the problem ---------------------------------------------------------------------------
    def hvp(self, Y: torch.Tensor) -> torch.Tensor:
        """``H[Y] = Σ_k A_k Y B_k``; ``Y`` may carry leading batch dimensions ``(..., d1, d2)``."""
        A, B = self.A.to(Y), self.B.to(Y)  # follow Y's dtype and device
        return (A @ Y.unsqueeze(-3) @ B).sum(-3)  # (..., r, d1, d2) summed over k

    def loss(self, W: torch.Tensor) -> torch.Tensor:
        """``½ <W, H[W]> − <G, W> + c`` (differentiable; 0 at the optimum)."""
        G = self.G.to(W)
        return 0.5 * (W * self.hvp(W)).sum() - (G * W).sum() + self.const

    def grad(self, W: torch.Tensor) -> torch.Tensor:
        """Exact gradient ``H[W] − G``."""
        return self.hvp(W) - self.G.to(W)

    def hessian(self) -> torch.Tensor:
        """Explicit ``(d1 d2, d1 d2)`` Hessian for row-major ``W.reshape(-1)`` (small sizes only)."""
        return sum(torch.kron(self.A[k], self.B[k]) for k in range(self.r))

    def optimum(self) -> torch.Tensor:
        """Minimum-norm minimizer ``W* = Σ_{j<q} (σ_j / w_j) u_j v_jᵀ`` (loss 0 there)."""
        q = self.q
        return (self.U[:, :q] * (self.sigma[:q] / self.w[:q])) @ self.V[:, :q].T

    def eigenvalues(self) -> torch.Tensor:
        """All ``d1 d2`` Hessian eigenvalues ``λ_ij = Σ_k a_k[i] b_k[j]`` as a ``(d1, d2)`` grid."""
        return self.a.T @ self.b

    def eigenmatrix(self, i: int, j: int) -> torch.Tensor:
        """The eigen-matrix ``u_i v_jᵀ`` of eigenvalue ``eigenvalues()[i, j]``."""
        return torch.outer(self.U[:, i], self.V[:, j])

    def modes(self) -> torch.Tensor:
        """The ``q`` positive paired modes ``M_j = u_j v_jᵀ``, shape ``(q, d1, d2)``, sharp ones first."""
        return torch.einsum("iq,jq->qij", self.U[:, : self.q], self.V[:, : self.q])

    @property
    def alpha(self) -> float:
        """Realized sharp fraction ``m / q``."""
        return self.m / self.q
