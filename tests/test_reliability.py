"""Never silently wrong: non-finite gradients, extreme magnitudes, copies, versioned state dicts.

Every test runs over every registered optimizer (its first sample hyperparameters).
"""

from __future__ import annotations

import copy
import io
import math
import pickle

import pytest
import torch

import muonlab
from tests.helpers import step, with_svd

INFOS = [pytest.param(info.cls, info.sample_kwargs[0], id=info.name) for info in muonlab.optimizer_infos()]


def _problem(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.nn.Parameter(torch.randn(8, 6, generator=g, dtype=dtype))
    C = torch.nn.Parameter(torch.randn(4, 2, 3, 3, generator=g, dtype=dtype))
    b = torch.nn.Parameter(torch.randn(5, generator=g, dtype=dtype))
    return [W, C, b], [{"params": [W, C]}, {"params": [b], "algorithm": "adamw"}]


def _grads(params, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(p.shape, generator=g, dtype=torch.float64).mul_(scale).to(p.dtype) for p in params]


def _step(opt, params, grads):
    for p, G in zip(params, grads):
        p.grad = G.clone()
    step(opt)


def _state(opt):
    return copy.deepcopy(opt.state_dict()["state"])


def _same_state(a, b) -> bool:
    return a.keys() == b.keys() and all(
        a[i].keys() == b[i].keys() and all(torch.equal(a[i][k], b[i][k]) for k in a[i]) for i in a
    )


# ----------------------------------------------------------------------------- non-finite
@pytest.mark.parametrize("cls,kwargs", INFOS)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_skip_leaves_every_value_unchanged(cls, kwargs, bad):
    """nonfinite='skip' (default): a NaN/Inf step changes no parameter and no state, and is counted."""
    params, groups = _problem()
    opt = cls(groups, **kwargs)
    for t in range(2):
        _step(opt, params, _grads(params, t))
    before, state = [p.detach().clone() for p in params], _state(opt)
    grads = _grads(params, 9)
    grads[0][1, 2] = bad
    _step(opt, params, grads)
    assert all(torch.equal(p, q) for p, q in zip(params, before))
    assert _same_state(state, _state(opt))
    assert opt.skipped_steps == 1


@pytest.mark.parametrize("cls,kwargs", INFOS)
def test_skipped_step_is_as_if_it_never_happened(cls, kwargs):
    """Healthy steps after a skipped one equal a run that never saw the bad gradients."""
    runs = []
    for with_bad in (True, False):
        params, groups = _problem()
        opt = cls(groups, **kwargs)
        for t in range(4):
            if with_bad and t == 2:
                grads = _grads(params, 99)
                grads[2][0] = math.nan  # on the AdamW part this time
                _step(opt, params, grads)
            _step(opt, params, _grads(params, t))
        runs.append([p.detach().clone() for p in params])
    assert all(torch.equal(a, b) for a, b in zip(*runs))


@pytest.mark.parametrize("cls,kwargs", INFOS)
def test_raise_changes_nothing(cls, kwargs):
    """nonfinite='raise' raises FloatingPointError before anything is written."""
    params, groups = _problem()
    opt = cls(groups, nonfinite="raise", **kwargs)
    _step(opt, params, _grads(params, 0))
    before, state = [p.detach().clone() for p in params], _state(opt)
    grads = _grads(params, 1)
    grads[1][0, 0, 0, 0] = math.inf
    with pytest.raises(FloatingPointError, match="NaN or Inf"):
        _step(opt, params, grads)
    assert all(torch.equal(p, q) for p, q in zip(params, before)) and _same_state(state, _state(opt))


def test_propagate_is_torch_behaviour():
    """nonfinite='propagate' lets the NaN through, as torch.optim does (documented, opt-in)."""
    params, groups = _problem()
    opt = muonlab.Muon(groups, nonfinite="propagate")
    grads = _grads(params, 0)
    grads[0][0, 0] = math.nan
    _step(opt, params, grads)
    assert torch.isnan(params[0]).all()


def test_nonfinite_is_validated():
    """An unknown policy raises ValueError naming the argument."""
    with pytest.raises(ValueError, match="nonfinite='ignore'"):
        muonlab.NAMO(_problem()[1], nonfinite="ignore")


# ----------------------------------------------------------------------------- extreme magnitudes
def _adam_fp64(g: torch.Tensor, lr: float, betas, eps: float) -> torch.Tensor:
    """One AdamW step from zero state, fp64, written from the paper (no weight decay)."""
    b1, b2 = betas
    m, v = (1 - b1) * g, (1 - b2) * g * g
    return -lr * (m / (1 - b1)) / ((v / (1 - b2)).sqrt() + eps)


@pytest.mark.parametrize("scale", [1e30, -1e30, 1e-30])
def test_adamw_part_moves_by_lr_at_any_scale(scale):
    """A +-1e30 or 1e-30 gradient on an AdamW parameter moves it as the fp64 formula says (~lr or ~0)."""
    b = torch.nn.Parameter(torch.zeros(6))
    lr, betas, eps = 1e-3, (0.9, 0.95), 1e-8
    opt = muonlab.AdamW([b], lr=lr, betas=betas, eps=eps, weight_decay=0.0)
    g = torch.linspace(0.5, 2.0, 6, dtype=torch.float64) * scale
    b.grad = g.float()
    opt.step()
    want = _adam_fp64(g, lr, betas, eps)
    torch.testing.assert_close(b.detach().double(), want, rtol=1e-5, atol=1e-12)
    assert all(torch.isfinite(v).all() for v in opt.state[b].values())


@pytest.mark.parametrize("cls,kwargs", INFOS)
@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_extreme_gradients_move_weights_by_a_small_multiple_of_lr(cls, kwargs, scale):
    """1e30 / 1e-30 gradients on every part: finite state, no weight moves by more than 10 lr (EF: 2x its SGD bound)."""
    params, groups = _problem()
    opt = cls(groups, **kwargs)
    before = [p.detach().clone() for p in params]
    gmax = {id(p): 0.0 for p in params}
    for t in range(3):
        grads = _grads(params, t, scale)
        gmax.update({id(p): max(gmax[id(p)], G.double().norm().item()) for p, G in zip(params, grads)})
        _step(opt, params, grads)
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    ef = {id(p) for g in opt.param_groups if g.get("error_feedback", False) for p in g["params"]}
    for p, q in zip(params, before):
        assert torch.isfinite(p).all()
        moved = (p - q).abs().max().item()
        # The shape factor of the orthogonal update (sqrt(max(1, m/n)) <= 2 here) is part of the lr.
        bound = 10 * 3 * lrs[id(p)] * 2
        if id(p) in ef:
            # Error feedback steps in SGD units, by design (W - E runs SGD with momentum): its move
            # scales with the gradient. The residual bound ||E_t|| <= ||P_t|| = ||E_(t-1) + lr U_t|| gives
            # sum_t ||step_t|| <= 6 lr max ||G||_F over 3 steps; held to twice that.
            bound = 2 * 6 * lrs[id(p)] * gmax[id(p)]
        assert moved <= bound, f"{tuple(p.shape)} moved {moved:.3g} with lr {lrs[id(p)]}"
    for st in opt.state.values():
        assert all(torch.isfinite(v).all() for v in st.values() if isinstance(v, torch.Tensor))


# ----------------------------------------------------------------------------- gradient layouts
def _strided(G: torch.Tensor) -> torch.Tensor:
    """The same values as ``G`` in a non-contiguous layout (reversed strides, as a transposed autograd result)."""
    perm = list(range(G.dim()))[::-1]
    return G.permute(*perm).contiguous().permute(*perm)


@pytest.mark.parametrize("cls,kwargs", INFOS)
def test_non_contiguous_gradients_step_like_contiguous_ones(cls, kwargs):
    """Gradients with other strides than their parameters (transposed / permuted autograd results) give the same
    step, on every part. torch's fused AdamW kernel reads them against the wrong entries (torch 2.13, CPU)."""
    runs = []
    for layout in (lambda G: G, _strided):
        params, groups = _problem()
        opt = cls(groups, **kwargs)
        for t in range(2):
            grads = [layout(G) for G in _grads(params, t)]
            assert layout is not _strided or not any(G.is_contiguous() for G in grads[:2])
            for p, G in zip(params, grads):
                p.grad = G
            step(opt)
        runs.append([p.detach().clone() for p in params])
    for a, b in zip(*runs):
        # fp32 reductions over other memory orders round differently (~1 ulp of a norm); the layout bug was ~1e-2
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- copies
@pytest.mark.parametrize("cls,kwargs", INFOS)
@pytest.mark.parametrize("how", ["deepcopy", "pickle", "torch.save"])
def test_copies_step_exactly_like_the_original(cls, kwargs, how):
    """deepcopy / pickle / torch.save of (params, optimizer) steps bitwise like the original, and add_param_group works."""
    params, groups = _problem()
    opt = cls(groups, **kwargs)
    for t in range(2):
        _step(opt, params, _grads(params, t))
    bundle = (params, opt)
    if how == "deepcopy":
        params2, opt2 = copy.deepcopy(bundle)
    elif how == "pickle":
        params2, opt2 = pickle.loads(pickle.dumps(bundle))
    else:
        buf = io.BytesIO()
        torch.save(bundle, buf)
        buf.seek(0)
        params2, opt2 = torch.load(buf, weights_only=False)
    for t in range(2, 4):
        _step(opt, params, _grads(params, t))
        _step(opt2, params2, _grads(params2, t))
    assert all(torch.equal(a, b) for a, b in zip(params, params2))
    extra = torch.nn.Parameter(torch.randn(3))
    opt2.add_param_group({"params": [extra], "algorithm": "adamw"})
    extra.grad = torch.ones(3)
    step(opt2)


# ----------------------------------------------------------------------------- versioned state dicts
def test_state_dict_is_versioned_and_checked():
    """A state dict from another class or group layout raises ValueError and changes nothing."""
    params, groups = _problem()
    namo = muonlab.NAMO(groups)
    _step(namo, params, _grads(params, 0))
    sd = namo.state_dict()
    assert sd["muonlab"]["version"] >= 1 and sd["muonlab"]["optimizer"] == "NAMO"

    muon = muonlab.Muon(groups)
    _step(muon, params, _grads(params, 1))
    before, state = [p.detach().clone() for p in params], _state(muon)
    with pytest.raises(ValueError, match="saved by NAMO, not Muon"):
        muon.load_state_dict(sd)
    other = muonlab.NAMO([{"params": params[:1]}, {"params": params[1:], "algorithm": "adamw"}])
    with pytest.raises(ValueError, match="group layout"):
        other.load_state_dict(sd)
    newer = dict(sd, muonlab=dict(sd["muonlab"], version=999))
    with pytest.raises(ValueError, match="newer"):
        muonlab.NAMO(groups).load_state_dict(newer)
    assert _same_state(state, _state(muon)) and all(torch.equal(p, q) for p, q in zip(params, before))
    fresh = muonlab.NAMO(groups)
    fresh.load_state_dict(sd)  # the matching class and layout load fine
    assert _same_state(_state(fresh), _state(namo))


# ----------------------------------------------------------------------------- layouts
@pytest.mark.parametrize("cls,kwargs", [p for p in INFOS if p.values[0].default_algorithm != "adamw"])
def test_in_out_layout_gets_the_update_of_its_linear_twin(cls, kwargs):
    """A weight stored (in, out) with layout='in_out' (transformers' Conv1D) steps exactly as W^T of nn.Linear, fp64."""
    g = torch.Generator().manual_seed(0)
    lin = [torch.nn.Parameter(torch.randn(12, 5, generator=g, dtype=torch.float64)) for _ in range(2)]
    conv1d = [torch.nn.Parameter(w.detach().t().clone()) for w in lin]  # (in, out) storage
    kw = with_svd(cls, kwargs)
    opt_lin = cls([{"params": lin}], **kw)
    opt_c1d = cls([{"params": conv1d, "layout": "in_out"}], **kw)
    for t in range(5):
        grads = [torch.randn(12, 5, generator=g, dtype=torch.float64) for _ in lin]
        _step(opt_lin, lin, grads)
        _step(opt_c1d, conv1d, [G.t().contiguous() for G in grads])
    for a, b in zip(lin, conv1d):
        torch.testing.assert_close(b.detach().t(), a.detach(), rtol=0, atol=1e-12)
    assert "(W^T)" in opt_c1d.describe() and "5x12" in opt_c1d.describe()


def test_in_out_layout_is_validated():
    """layout must be 'out_in' or 'in_out', and 'in_out' only for 2-D weights."""
    with pytest.raises(ValueError, match="layout='sideways'"):
        muonlab.Muon([{"params": [torch.nn.Parameter(torch.randn(4, 3))], "layout": "sideways"}])
    with pytest.raises(ValueError, match="needs 2-D"):
        muonlab.Muon([{"params": [torch.nn.Parameter(torch.randn(4, 3, 2))], "layout": "in_out"}])


def test_skip_never_feeds_nan_to_the_orthogonalizer():
    """With nonfinite='skip' an exact-SVD orthogonalizer (which raises on NaN) sees only finite input."""
    params, groups = _problem()
    opt = muonlab.Muon(groups, orthogonalizer="svd")
    grads = _grads(params, 0)
    grads[0][0, 0] = math.nan
    _step(opt, params, grads)
    assert opt.skipped_steps == 1
