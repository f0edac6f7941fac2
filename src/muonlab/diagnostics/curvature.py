"""Curvature along an update: NDS, the one-step Taylor split, and its layer decomposition.

For a fixed batch ``D``, parameters ``θ`` and an update ``u`` applied as ``θ_new = θ − u``
(``u`` already contains the learning rate), with ``g = ∇L_D(θ)`` and ``H = ∇²L_D(θ)``:

* directional sharpness ``uᵀHu``; normalized directional sharpness ``NDS = uᵀHu / ‖u‖²`` (the
  Hessian's Rayleigh quotient along ``u``; negative in non-convex directions);
* the second-order Taylor model of the loss change
  ``L(θ − u) − L(θ) ≈ −gᵀu + ½uᵀHu``: first-order gain ``gᵀu`` minus the curvature penalty
  ``½uᵀHu = ½‖u‖²·NDS``;
* with parameters split into blocks ``u = (u_1, …, u_L)``: ``uᵀHu = Σ_ℓ u_ℓᵀH_ℓℓu_ℓ`` (within)
  ``+ Σ_{ℓ≠ℓ'} u_ℓᵀH_ℓℓ'u_ℓ'`` (cross).

References:
    Wang et al., "Why Muon Outperforms Adam: A Curvature Perspective", arXiv 2606.04662 (2026),
    §3 (Taylor split, NDS) and §4 (within-/cross-layer decomposition).
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from muonlab.diagnostics._params import (
    LossFn,
    Vector,
    as_dict,
    compute_dtype,
    dot,
    functional_loss,
    diagnostic_mode,
    primals,
    reference_loss,
    restrict,
    trainable,
)
from muonlab.diagnostics.hvp import bilinear, probe


def _ratio(a: float, b: float, eps: float = 1e-30) -> float:
    """``a / b``, NaN when ``b`` is (numerically) zero — ratios of sign-changing terms explode."""
    return a / b if abs(b) > eps else float("nan")


def directional_sharpness(
    model: nn.Module, loss_fn: LossFn, batch: Any, u: Vector, *, method: str = "auto",
    dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """``{"uHu", "u_norm_sq", "nds"}`` for the direction ``u`` on ``batch``.

    Cost: one HVP (about 2-3 backward passes).
    """
    dt = compute_dtype(model, dtype)
    ud = as_dict(model, u, dt, arg="u")
    _, _, hu = probe(model, loss_fn, batch, ud, method=method, dtype=dt)
    uhu, nsq = dot(ud, hu), dot(ud, ud)
    return {"uHu": uhu, "u_norm_sq": nsq, "nds": _ratio(uhu, nsq)}


def taylor_decomposition(
    model: nn.Module, loss_fn: LossFn, batch: Any, u: Vector, *, method: str = "auto",
    dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Second-order Taylor split of the one-step loss change for the step ``θ → θ − u``.

    Sign convention: ``predicted`` and ``realized`` are loss *changes* (negative when the loss
    goes down); the paper's *decreases* are reported as ``predicted_decrease = gᵀu − ½uᵀHu`` and
    ``realized_decrease = L(θ) − L(θ − u)``. Gradient, Hessian and realized change all use the
    same ``batch``, so the Taylor residual measures the quadratic model, not batch noise. The
    model is evaluated functionally at ``θ − u``; its parameters are never written.

    Cost: one HVP pass (which also yields ``g`` and ``L(θ)``) plus one forward pass.

    Returns:
        ``loss``, ``first_order`` (``gᵀu``), ``curvature_penalty`` (``½uᵀHu``), ``predicted``
        (``−gᵀu + ½uᵀHu``), ``realized`` (``L(θ−u) − L(θ)``), ``predicted_decrease``,
        ``realized_decrease``, ``taylor_residual`` (``realized − predicted``), ``uHu``,
        ``u_norm_sq``, ``nds``, ``grad_norm_sq`` and ``cos_gu``.
    """
    dt = compute_dtype(model, dtype)
    ud = as_dict(model, u, dt, arg="u")
    theta = primals(model, dt)
    loss0, g, hu = probe(model, loss_fn, batch, ud, method=method, dtype=dt, theta=theta)
    f = functional_loss(model, loss_fn, batch, dt)
    with torch.no_grad(), diagnostic_mode(model):
        loss1 = f({n: theta[n] - ud[n] for n in theta})
    gu, uhu, nsq, gsq = dot(g, ud), dot(ud, hu), dot(ud, ud), dot(g, g)
    realized = float(loss1.double() - loss0.double())
    predicted = -gu + 0.5 * uhu
    return {
        "loss": float(loss0),
        "first_order": gu,
        "curvature_penalty": 0.5 * uhu,
        "predicted": predicted,
        "realized": realized,
        "predicted_decrease": -predicted,
        "realized_decrease": -realized,
        "taylor_residual": realized - predicted,
        "uHu": uhu,
        "u_norm_sq": nsq,
        "nds": _ratio(uhu, nsq),
        "grad_norm_sq": gsq,
        "cos_gu": _ratio(gu, (gsq * nsq) ** 0.5),
    }


# Cap on the automatic step, which fp32 rounding would push higher. Provenance: truncation error
# of the 5-point difference, measured in fp64 on a tiny MLP and two small muonlab GPTs (3 random
# directions each): at most 1.2e-4 relative at ε = 0.1, 8e-3 at 0.3, 0.2 at 1.
_FD_EPS_MAX = 0.1
_FD_RTOL = 1e-2  # the agreement asked of a healthy model on top of the rounding floor


def self_check(
    model: nn.Module, loss_fn: LossFn, batch: Any, *, eps: float | None = None, seed: int = 0,
    dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Sanity checks of the HVP on your model (symmetry; agreement with a finite difference, in fp64).

    The HVP is computed as the other diagnostics compute it (in ``dtype``). The finite difference
    it is compared with is evaluated in fp64 whenever the model runs in fp64 (parameters, floating
    buffers and floating batch tensors cast; integer inputs such as token ids kept), else in
    ``dtype``. It is the 5-point (Richardson-extrapolated) second difference
    ``(16(L₊₁ + L₋₁) − 30L₀ − (L₊₂ + L₋₂)) / 12ε²`` with ``L_k = L(θ + kεv)`` and ``‖v‖ = 1``, whose
    truncation error is O(ε⁴). Its rounding floor is ``(16/3)·u·max|L_k| / ε²``, with ``u`` the
    machine epsilon of the dtype the loss comes back in; the default step
    ``ε = min(0.1, (u·(|L| + |vᵀHv|) / |vᵀHv|)^⅙)`` balances it against the truncation error, which
    leaves about 1e-7 relative in fp64 and 1e-2 to 0.3 in fp32 on small networks. A ``loss_fn``
    that casts to fp32 itself (``logits.float()``) limits the difference to fp32 (``fd_bits`` 32).

    Cost: two HVPs and five forward passes (in fp64: one fp64 copy of the parameters).

    Args:
        model, loss_fn, batch: as in :func:`directional_sharpness`.
        eps: the finite-difference step along the unit direction; None chooses it as above.
        seed: seed of the random directions.
        dtype: compute dtype of the HVP; floating tensors of ``batch`` are cast to it.

    Returns:
        ``symmetry_rel_err`` = ``|vᵀHw − wᵀHv| / max(|vᵀHw|, |wᵀHv|)`` for random ``v``, ``w`` (expect
        < 1e-3 in fp32); ``vHv`` and ``fd`` (the difference above); ``fd_rel_err`` =
        ``|fd − vHv| / |vHv|`` (expect < 1e-4 when ``fd_bits`` is 64); ``fd_floor``, the estimated
        rounding floor of ``fd_rel_err``; ``fd_ok``: 1.0 when ``fd_rel_err ≤ 1e-2 + fd_floor``, 0.0
        otherwise (a failure points at an op with a wrong or missing second derivative);
        ``fd_bits``: the precision of the loss values differenced (64, or 32 when the model or
        ``loss_fn`` runs in fp32 only); ``fd_eps``: the step used.
    """
    if eps is not None and eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    dt = compute_dtype(model, dtype)
    gen = torch.Generator().manual_seed(seed)
    theta = primals(model, dt)
    v, w = ({n: torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t) for n, t in theta.items()}
            for _ in range(2))
    norm = dot(v, v) ** 0.5
    v = {n: t / norm for n, t in v.items()}
    _, _, hv = probe(model, loss_fn, batch, v, dtype=dt, theta=theta)
    _, _, hw = probe(model, loss_fn, batch, w, dtype=dt, theta=theta)
    a, b, vhv = dot(w, hv), dot(v, hw), dot(v, hv)

    f, fd_dt, loss0 = reference_loss(model, loss_fn, batch, theta, dt)
    u, l0 = torch.finfo(loss0.dtype).eps, abs(float(loss0))
    if eps is None:  # floor ∝ u/ε² against truncation ∝ ε⁴, taking L⁽⁶⁾ along v ~ vᵀHv
        eps = min(_FD_EPS_MAX, (u * (l0 + abs(vhv)) / max(abs(vhv), 1e-30)) ** (1 / 6))
    # θ and v as the HVP saw them, widened exactly: both probe the same point and direction.
    th, vf = ({n: t.to(fd_dt) for n, t in d.items()} for d in (theta, v))
    with torch.no_grad(), diagnostic_mode(model):
        ls = {k: float(f({n: th[n] + (k * eps) * vf[n] for n in th}).double()) for k in (-2, -1, 1, 2)}
    fd = (16 * (ls[1] + ls[-1]) - 30 * float(loss0.double()) - (ls[2] + ls[-2])) / (12 * eps**2)
    floor = 16 / 3 * u * max(l0, *map(abs, ls.values())) / eps**2
    scale = max(abs(vhv), 1e-30)
    return {
        "symmetry_rel_err": abs(a - b) / max(abs(a), abs(b), 1e-30),
        "fd_rel_err": abs(fd - vhv) / scale,
        "fd_floor": floor / scale,
        "fd_ok": float(abs(fd - vhv) <= _FD_RTOL * abs(vhv) + floor),
        "fd_bits": float(torch.finfo(loss0.dtype).bits),
        "fd_eps": eps,
        "vHv": vhv,
        "fd": fd,
    }


_INDEX = re.compile(r"^\d+$")


def groups_by_block(model: nn.Module) -> dict[str, list[str]]:
    """Group trainable parameters into layer blocks by name.

    The label is the name up to and including its first integer component
    (``"blocks.3.attn.qkv.weight" -> "blocks.3"``), else its first component
    (``"tok_emb.weight" -> "tok_emb"``, ``"lm_head.weight" -> "lm_head"``). For a GPT this gives
    {embedding}, one group per transformer block, {final norm}, {head} — our reading of the paper's
    layer blocks (§4; its exact partition was not available); tied tensors appear once, under
    their first name.
    """
    groups: dict[str, list[str]] = {}
    for name in trainable(model):
        parts = name.split(".")
        cut = next((i for i, p in enumerate(parts) if _INDEX.match(p)), 0)
        groups.setdefault(".".join(parts[: cut + 1]), []).append(name)
    return groups


def _resolve_groups(
    model: nn.Module, groups: Mapping[str, Sequence[str]] | Sequence[Sequence[str]] | None
) -> dict[str, list[str]]:
    names = list(trainable(model))
    if groups is None:
        return {n: [n] for n in names}
    if isinstance(groups, Mapping):
        resolved = {str(k): list(v) for k, v in groups.items()}
    else:
        resolved = {}
        for i, members in enumerate(groups):
            if isinstance(members, str):
                raise ValueError(f"groups must be lists of parameter names, got the string {members!r}")
            resolved[f"g{i}:{members[0]}" if members else f"g{i}"] = list(members)
    seen: set[str] = set()
    for label, members in resolved.items():
        for n in members:
            if n not in names:
                raise ValueError(f"groups[{label!r}] names {n!r}, which is not a trainable parameter")
            if n in seen:
                raise ValueError(f"groups assigns parameter {n!r} to more than one group")
            seen.add(n)
    rest = [n for n in names if n not in seen]
    if rest:  # keeps within + cross = total exact even for a partial partition
        resolved["_rest"] = rest
    return resolved


def layer_decomposition(
    model: nn.Module, loss_fn: LossFn, batch: Any, u: Vector,
    groups: Mapping[str, Sequence[str]] | Sequence[Sequence[str]] | None = None, *,
    method: str = "hvp", dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Within-layer vs cross-layer parts of ``uᵀHu`` and per-layer NDS.

    Args:
        model, loss_fn, batch, u: as in :func:`directional_sharpness`.
        groups: ``{label: [param names]}``, a list of name lists, or None (one group per parameter
            tensor). Parameters left out go to a ``"_rest"`` group. See :func:`groups_by_block`.
        method: ``"hvp"`` (one restricted HVP per group) or ``"fwd_fwd"`` (one forward-over-forward
            second derivative per group: no backward graph).
        dtype: compute dtype.

    Returns:
        ``uHu``, ``u_norm_sq``, ``nds``, ``within`` and ``cross`` (both divided by ``‖u‖²`` so that
        ``within + cross = nds``), ``within_share`` (``within / nds``, NaN near zero) and per group
        ``within/<g>`` (``u_gᵀH_gg u_g / ‖u‖²``), ``nds/<g>`` (``u_gᵀH_gg u_g / ‖u_g‖²``, the layer's
        own NDS), ``row/<g>`` (``u_gᵀ(Hu)_g / ‖u‖²``, an attribution that sums to ``nds``) and
        ``u_share/<g>`` (``‖u_g‖² / ‖u‖²``).

    Cost: ``1 + len(groups)`` HVPs (or second directional derivatives).
    """
    if method not in ("hvp", "fwd_fwd"):
        raise ValueError(f"method must be 'hvp' or 'fwd_fwd', got {method!r}")
    dt = compute_dtype(model, dtype)
    ud = as_dict(model, u, dt, arg="u")
    resolved = _resolve_groups(model, groups)
    _, _, hu = probe(model, loss_fn, batch, ud, dtype=dt)
    uhu, nsq = dot(ud, hu), dot(ud, ud)
    out: dict[str, float] = {"uHu": uhu, "u_norm_sq": nsq, "nds": _ratio(uhu, nsq)}
    within_raw = 0.0
    for label, members in resolved.items():
        ug = restrict(ud, members)
        gsq = dot(ug, ug, members)
        if gsq == 0.0:
            w = 0.0
        elif method == "hvp":
            _, _, hg = probe(model, loss_fn, batch, ug, dtype=dt)
            w = dot(ug, hg, members)
        else:
            w = bilinear(model, loss_fn, batch, ug, ug, dtype=dt)
        within_raw += w
        out[f"within/{label}"] = _ratio(w, nsq)
        out[f"nds/{label}"] = _ratio(w, gsq)
        out[f"row/{label}"] = _ratio(dot(ud, hu, members), nsq)
        out[f"u_share/{label}"] = _ratio(gsq, nsq)
    out["within"] = _ratio(within_raw, nsq)
    out["cross"] = _ratio(uhu - within_raw, nsq)
    out["within_share"] = _ratio(within_raw, uhu)
    return out


__all__ = ["directional_sharpness", "taylor_decomposition", "layer_decomposition", "groups_by_block", "self_check"]
