"""Section-5 structural diagnostics (Kronecker fit, joint diagonalization, ζ) and update spectra."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from muonlab import diagnostics as dg

DT = torch.float64


def orthogonal(d: int, seed: int) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=DT))
    return q * torch.sign(torch.diagonal(r))


class KronQuadratic(nn.Module):
    """L(W) = ½⟨W, Σ_k A_k W B_k⟩ − ⟨G, W⟩ with commuting A_k (basis U) and B_k (basis V)."""

    def __init__(self, d1: int = 4, d2: int = 3, r: int = 2, eps: float = 0.1) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.U, self.V = orthogonal(d1, 1), orthogonal(d2, 2)
        # Term 1 dominates with distinct, decreasing entries so that the greedy pairing is diagonal
        # and the joint eigenbases are unique; later terms are small and generic.
        self.a = torch.cat([torch.linspace(4.0, 1.0, d1, dtype=DT)[None], eps * torch.rand(r - 1, d1, generator=g, dtype=DT)])
        self.b = torch.cat([torch.linspace(3.0, 1.0, d2, dtype=DT)[None], eps * torch.rand(r - 1, d2, generator=g, dtype=DT)])
        self.A = [self.U @ torch.diag(x) @ self.U.T for x in self.a]
        self.B = [self.V @ torch.diag(x) @ self.V.T for x in self.b]
        self.sigma = torch.tensor([3.0, 2.0, 0.5], dtype=DT)[: min(d1, d2)]
        p = min(d1, d2)
        self.G = (self.U[:, :p] * self.sigma) @ self.V[:, :p].T
        self.W = nn.Parameter(torch.randn(d1, d2, generator=g, dtype=DT))

    def hessian(self) -> torch.Tensor:
        return sum(torch.kron(a, b) for a, b in zip(self.A, self.B))


def kq_loss(model: KronQuadratic, batch=None) -> torch.Tensor:
    hw = sum(a @ model.W @ b for a, b in zip(model.A, model.B))
    return 0.5 * (model.W * hw).sum() - (model.G * model.W).sum()


def greedy_reference(grid: torch.Tensor) -> list[float]:
    """Plain greedy matching: repeatedly the largest entry whose row and column are unused."""
    used_r, used_c, out = set(), set(), []
    for _ in range(min(grid.shape)):
        best = None
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if i not in used_r and j not in used_c and (best is None or grid[i, j] > grid[best]):
                    best = (i, j)
        used_r.add(best[0])
        used_c.add(best[1])
        out.append(float(grid[best]))
    return out


def test_block_hessian_matches_kronecker_sum():
    """block_hessian of W equals Σ_k A_k ⊗ B_k (row-major vec) exactly."""
    model = KronQuadratic()
    h = dg.block_hessian(model, kq_loss, None, "W")
    assert torch.allclose(h, model.hessian(), atol=1e-12)
    with pytest.raises(ValueError, match="max_entries"):
        dg.block_hessian(model, kq_loss, None, "W", max_entries=10)


def test_kronecker_xi_reaches_one_at_true_rank():
    """ξ(r_true) = 1, ξ(r_true − 1) < 1, and the rank-r factors rebuild H."""
    model = KronQuadratic(r=2, eps=1.0)
    out = dg.kronecker_approx(model.hessian(), 4, 3, r=2)
    assert out["xi"][1] == pytest.approx(1.0, abs=1e-12)
    assert out["xi"][0] < 1.0 - 1e-6
    rebuilt = sum(torch.kron(a, b) for a, b in zip(out["A"], out["B"]))
    assert torch.allclose(rebuilt, model.hessian(), atol=1e-10)


def test_joint_diagonalization_of_commuting_factors():
    """Commuting symmetric matrices are jointly diagonalized: η_sd = 1, QᵀA_kQ diagonal."""
    model = KronQuadratic(r=3)
    q, info = dg.joint_diagonalize(model.A)
    assert info["eta_sd"] == pytest.approx(1.0, abs=1e-12)
    assert info["eta_sd_normalized"] == pytest.approx(1.0, abs=1e-12)
    for a in model.A:
        d = q.T @ a @ q
        assert torch.allclose(d, torch.diag(torch.diagonal(d)), atol=1e-10)


def test_joint_diagonalization_2x2_matches_brute_force():
    """For two generic 2×2 matrices the Jacobi angle reaches the best diagonal energy on a fine grid."""
    g = torch.Generator().manual_seed(3)
    mats = [(lambda m: m + m.T)(torch.randn(2, 2, generator=g, dtype=DT)) for _ in range(2)]
    _, info = dg.joint_diagonalize(mats)
    total = sum(float(m.pow(2).sum()) for m in mats)
    best = 0.0
    for k in range(20001):
        t = math.pi * k / 20000
        r = torch.tensor([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]], dtype=DT)
        best = max(best, sum(float(torch.diagonal(r.T @ m @ r).pow(2).sum()) for m in mats) / total)
    assert 0.0 < info["eta_sd"] < 1.0
    assert info["eta_sd"] == pytest.approx(best, abs=1e-7)


def test_paired_curvatures_and_grad_energy_closed_form():
    """Paired curvatures equal a plain greedy matching of the true grid; ζ matches Σ σ² fractions."""
    model = KronQuadratic(r=2)
    qa, _ = dg.joint_diagonalize(model.A)
    qb, _ = dg.joint_diagonalize(model.B)
    w, pairs = dg.paired_curvatures(model.A, model.B, qa, qb)
    ref = greedy_reference(model.a.T @ model.b)
    assert torch.allclose(w, torch.tensor(ref, dtype=DT), atol=1e-10)
    zeta = dg.grad_energy_ratio(model.G, qa, qb, pairs)
    s2 = model.sigma.pow(2)
    assert torch.allclose(zeta, s2.cumsum(0) / s2.sum(), atol=1e-10)


def test_structural_summary_on_quadratic():
    """The one-call summary reports ξ(r_true) = 1, η_sd = 1 and ζ(q) = 1 on an ideal problem."""
    model = KronQuadratic(r=2)
    out = dg.structural_summary(model, kq_loss, None, "W", model.G, r=2)
    assert out["xi_2"] == pytest.approx(1.0, abs=1e-10)
    assert out["eta_A"] == pytest.approx(1.0, abs=1e-10) and out["eta_B"] == pytest.approx(1.0, abs=1e-10)
    assert out["zeta_q"] == pytest.approx(1.0, abs=1e-10)
    assert out["q_positive"] == 3.0


# ---------------------------------------------------------------------------------------------
# Update spectra
# ---------------------------------------------------------------------------------------------
def test_spectrum_of_semi_orthogonal_and_rank_one():
    """A scaled semi-orthogonal update has zero orthogonality error and full effective rank;
    a rank-one update has effective rank 1 and error sqrt((k-1)/k)."""
    q = 0.3 * orthogonal(5, 7)[:, :3]
    s = dg.matrix_spectrum(q)
    assert s["orth_error"] == pytest.approx(0.0, abs=1e-12)
    assert s["effective_rank"] == pytest.approx(3.0, abs=1e-10)
    assert s["stable_rank"] == pytest.approx(3.0, abs=1e-10)
    assert s["sv_ratio"] == pytest.approx(1.0, abs=1e-12)
    assert s["rms"] == pytest.approx(0.3 * math.sqrt(3 / 15), abs=1e-12)
    r1 = dg.matrix_spectrum(torch.outer(torch.arange(1.0, 5.0), torch.ones(3)))
    assert r1["effective_rank"] == pytest.approx(1.0, abs=1e-6)
    assert r1["orth_error"] == pytest.approx(math.sqrt(2 / 3), abs=1e-6)


def test_update_spectra_keys_vectors_and_zero():
    """1-D tensors get only rms; N-D are viewed as (out, rest); zero matrices give NaN, not errors."""
    out = dg.update_spectra({"w": torch.zeros(3, 2, 2), "b": torch.ones(4)})
    assert out["b/rms"] == 1.0 and "b/orth_error" not in out
    assert math.isnan(out["w/orth_error"]) and out["w/rms"] == 0.0
    assert "b/rms" not in dg.update_spectra({"b": torch.ones(4)}, matrices_only=True)
    with pytest.raises(ValueError, match="names"):
        dg.update_spectra([torch.ones(2, 2)], names=["a", "b"])
