"""TrasMuon (authors' code v2.1): fp64 reference loop, calibration and gate oracles, robustness, validation."""

from __future__ import annotations

import math

import pytest
import torch

import muonlab
from tests.reference.trasmuon import trasmuon_init, trasmuon_step

# n >= 8 (gate active) and n < 8 (gate off) both present; (4, 3, 3, 2) is a conv weight viewed as (4, 18).
SHAPES = [(6, 6), (9, 4), (3, 7), (1, 5), (5, 1), (4, 3, 3, 2), (10, 12), (5, 16), (12, 8)]
DEFAULTS = dict(
    lr=0.01, momentum=0.95, beta2=0.95, eps=1e-8, weight_decay=0.0, scale_factor=0.2, col_gate_enabled=True,
    col_gate_use="m", energy_quantile=0.5, col_gate_alpha=1.0, col_gate_cmin=0.7, energy_k=3.0,
    use_energy_trigger=True, gate_ema=0.9, col_gate_every=4, col_gate_min_in=8, e_ref_ema_beta=0.99,
    warmup_steps=0, sf_enabled=True, sf_mix=0.3, sf_exclude_warmup=True,
)
CONFIGS = {
    "defaults": dict(weight_decay=0.1),
    "soft-gate-no-sf-grad": dict(weight_decay=0.1, use_energy_trigger=False, col_gate_cmin=0.1, col_gate_alpha=2.0,
                                 sf_enabled=False, col_gate_use="g", energy_quantile=0.3, e_ref_ema_beta=0.9),
    "warmup-b-source": dict(weight_decay=0.1, warmup_steps=5, sf_exclude_warmup=False, col_gate_use="b",
                            col_gate_every=3, energy_k=1.5, gate_ema=0.5, sf_mix=0.6),
    "gate-off": dict(weight_decay=0.1, col_gate_enabled=False),
}


def _you_ns_fp64(eps):
    """You's 5-step Newton–Schulz as a plain fp64 loop, normalizing by ||X||_F + eps first."""
    def ns(X):
        tall = X.shape[0] > X.shape[1]
        Y = X.T if tall else X
        Y = Y / (torch.linalg.norm(Y) + eps)
        for a, b, c in muonlab.orth.YOU:
            A = Y @ Y.T
            Y = a * Y + (b * A + c * A @ A) @ Y
        return Y.T if tall else Y
    return ns


def test_default_newton_schulz_normalizes_with_the_authors_eps(monkeypatch):
    """Default orthogonalizer: You's NS with eps 1e-8 in the normalization, as the authors' code (not 1e-7).

    fp64 TrasMuon with its default orthogonalizer equals the reference loop run with a plain You-NS loop at
    eps = 1e-8 to 1e-13; the same loop at eps = 1e-7 is farther off than that (so the check can fail).
    """
    import tests.reference.trasmuon as ref_module

    g = torch.Generator().manual_seed(5)
    shapes = [(3, 4), (2, 9), (6, 6)]
    G_seq = [[0.05 * torch.randn(*s, dtype=torch.float64, generator=g) for s in shapes] for _ in range(4)]
    params = [torch.zeros(*s, dtype=torch.float64, requires_grad=True) for s in shapes]
    opt = muonlab.TrasMuon([{"params": params}], **DEFAULTS)
    for grads in G_seq:
        for p, G in zip(params, grads):
            p.grad = G.clone()
        opt.step()
    errs = {}
    for eps in (1e-8, 1e-7):
        monkeypatch.setattr(ref_module, "polar", _you_ns_fp64(eps))
        refs = [torch.zeros(*s, dtype=torch.float64) for s in shapes]
        states = [trasmuon_init(*s) for s in shapes]
        for grads in G_seq:
            refs = [trasmuon_step(r, G, st, **DEFAULTS) for r, G, st in zip(refs, grads, states)]
        errs[eps] = max(((p.detach() - r).norm() / r.norm()).item() for p, r in zip(params, refs))
    assert errs[1e-8] < 1e-13 < errs[1e-7], errs


def _column_scales(shape, g):
    """Fixed heavy-tailed column scales, so some columns persistently exceed k_E x the median energy."""
    n = math.prod(shape[1:])
    return torch.exp(1.5 * torch.randn(n, dtype=torch.float64, generator=g))


def _updates(G_seq, **kw):
    """fp64 TrasMuon (SVD) on one zero-initialised matrix; returns (updates per unit lr, optimizer, param)."""
    p = torch.zeros_like(G_seq[0]).requires_grad_()
    opt = muonlab.TrasMuon([{"params": [p]}], orthogonalizer="svd", **kw)
    lr = opt.param_groups[0]["lr"]
    out = []
    for G in G_seq:
        before = p.detach().clone()
        p.grad = G.clone()
        opt.step()
        out.append((before - p.detach()) / lr)
    return out, opt, p


def _hot_column(m=6, n=10, j=3, factor=10.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    G = torch.randn(m, n, dtype=torch.float64, generator=g)
    G[:, j] *= factor  # energy ~100x the median: r > k_E = 3
    return G


@pytest.mark.parametrize("config", list(CONFIGS))
def test_equals_reference_loop_fp64(config):
    """fp64 TrasMuon (SVD) == the plain per-matrix loop to 1e-10 over 24 steps (6 gate refreshes), menagerie, wd on."""
    hp = dict(DEFAULTS, **CONFIGS[config])
    g = torch.Generator().manual_seed(3)
    params = [torch.randn(*s, dtype=torch.float64, requires_grad=True) for s in SHAPES]
    scales = [_column_scales(s, g) for s in SHAPES]
    ref = [p.detach().clone() for p in params]
    states = [trasmuon_init(s[0], math.prod(s[1:])) for s in SHAPES]
    opt = muonlab.TrasMuon([{"params": params}], orthogonalizer="svd", **hp)
    for _ in range(24):
        grads = [(torch.randn(s[0], math.prod(s[1:]), dtype=torch.float64, generator=g) * c).reshape(s)
                 for s, c in zip(SHAPES, scales)]
        for p, G in zip(params, grads):
            p.grad = G.clone()
        opt.step()
        for i, G in enumerate(grads):
            ref[i] = trasmuon_step(ref[i], G, states[i], **hp)
    damped = 0
    for p, r, st in zip(params, ref, states):
        assert ((p.detach() - r).norm() / r.norm()).item() < 1e-10
        mine = opt.state[p]
        torch.testing.assert_close(mine["trasmuon.c_last"], st["c_last"], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(mine["trasmuon.e_ref"], torch.as_tensor(st["E_ref"], dtype=torch.float64),
                                   rtol=1e-10, atol=0)
        damped += int((st["c_last"] < 1).sum())
    if hp["col_gate_enabled"]:
        assert damped > 0, "the test data should make the gate fire"


@pytest.mark.parametrize("s", [0.2, 0.5])
def test_gate_off_is_row_normalised_update_with_rms_s(s):
    """Gate off: update = s sqrt(mn) B / ||B||_F with B = O / (sqrt(v) + eps), so its RMS is s every step."""
    G_seq = [_hot_column(seed=i) for i in range(6)]
    ups, _, _ = _updates(G_seq, col_gate_enabled=False, scale_factor=s)
    for U in ups:
        assert U.square().mean().sqrt().item() == pytest.approx(s, rel=1e-9)
    # First step, exact: v = (1-b2) mean_row(O^2), so every row of B has the same norm.
    rows = ups[0].norm(dim=1)
    torch.testing.assert_close(rows, rows.mean().expand_as(rows), rtol=1e-6, atol=0)


def test_gate_is_binary_at_defaults():
    """Defaults (trigger k_E = 3, c_min = 0.7): c^ is 0.7 or 1, so after the first refresh c_ema is 0.97 or 1."""
    g = torch.Generator().manual_seed(4)
    G = torch.randn(8, 16, dtype=torch.float64, generator=g) * _column_scales((8, 16), g)
    _, opt, p = _updates([G])
    c_ema = opt.state[p]["trasmuon.c_ema"]
    hot = torch.isclose(c_ema, torch.tensor(0.97, dtype=torch.float64), rtol=0, atol=1e-12)
    cold = c_ema == 1
    assert bool((hot | cold).all()) and hot.any() and cold.any()


def test_hot_column_is_damped_and_only_it():
    """A column with energy above k_E x median gets c = 0.7 * 0.97 + 0.3 * c_avg on step 1; the others ~1."""
    G = _hot_column(j=3)
    (U,), opt, p = _updates([G])
    c_last = opt.state[p]["trasmuon.c_last"]
    c_avg = 1e-6 / (1e-6 + 1e-12)  # C / (S + 1e-12) with S = lr^2 = 1e-6 (authors' guard; not exactly 1)
    expected = torch.full((10,), 0.7 + 0.3 * c_avg, dtype=torch.float64)
    expected[3] = 0.7 * 0.97 + 0.3 * c_avg
    torch.testing.assert_close(c_last, expected, rtol=1e-12, atol=1e-12)
    (U_off,), _, _ = _updates([G], col_gate_enabled=False)
    torch.testing.assert_close(U, U_off * expected, rtol=1e-12, atol=1e-14)  # eta_hat uses the pre-gate norm


def test_narrow_matrices_have_no_gate():
    """n < col_gate_min_in (8): no damping even for a very hot column, and no c_ema state."""
    G = _hot_column(n=7, factor=100.0)
    (U,), opt, p = _updates([G])
    (U_off,), _, _ = _updates([G], col_gate_enabled=False)
    torch.testing.assert_close(U, U_off, rtol=1e-12, atol=0)
    assert "trasmuon.c_ema" not in opt.state[p]
    assert bool((opt.state[p]["trasmuon.c_last"] == 1).all())


def test_gate_refreshes_on_step_one_and_every_p_steps():
    """c_ema moves only on t = 1 and t = 0 mod P (P = 4) while the column stays hot."""
    G = _hot_column(j=0)
    p = torch.zeros_like(G).requires_grad_()
    opt = muonlab.TrasMuon([{"params": [p]}], orthogonalizer="svd")
    prev, moved = torch.ones(10, dtype=torch.float64), []
    for t in range(1, 14):
        p.grad = G.clone()
        opt.step()
        c = opt.state[p]["trasmuon.c_ema"].clone()
        if not torch.equal(c, prev):
            moved.append(t)
        prev = c
    assert moved == [1, 4, 8, 12]


def test_warmup_freezes_gate():
    """During warmup c = 1 and c_ema stays 1; E_ref is still tracked; the gate acts right after."""
    G = _hot_column(j=2)
    p = torch.zeros_like(G).requires_grad_()
    opt = muonlab.TrasMuon([{"params": [p]}], orthogonalizer="svd", warmup_steps=3)
    for _ in range(3):
        p.grad = G.clone()
        opt.step()
        st = opt.state[p]
        assert bool((st["trasmuon.c_last"] == 1).all()) and bool((st["trasmuon.c_ema"] == 1).all())
        assert st["trasmuon.e_ref"] > 0
    p.grad = G.clone()
    opt.step()  # t = 4 = 0 mod P: first refresh after warmup
    assert opt.state[p]["trasmuon.c_last"][2] < 1


def test_state_layout():
    """Named state: v (m,), e_ref (), c_ema/c_last/sf_c (n,), sf_s (); conv as (out, rest)."""
    p = torch.randn(4, 3, 3, 2, requires_grad=True)
    opt = muonlab.TrasMuon([{"params": [p]}])
    p.grad = torch.randn_like(p)
    opt.step()
    shapes = {k: tuple(v.shape) for k, v in opt.state[p].items()}
    assert shapes == {"step": (), "momentum": (4, 18), "trasmuon.v": (4,), "trasmuon.e_ref": (),
                      "trasmuon.c_last": (18,), "trasmuon.sf_s": (), "trasmuon.sf_c": (18,), "trasmuon.c_ema": (18,)}


BAD = [("col_gate_use", "x"), ("col_gate_cmin", 0.0), ("col_gate_cmin", 1.5), ("energy_quantile", 0.0),
       ("col_gate_every", 0), ("col_gate_min_in", 2.5), ("warmup_steps", -1), ("ns_steps", 6), ("gate_ema", 1.0),
       ("e_ref_ema_beta", -0.1), ("sf_mix", 2.0), ("sf_enabled", "yes"), ("scale_factor", 0.0), ("energy_k", -1.0)]


@pytest.mark.parametrize("key,value", BAD)
def test_invalid_arguments(key, value):
    """Invalid hyperparameters raise ValueError naming the argument and value."""
    with pytest.raises(ValueError, match=key):
        muonlab.TrasMuon([{"params": [torch.randn(3, 3, requires_grad=True)]}], **{key: value})
