"""Hessian-vector products and the scalar curvature probes built on them.

``H v`` is computed forward-over-reverse (``torch.func.jvp`` of ``torch.func.grad``): one pass
returns the loss, the gradient ``g`` and ``H v`` together, at roughly 2-3 backward passes' cost.
When forward-mode AD is missing for some op, the same quantities come from double backward
(``torch.autograd.grad`` with ``create_graph=True``). Either way the loss is evaluated
functionally, so the model's parameters and ``.grad`` are untouched, and inside
:func:`~muonlab.diagnostics._params.diagnostic_mode` (eval, math attention, no autocast).

References:
    Pearlmutter, "Fast Exact Multiplication by the Hessian", Neural Computation 6(1), 1994.
    Wang et al., "Why Muon Outperforms Adam: A Curvature Perspective", arXiv 2606.04662 (2026).
    Hutchinson, "A stochastic estimator of the trace of the influence matrix", 1989.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
from torch import nn

from muonlab.diagnostics._params import (
    LossFn,
    TensorDict,
    Vector,
    as_dict,
    compute_dtype,
    diagnostic_mode,
    dot,
    functional_loss,
    like,
    primals,
    trainable,
)

METHODS = ("auto", "fwd_rev", "double_bwd")


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def _fwd_rev(f: Callable, theta: TensorDict, v: TensorDict) -> tuple[torch.Tensor, TensorDict, TensorDict]:
    # jvp of (grad, value): primal outputs are (g, L), tangent outputs are (H v, g·v).
    (g, loss), (hv, _) = torch.func.jvp(torch.func.grad_and_value(f), (theta,), (v,))
    return loss.detach(), {n: t.detach() for n, t in g.items()}, {n: t.detach() for n, t in hv.items()}


def _double_bwd(f: Callable, theta: TensorDict, v: TensorDict) -> tuple[torch.Tensor, TensorDict, TensorDict]:
    leaves = {n: t.detach().clone().requires_grad_(True) for n, t in theta.items()}
    with torch.enable_grad():
        loss = f(leaves)
        grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=True, allow_unused=True)
        g = {n: (gi if gi is not None else torch.zeros_like(leaves[n])) for n, gi in zip(leaves, grads)}
        # Gradients that do not depend on the parameters (a loss linear in them) have no graph:
        # their second derivative is zero, so they are left out of the scalar g·v.
        terms = [(g[n] * v[n]).sum() for n in leaves if g[n].requires_grad]
        if terms:
            hv_raw = torch.autograd.grad(torch.stack(terms).sum(), list(leaves.values()), allow_unused=True)
        else:
            hv_raw = [None] * len(leaves)
    hv = {n: (h.detach() if h is not None else torch.zeros_like(leaves[n])) for n, h in zip(leaves, hv_raw)}
    return loss.detach(), {n: t.detach() for n, t in g.items()}, hv


def probe(
    model: nn.Module, loss_fn: LossFn, batch: Any, v: TensorDict, *, method: str = "auto",
    dtype: torch.dtype | None = None, theta: TensorDict | None = None,
) -> tuple[torch.Tensor, TensorDict, TensorDict]:
    """Loss, gradient and ``H v`` at the model's parameters (or at ``theta``) in one pass.

    Args:
        model: any ``nn.Module``; only read.
        loss_fn: ``loss_fn(model, batch) -> scalar tensor``.
        batch: passed to ``loss_fn``; its floating-point tensors are cast to the compute dtype
            (integer ones, such as token ids, are kept).
        v: tangent as produced by :func:`as_dict` (already in the compute dtype).
        method: ``"auto"`` (forward-over-reverse, double backward if that raises),
            ``"fwd_rev"`` or ``"double_bwd"``.
        dtype: compute dtype (see :func:`compute_dtype`).
        theta: evaluate at these parameters instead of the model's.

    Returns:
        ``(loss, g, Hv)`` with ``g`` and ``Hv`` as ``{name: tensor}``.
    """
    _check_method(method)
    dt = compute_dtype(model, dtype)
    theta = primals(model, dt) if theta is None else theta
    f = functional_loss(model, loss_fn, batch, dt)
    with diagnostic_mode(model):
        if method == "double_bwd":
            return _double_bwd(f, theta, v)
        try:
            return _fwd_rev(f, theta, v)
        except (RuntimeError, NotImplementedError) as err:
            if method == "fwd_rev":
                raise
            # Python's default warning filter shows this once per call site, not once per probe.
            warnings.warn(f"forward-over-reverse HVP failed ({err!s:.120}); using double backward", stacklevel=2)
            return _double_bwd(f, theta, v)


def hvp(
    model: nn.Module, loss_fn: LossFn, batch: Any, v: Vector, *, method: str = "auto",
    dtype: torch.dtype | None = None,
) -> list[torch.Tensor] | TensorDict:
    """Hessian of the loss on ``batch`` times ``v``, in the structure of ``v``.

    Args:
        model: the model; its parameters and ``.grad`` are left untouched.
        loss_fn: ``loss_fn(model, batch) -> scalar tensor``.
        batch: a fixed batch (the same one for every call you want to compare).
        v: list aligned with the trainable parameters, or dict keyed by name (a subset is allowed;
            the result is then a dict over *all* trainable names).
        method: ``"auto"``, ``"fwd_rev"`` or ``"double_bwd"``.
        dtype: compute dtype; default fp32 or wider.

    Returns:
        ``H v`` as a list (list input) or a dict (dict input), in the compute dtype.
    """
    dt = compute_dtype(model, dtype)
    _, _, hv = probe(model, loss_fn, batch, as_dict(model, v, dt), method=method, dtype=dt)
    return like(v, hv)


def directional_curvature(
    model: nn.Module, loss_fn: LossFn, batch: Any, u: Vector, *, method: str = "fwd_fwd",
    dtype: torch.dtype | None = None,
) -> float:
    """``uᵀHu`` alone.

    ``"fwd_fwd"`` takes the second derivative of ``t -> L(θ + t u)`` with nested ``jvp``
    (no backward graph, about 3 forward passes, lowest memory); ``"hvp"`` computes ``⟨u, H u⟩``.
    ``fwd_fwd`` falls back to ``hvp`` when forward AD is missing for an op.
    """
    if method not in ("fwd_fwd", "hvp"):
        raise ValueError(f"method must be 'fwd_fwd' or 'hvp', got {method!r}")
    dt = compute_dtype(model, dtype)
    ud = as_dict(model, u, dt, arg="u")
    if method == "fwd_fwd":
        try:
            return bilinear(model, loss_fn, batch, ud, ud, dtype=dt)
        except (RuntimeError, NotImplementedError):
            pass
    _, _, hu = probe(model, loss_fn, batch, ud, dtype=dt)
    return dot(ud, hu)


def bilinear(
    model: nn.Module, loss_fn: LossFn, batch: Any, a: TensorDict, b: TensorDict, *,
    dtype: torch.dtype | None = None,
) -> float:
    """``aᵀ H b`` by forward-over-forward differentiation (mixed second directional derivative)."""
    dt = compute_dtype(model, dtype)
    theta = primals(model, dt)
    f = functional_loss(model, loss_fn, batch, dt)

    def along_a(p: TensorDict) -> torch.Tensor:
        return torch.func.jvp(f, (p,), (a,))[1]

    with diagnostic_mode(model):
        _, second = torch.func.jvp(along_a, (theta,), (b,))
    return float(second.double())


def _random_unit(model: nn.Module, dt: torch.dtype, gen: torch.Generator, rademacher: bool) -> TensorDict:
    out = {}
    for n, p in trainable(model).items():
        x = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        out[n] = (x.sign() if rademacher else x).to(device=p.device, dtype=dt)
    return out


def top_eigenvalue(
    model: nn.Module, loss_fn: LossFn, batch: Any, *, iters: int = 100, tol: float = 1e-4,
    seed: int = 0, method: str = "auto", dtype: torch.dtype | None = None, return_vector: bool = False,
) -> dict[str, float] | tuple[dict[str, float], TensorDict]:
    """Largest-magnitude Hessian eigenvalue by power iteration on the HVP.

    Stops when the Rayleigh quotient changes by less than ``tol`` relative. Power iteration finds
    the eigenvalue of largest *magnitude*; in non-convex regions that can be a negative one.

    Returns:
        ``{"eigenvalue", "iterations", "converged"}`` (``converged`` is 1.0 or 0.0), plus the unit
        eigenvector as ``{name: tensor}`` when ``return_vector``.
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if tol <= 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    dt = compute_dtype(model, dtype)
    gen = torch.Generator().manual_seed(seed)
    v = _random_unit(model, dt, gen, rademacher=False)
    norm = dot(v, v) ** 0.5
    v = {n: t / norm for n, t in v.items()}
    lam, converged, it = float("nan"), False, 0
    for it in range(1, iters + 1):
        _, _, hv = probe(model, loss_fn, batch, v, method=method, dtype=dt)
        new = dot(v, hv)
        hnorm = dot(hv, hv) ** 0.5
        if hnorm == 0.0:
            lam, converged = 0.0, True
            break
        v = {n: t / hnorm for n, t in hv.items()}
        if it > 1 and abs(new - lam) <= tol * max(abs(new), 1e-30):
            lam, converged = new, True
            break
        lam = new
    result = {"eigenvalue": lam, "iterations": float(it), "converged": float(converged)}
    return (result, v) if return_vector else result


def hessian_trace(
    model: nn.Module, loss_fn: LossFn, batch: Any, *, samples: int = 16, seed: int = 0,
    method: str = "auto", dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Hutchinson estimate of ``tr(H)`` with Rademacher probes, and ``tr(H)/N`` (mean curvature).

    The mean curvature ``tr(H)/N`` is the NDS of an isotropic random direction: the baseline an
    update's NDS can be compared with.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    dt = compute_dtype(model, dtype)
    gen = torch.Generator().manual_seed(seed)
    estimates = []
    for _ in range(samples):
        v = _random_unit(model, dt, gen, rademacher=True)
        _, _, hv = probe(model, loss_fn, batch, v, method=method, dtype=dt)
        estimates.append(dot(v, hv))
    n = sum(t.numel() for t in v.values())
    est = torch.tensor(estimates, dtype=torch.float64)
    stderr = float(est.std() / samples**0.5) if samples > 1 else float("nan")
    return {"trace": float(est.mean()), "trace_stderr": stderr, "mean_curvature": float(est.mean()) / n}
