"""muonlab.diagnostics: HVP, NDS, Taylor split, layer decomposition, power iteration, dry-run update.

References are written independently of the library: explicit Hessians come from
``torch.autograd.functional.hessian`` of a hand-written functional forward on a flat parameter
vector, and quadratic losses have closed forms.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from muonlab import diagnostics as dg

DT = torch.float64


# ---------------------------------------------------------------------------------------------
# Tiny models with a hand-written functional twin (the reference never goes through the library)
# ---------------------------------------------------------------------------------------------
def mlp_forward(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    h = torch.tanh(x @ p["0.weight"].T + p["0.bias"])
    return h @ p["2.weight"].T + p["2.bias"]


def make_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).to(DT)


def mlp_loss(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return (model(x) - y).pow(2).mean()


def mse_loss(model: nn.Module, batch) -> torch.Tensor:
    # F.mse_loss has no usable forward-over-reverse formula in torch 2.13 ("ZeroTensors are
    # immutable"): "auto" must fall back to double backward.
    return F.mse_loss(model(batch[0]), batch[1])


class TinyTransformer(nn.Module):
    """One pre-norm block; ``attn_impl="sdpa"`` uses SDPA, ``"math"`` an explicit softmax."""

    def __init__(self, vocab: int = 5, d: int = 4, heads: int = 2) -> None:
        super().__init__()
        self.heads, self.attn_impl = heads, "sdpa"
        self.emb = nn.Embedding(vocab, d)
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 2 * d)
        self.out = nn.Linear(2 * d, d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.drop = nn.Dropout(0.5)  # must be switched off by the diagnostics

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return transformer_forward(dict(self.named_parameters()), idx, self.heads, self.attn_impl, self.drop)


def transformer_forward(p, idx, heads, impl="math", drop=None):
    x = p["emb.weight"][idx]  # (b, t, d)
    b, t, d = x.shape
    h = F.layer_norm(x, (d,), p["ln1.weight"], p["ln1.bias"])
    q, k, v = (h @ p["qkv.weight"].T + p["qkv.bias"]).split(d, dim=-1)
    q, k, v = (z.view(b, t, heads, d // heads).transpose(1, 2) for z in (q, k, v))
    if impl == "sdpa":
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d // heads)
        att = att.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
        a = att @ v
    x = x + a.transpose(1, 2).reshape(b, t, d) @ p["proj.weight"].T + p["proj.bias"]
    if drop is not None:
        x = drop(x)
    h = F.layer_norm(x, (d,), p["ln2.weight"], p["ln2.bias"])
    x = x + F.gelu(h @ p["fc.weight"].T + p["fc.bias"]) @ p["out.weight"].T + p["out.bias"]
    return x @ p["lm_head.weight"].T


def make_transformer() -> nn.Module:
    torch.manual_seed(1)
    return TinyTransformer().to(DT)


def lm_loss(model: nn.Module, batch) -> torch.Tensor:
    idx, tgt = batch
    logits = model(idx)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt.reshape(-1))


def explicit_hessian(model: nn.Module, flat_loss) -> torch.Tensor:
    """Dense Hessian of ``flat_loss(dict of params)`` over the flat trainable parameter vector."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    theta = torch.cat([p.detach().reshape(-1) for _, p in named])

    def f(flat):
        out, i = {}, 0
        for n, p in named:
            out[n] = flat[i : i + p.numel()].view_as(p)
            i += p.numel()
        return flat_loss(out)

    # Plain (unvectorized) autograd: torch.func.hessian (vmap'd jacfwd∘jacrev) disagreed with finite
    # differences on the tiny transformer's LayerNorm rows in torch 2.13, so it is not a reference.
    return torch.autograd.functional.hessian(f, theta)


def flat(vs) -> torch.Tensor:
    return torch.cat([v.reshape(-1) for v in vs])


def random_like_params(model: nn.Module, seed: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in model.parameters()]


@pytest.fixture
def mlp_case():
    torch.manual_seed(2)
    model = make_mlp()
    batch = (torch.randn(7, 3, dtype=DT), torch.randn(7, 2, dtype=DT))
    H = explicit_hessian(model, lambda p: F.mse_loss(mlp_forward(p, batch[0]), batch[1]))
    return model, batch, H


@pytest.fixture(scope="module")
def gpt_case():
    model = make_transformer()
    g = torch.Generator().manual_seed(4)
    batch = (torch.randint(0, 5, (2, 6), generator=g), torch.randint(0, 5, (2, 6), generator=g))

    def ref(p):
        logits = transformer_forward(p, batch[0], 2, "math")
        return F.cross_entropy(logits.reshape(-1, 5), batch[1].reshape(-1))

    return model, batch, explicit_hessian(model, ref)


# ---------------------------------------------------------------------------------------------
# HVP
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["auto", "fwd_rev", "double_bwd"])
def test_hvp_equals_explicit_hessian_mlp(mlp_case, method):
    """H v from the library equals the explicit fp64 Hessian times v (MLP), for every method."""
    model, batch, H = mlp_case
    v = random_like_params(model)
    hv = dg.hvp(model, mlp_loss, batch, v, method=method)
    assert torch.allclose(flat(hv), H @ flat(v), atol=1e-10, rtol=1e-8)


def test_hvp_auto_falls_back_to_double_backward(mlp_case):
    """An op without a forward-over-reverse formula falls back to double backward, same answer."""
    model, batch, H = mlp_case
    v = random_like_params(model)
    with pytest.warns(UserWarning, match="double backward"):
        hv = dg.hvp(model, mse_loss, batch, v)
    assert torch.allclose(flat(hv), H @ flat(v), atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("method", ["fwd_rev", "double_bwd"])
def test_hvp_equals_explicit_hessian_transformer(gpt_case, method):
    """Tiny transformer (SDPA switched to math attention, dropout off): HVP matches to 1e-8."""
    model, batch, H = gpt_case
    model.train()
    v = random_like_params(model)
    hv = dg.hvp(model, lm_loss, batch, v, method=method)
    assert (flat(hv) - H @ flat(v)).abs().max() < 1e-8
    assert model.training and model.attn_impl == "sdpa"  # modes restored


def test_hvp_dict_input_subset_and_structure(mlp_case):
    """A dict with a subset of names is zero elsewhere and returns a dict over all names."""
    model, batch, H = mlp_case
    w = torch.randn(5, 3, dtype=DT)
    out = dg.hvp(model, mlp_loss, batch, {"0.weight": w})
    assert list(out) == [n for n, _ in model.named_parameters()]
    full = torch.cat([w.reshape(-1), torch.zeros(H.shape[0] - 15, dtype=DT)])
    assert torch.allclose(flat(out.values()), H @ full, atol=1e-10)


def test_hvp_leaves_params_and_grads_untouched(mlp_case):
    """Parameters and their .grad are bitwise unchanged by the diagnostics."""
    model, batch, _ = mlp_case
    mlp_loss(model, batch).backward()
    params = [p.detach().clone() for p in model.parameters()]
    grads = [p.grad.clone() for p in model.parameters()]
    v = random_like_params(model)
    dg.hvp(model, mlp_loss, batch, v)
    dg.taylor_decomposition(model, mlp_loss, batch, v)
    dg.layer_decomposition(model, mlp_loss, batch, v)
    for p, a, g in zip(model.parameters(), params, grads):
        assert torch.equal(p, a) and torch.equal(p.grad, g)


def test_hvp_rejects_bad_vectors(mlp_case):
    """Wrong lengths, shapes or names raise ValueError naming the argument."""
    model, batch, _ = mlp_case
    with pytest.raises(ValueError, match="v"):
        dg.hvp(model, mlp_loss, batch, [torch.zeros(1)])
    with pytest.raises(ValueError, match="nope"):
        dg.hvp(model, mlp_loss, batch, {"nope": torch.zeros(1)})
    with pytest.raises(ValueError, match="method"):
        dg.hvp(model, mlp_loss, batch, random_like_params(model), method="bogus")


# ---------------------------------------------------------------------------------------------
# Quadratic with known spectrum
# ---------------------------------------------------------------------------------------------
class Quadratic(nn.Module):
    """L(x, y) = ½ [x; y]ᵀ A [x; y] − bᵀ[x; y], split into two parameters (two "layers")."""

    def __init__(self, A: torch.Tensor, b: torch.Tensor, split: int) -> None:
        super().__init__()
        self.A, self.b, self.split = A, b, split
        g = torch.Generator().manual_seed(5)
        z = torch.randn(A.shape[0], generator=g, dtype=DT)
        self.x = nn.Parameter(z[:split].clone())
        self.y = nn.Parameter(z[split:].clone())


def quad_loss(model: Quadratic, batch=None) -> torch.Tensor:
    z = torch.cat([model.x, model.y])
    return 0.5 * z @ model.A @ z - model.b @ z


def make_quadratic(eigs=(7.0, 3.0, 1.0, -0.5, 0.25), split: int = 2) -> tuple[Quadratic, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(6)
    Q, _ = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=g, dtype=DT))
    lam = torch.tensor(eigs, dtype=DT)
    A = Q @ torch.diag(lam) @ Q.T
    return Quadratic(A, torch.randn(len(eigs), generator=g, dtype=DT), split), Q, lam


def split_vec(z: torch.Tensor, split: int) -> list[torch.Tensor]:
    return [z[:split].clone(), z[split:].clone()]


def test_nds_along_eigenvector_equals_eigenvalue():
    """NDS along each eigenvector of a known quadratic equals its eigenvalue (negative ones too)."""
    model, Q, lam = make_quadratic()
    for i in range(len(lam)):
        u = split_vec(3.0 * Q[:, i], model.split)
        out = dg.directional_sharpness(model, quad_loss, None, u)
        assert out["nds"] == pytest.approx(float(lam[i]), abs=1e-12)
        assert out["u_norm_sq"] == pytest.approx(9.0, abs=1e-12)
        assert dg.directional_curvature(model, quad_loss, None, u) == pytest.approx(9.0 * float(lam[i]), abs=1e-10)


def test_power_iteration_finds_top_eigenvalue():
    """Power iteration returns the largest-magnitude eigenvalue and its eigenvector."""
    model, Q, lam = make_quadratic(eigs=(-1.0, 10.0, 4.0, 2.0, 0.5))
    res, v = dg.top_eigenvalue(model, quad_loss, None, iters=500, tol=1e-12, return_vector=True)
    assert res["converged"] == 1.0
    assert res["eigenvalue"] == pytest.approx(10.0, rel=1e-9)
    assert abs(float(flat(v.values()) @ Q[:, 1])) == pytest.approx(1.0, abs=1e-6)


def test_hutchinson_trace_exact_for_diagonal_hessian():
    """Rademacher probes give tr(H) exactly when H is diagonal."""
    model = Quadratic(torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=DT)), torch.zeros(4, dtype=DT), 1)
    out = dg.hessian_trace(model, quad_loss, None, samples=3)
    assert out["trace"] == pytest.approx(10.0, abs=1e-12)
    assert out["mean_curvature"] == pytest.approx(2.5, abs=1e-12)


def test_taylor_exact_on_quadratic():
    """On an exactly quadratic loss, predicted == realized and every term has its closed form."""
    model, _, _ = make_quadratic()
    z = torch.cat([model.x, model.y]).detach()
    g = model.A @ z - model.b
    u = torch.randn(5, generator=torch.Generator().manual_seed(9), dtype=DT)
    out = dg.taylor_decomposition(model, quad_loss, None, split_vec(u, model.split))
    assert out["first_order"] == pytest.approx(float(g @ u), abs=1e-12)
    assert out["curvature_penalty"] == pytest.approx(0.5 * float(u @ model.A @ u), abs=1e-12)
    assert out["predicted"] == pytest.approx(-float(g @ u) + 0.5 * float(u @ model.A @ u), abs=1e-12)
    assert out["realized"] == pytest.approx(out["predicted"], abs=1e-12)
    assert out["realized_decrease"] == pytest.approx(-out["realized"], abs=0)


def test_taylor_residual_is_third_order(mlp_case):
    """On a non-quadratic loss the Taylor residual shrinks like ‖u‖³."""
    model, batch, _ = mlp_case
    u = random_like_params(model)
    res = [abs(dg.taylor_decomposition(model, mlp_loss, batch, [e * t for t in u])["taylor_residual"])
           for e in (1e-2, 5e-3)]
    assert res[0] / res[1] == pytest.approx(8.0, rel=0.05)


# ---------------------------------------------------------------------------------------------
# Layer decomposition
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["hvp", "fwd_fwd"])
def test_layer_decomposition_matches_hessian_blocks(mlp_case, method):
    """within + cross = NDS, and each within term equals u_gᵀ H_gg u_g from the explicit Hessian."""
    model, batch, H = mlp_case
    u = random_like_params(model)
    groups = {"first": ["0.weight", "0.bias"], "second": ["2.weight", "2.bias"]}
    out = dg.layer_decomposition(model, mlp_loss, batch, u, groups, method=method)
    fu = flat(u)
    nsq = float(fu @ fu)
    assert out["within"] + out["cross"] == pytest.approx(out["nds"], abs=1e-12)
    assert out["nds"] == pytest.approx(float(fu @ H @ fu) / nsq, rel=1e-10)
    sl = {"first": slice(0, 20), "second": slice(20, 32)}
    within = 0.0
    for g, s in sl.items():
        w = float(fu[s] @ H[s, s] @ fu[s])
        within += w
        assert out[f"within/{g}"] == pytest.approx(w / nsq, rel=1e-10)
        assert out[f"nds/{g}"] == pytest.approx(w / float(fu[s] @ fu[s]), rel=1e-10)
        assert out[f"row/{g}"] == pytest.approx(float(fu[s] @ (H @ fu)[s]) / nsq, rel=1e-10)
    assert out["cross"] == pytest.approx((float(fu @ H @ fu) - within) / nsq, rel=1e-9)
    assert sum(out[f"row/{g}"] for g in sl) == pytest.approx(out["nds"], rel=1e-12)


def test_layer_decomposition_default_and_partial_groups(gpt_case):
    """None = one group per tensor; names left out land in '_rest'; the split still sums exactly."""
    model, batch, _ = gpt_case
    u = random_like_params(model)
    per_tensor = dg.layer_decomposition(model, lm_loss, batch, u)
    assert sum(1 for k in per_tensor if k.startswith("within/")) == len(list(model.parameters()))
    partial = dg.layer_decomposition(model, lm_loss, batch, u, [["qkv.weight", "qkv.bias"]])
    assert "within/_rest" in partial
    for out in (per_tensor, partial):
        assert out["within"] + out["cross"] == pytest.approx(out["nds"], abs=1e-12)
    with pytest.raises(ValueError, match="more than one group"):
        dg.layer_decomposition(model, lm_loss, batch, u, [["qkv.weight"], ["qkv.weight"]])


def test_groups_by_block():
    """Names are grouped up to their first integer component."""
    model = nn.ModuleDict({"emb": nn.Embedding(3, 2), "h": nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)]),
                           "lm_head": nn.Linear(2, 3, bias=False)})
    assert dg.groups_by_block(model) == {"emb": ["emb.weight"], "h.0": ["h.0.weight", "h.0.bias"],
                                         "h.1": ["h.1.weight", "h.1.bias"], "lm_head": ["lm_head.weight"]}


# ---------------------------------------------------------------------------------------------
# Dry-run update
# ---------------------------------------------------------------------------------------------
def _optimizers(model):
    import muonlab

    yield torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    yield torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    reg = muonlab.optimizers()
    for name in ("adamw", "muon"):
        if name in reg:
            yield reg[name](muonlab.param_groups(model), lr=1e-2)


def _state_snapshot(opt):
    return [(k, v.clone() if torch.is_tensor(v) else v) for s in opt.state.values() for k, v in sorted(s.items())]


@pytest.mark.parametrize("warm_steps", [0, 3])
def test_optimizer_update_is_a_pure_dry_run(warm_steps):
    """State, params and grads are bitwise unchanged; the next real step applies exactly u."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    x, y = torch.randn(16, 6), torch.randn(16, 2)
    for opt in _optimizers(model):
        for _ in range(warm_steps):
            opt.zero_grad()
            F.mse_loss(model(x), y).backward()
            opt.step()
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        params = [p.detach().clone() for p in model.parameters()]
        grads = [p.grad.clone() for p in model.parameters()]
        state, ids = _state_snapshot(opt), [id(v) for s in opt.state.values() for v in s.values()]
        u = dg.optimizer_update(opt, model)
        assert all(torch.equal(p, a) for p, a in zip(model.parameters(), params)), type(opt)
        assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads)), type(opt)
        after = _state_snapshot(opt)
        assert len(after) == len(state) and [k for k, _ in after] == [k for k, _ in state]
        for (_, a), (_, b) in zip(after, state):
            assert torch.equal(a, b) if torch.is_tensor(a) else a == b
        assert [id(v) for s in opt.state.values() for v in s.values()] == ids
        opt.step()
        for p, a, du in zip(model.parameters(), params, u):
            assert torch.equal(a - p.detach(), du), type(opt)
        assert any(du.abs().sum() > 0 for du in u)


def test_optimizer_update_as_dict_and_validation():
    """as_dict keys by name; a non-optimizer raises ValueError."""
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model(torch.ones(1, 3)).sum().backward()
    u = dg.optimizer_update(opt, model, as_dict=True)
    assert set(u) == {"weight", "bias"} and torch.allclose(u["bias"], 0.5 * torch.ones(2))
    with pytest.raises(ValueError, match="optimizer"):
        dg.optimizer_update(object(), model)


def test_muonlab_gpt_symmetry_and_finite_differences():
    """muonlab's GPT (SDPA by default, tied embeddings): H is symmetric and H v matches central
    differences of the gradient; the tied tensor is counted once."""
    from muonlab.bench.models import GPT

    torch.manual_seed(0)
    model = GPT(11, 6, 1, 2, 8, tie_weights=True, attn_impl="sdpa").to(DT)
    g = torch.Generator().manual_seed(1)
    batch = (torch.randint(0, 11, (2, 6), generator=g), torch.randint(0, 11, (2, 6), generator=g))
    params = [p for p in model.parameters() if p.requires_grad]
    assert len(params) == len(dict(model.named_parameters()))  # tied weight appears once
    v, w = random_like_params(model, 5), random_like_params(model, 6)
    hv, hw = dg.hvp(model, lm_loss, batch, v), dg.hvp(model, lm_loss, batch, w)
    assert float(flat(w) @ flat(hv)) == pytest.approx(float(flat(v) @ flat(hw)), rel=1e-10)

    def grad_at(shift: float) -> torch.Tensor:
        with torch.no_grad():
            for p, d in zip(params, v):
                p.add_(shift * d)
        grads = torch.autograd.grad(lm_loss(model, batch), params)
        with torch.no_grad():
            for p, d in zip(params, v):
                p.sub_(shift * d)
        return flat(grads)

    model.eval()
    eps = 1e-5
    fd = (grad_at(eps) - grad_at(-eps)) / (2 * eps)
    assert torch.allclose(flat(hv), fd, atol=1e-7, rtol=1e-6)
    assert model.attn_impl == "sdpa"
    check = dg.self_check(model, lm_loss, batch)
    assert check["symmetry_rel_err"] < 1e-10 and check["fd_rel_err"] < 1e-4
