"""Gram Newton-Schulz: the same odd-polynomial iteration, run on the small Gram matrix.

With ``X_t = Q_t X_0`` and ``R_t = X_t X_t^T`` (k x k, k = min(m, n)), one step
``X <- (aI + Z) X`` with ``Z = bR + cR^2`` becomes ``Q <- (aI + Z) Q`` and
``R <- (aI + Z) R (aI + Z)``: only k x k products until the final ``Q X_0`` (one
k x k times k x K product). All of Q, R, Z are polynomials in ``R_0``, so they
commute and the result equals ``newton_schulz`` in exact arithmetic. Restarts
(re-forming ``X = Q X``, ``R = X X^T``) bound the round-off that accumulates in R.

References:
    Zhang, Amsel, Chen, Dao, "Gram Newton-Schulz" (2026), blog
        dao-ailab.github.io/blog/2026/gram-newton-schulz;
        https://github.com/Dao-AILab/gram-newton-schulz (HEAD f08f25e).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from muonlab.orth import workspace
from muonlab.orth.polynomial import check_compute_dtype, check_matrix, newton_schulz, normalize
from muonlab.orth.schedules import Triple, get_schedule


def default_restarts(steps: int) -> tuple[int, ...]:
    """Restart positions used by the registry entry ``"gram_newton_schulz"``.

    ``(2,)`` (the Dao-AILab default, tuned for 5 steps) up to 5 steps; beyond that a
    restart every 2 steps ``(2, 4, 6, ...)``. With a single restart, R drifts for the
    remaining steps: in bf16 on a 256x1024 input with spectrum in [1e-3, 1] we measured
    an overflow to ~1e25 after 8 steps with ``(2,)`` and relF 0.12 with ``(2, 4, 6)``
    (``python -m muonlab.orth.accuracy``, docs/orthogonalizers.md).
    """
    return (2,) if steps <= 5 else tuple(range(2, steps, 2))


def gram_newton_schulz(
    X: Tensor,
    schedule: str | Sequence[Triple] = "you",
    steps: int = 5,
    *,
    restarts: Sequence[int] = (2,),
    dtype: torch.dtype | None = None,
    prescale: float | None = None,
    eps: float = 1e-7,
    norm: Tensor | None = None,
) -> Tensor:
    """Odd-polynomial polar approximation iterated on the Gram matrix (Zhang, Amsel, Chen, Dao 2026).

    Algorithm (per matrix, wide ``k x K`` after an optional transpose)::

        X <- X / (s ||X||_F + eps);  R <- X X^T;  Q <- none
        for t = 0..T-1 with (a, b, c):
            if t in restarts and t > 0:  X <- Q X;  R <- X X^T;  Q <- none
            Z <- bR + cR^2
            Q <- Z + aI  if Q is none  else  Z Q + aQ
            if t < T-1 and t+1 not in restarts:  R <- (Z + aI) R (Z + aI)
        X <- Q X

    Square matrices fall back to :func:`newton_schulz` (no k < K saving to be had).

    Args:
        X: tensor of shape (..., m, n).
        schedule: schedule name or sequence of ``(a, b, c)``, as in :func:`newton_schulz`.
        steps: number of iterations (>= 0).
        restarts: iteration indices at which X and R are re-formed from Q (Dao-AILab default (2,),
            tuned for 5 steps; for more steps in bf16/fp16 pass more, see :func:`default_restarts`).
        dtype: compute dtype (None: ``X.dtype``); the reference package uses fp16.
        prescale: normalisation safety factor (None: the schedule's default).
        eps: added to the scaled Frobenius norm.
        norm: ``||X||_F`` per matrix when the caller knows it already (see :func:`normalize`).

    Returns:
        Tensor of ``X``'s shape and dtype, equal to ``newton_schulz(X, schedule, steps)`` up to round-off.

    References:
        Zhang, Amsel, Chen, Dao (2026), https://github.com/Dao-AILab/gram-newton-schulz.
    """
    check_matrix(X)
    check_compute_dtype(dtype)
    triples, default_prescale = get_schedule(schedule)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    try:
        restart_set = {int(r) for r in restarts}
    except (TypeError, ValueError) as err:
        raise ValueError(f"restarts must be a sequence of ints, got {restarts!r}") from err
    if any(r < 0 for r in restart_set):
        raise ValueError(f"restarts must be >= 0, got {restarts!r}")
    m, n = X.shape[-2], X.shape[-1]
    if m == n or X.numel() == 0 or steps == 0:
        return newton_schulz(
            X, triples, steps, dtype=dtype, prescale=prescale if prescale is not None else default_prescale, eps=eps, norm=norm,
        )
    prescale = default_prescale if prescale is None else float(prescale)

    out_dtype, transposed = X.dtype, m > n
    Y = X.mT if transposed else X  # (..., k, K), k < K
    Y = normalize(Y, prescale, eps, dtype, norm)
    lead, (k, K) = Y.shape[:-2], Y.shape[-2:]
    Y = Y.reshape(-1, k, K)  # (B, k, K)
    eye = torch.eye(k, dtype=Y.dtype, device=Y.device).expand(Y.shape[0], k, k)

    if torch.compiler.is_compiling():  # the same products, buffers left to the compiler (out= breaks graphs)
        Y = _iterate_functional(Y, eye, triples, steps, restart_set, transposed)
    else:
        Y = _iterate_in_buffers(Y, eye, triples, steps, restart_set, transposed)
    return Y.reshape(*lead, *((K, k) if transposed else (k, K))).to(out_dtype)


def _final_product(Q: Tensor, Y: Tensor, tall: bool, out: Tensor | None = None) -> Tensor:
    """``Q Y`` (B, k, K); for a tall input as ``(Q Y)^T = Y^T Q^T`` (B, K, k), contiguous in the input's layout.

    A tall result handed back as the transposed view of a wide one would make every elementwise op
    between it and the parameters (the write, error feedback's projections) read one side strided:
    3.5x slower on CPU for a (4, 1024, 256) stack (docs/BENCHMARKS.md). BLAS takes the transposed
    operands as they are, so the product costs the same either way (the sums' order may differ).
    """
    if tall:
        return torch.bmm(Y.mT, Q.mT, out=out)
    return torch.bmm(Q, Y, out=out)


def _iterate_functional(
    Y: Tensor, eye: Tensor, triples: Sequence[Triple], steps: int, restart_set: set[int], tall: bool = False,
) -> Tensor:
    """The Gram iteration on ``Y`` (B, k, K) in out-of-place form; returns ``Q Y`` (``tall``: its transpose)."""
    R = torch.bmm(Y, Y.mT)  # (B, k, k)
    Q: Tensor | None = None
    for t in range(steps):
        a, b, c = triples[min(t, len(triples) - 1)]
        if t > 0 and t in restart_set and Q is not None:
            # Restart: fold Q into X and re-form R exactly, discarding accumulated drift.
            Y = torch.bmm(Q, Y)
            R = torch.bmm(Y, Y.mT)
            Q = None
        Z = b * R if c == 0.0 else torch.baddbmm(R, R, R, beta=b, alpha=c)  # bR + cR^2
        Q = Z + a * eye if Q is None else torch.baddbmm(Q, Z, Q, beta=a, alpha=1.0)  # (aI + Z) Q
        if t < steps - 1 and (t + 1) not in restart_set:
            RZ = torch.baddbmm(R, R, Z, beta=a, alpha=1.0)  # R (Z + aI)
            R = torch.baddbmm(RZ, Z, RZ, beta=a, alpha=1.0)  # (Z + aI) R (Z + aI)
    assert Q is not None  # steps >= 1 here
    return _final_product(Q, Y, tall)


def _iterate_in_buffers(
    Y: Tensor, eye: Tensor, triples: Sequence[Triple], steps: int, restart_set: set[int], tall: bool = False,
) -> Tensor:
    """:func:`_iterate_functional` with the same products into five (B, k, k) buffers and one more (B, k, K).

    The buffers come from the optimizer step's workspace when one is open (pages that stay mapped
    between steps, :mod:`muonlab.orth.workspace`), else they are fresh. ``Y`` is the caller's own
    normalized copy; no output aliases an input of its product.
    """
    small = (Y.shape[0], Y.shape[1], Y.shape[1])
    R, Z, Q, Q2, RZ = (workspace.empty(small, Y.dtype, Y.device) for _ in range(5))
    Y2 = workspace.empty(Y.shape, Y.dtype, Y.device)  # contiguous, as a fresh bmm output is
    torch.bmm(Y, Y.mT, out=R)
    fresh = True  # Q holds nothing yet (start, or after a restart)
    for t in range(steps):
        a, b, c = triples[min(t, len(triples) - 1)]
        if t > 0 and t in restart_set and not fresh:
            torch.bmm(Q, Y, out=Y2)  # restart: X <- Q X, R <- X X^T
            # the next output buffer: the old iterate's (ours) when contiguous, like a fresh bmm output
            Y, Y2 = Y2, (Y if Y.is_contiguous() else workspace.empty(Y.shape, Y.dtype, Y.device))
            torch.bmm(Y, Y.mT, out=R)
            fresh = True
        if c == 0.0:
            torch.mul(R, b, out=Z)
        else:
            torch.baddbmm(R, R, R, beta=b, alpha=c, out=Z)  # bR + cR^2
        if fresh:
            torch.add(Z, eye, alpha=a, out=Q)  # Z + aI (a * 1 and a * 0 are exact: the same as Z + a * eye)
            fresh = False
        else:
            torch.baddbmm(Q, Z, Q, beta=a, alpha=1.0, out=Q2)  # (aI + Z) Q
            Q, Q2 = Q2, Q
        if t < steps - 1 and (t + 1) not in restart_set:
            torch.baddbmm(R, R, Z, beta=a, alpha=1.0, out=RZ)  # R (Z + aI)
            torch.baddbmm(RZ, Z, RZ, beta=a, alpha=1.0, out=R)  # (Z + aI) R (Z + aI): R is free again
    # Y2 is free and contiguous here: for a tall result its memory takes the (B, K, k) layout
    return _final_product(Q, Y, tall, out=Y2.view(Y.shape[0], Y.shape[2], Y.shape[1]) if tall else Y2)
