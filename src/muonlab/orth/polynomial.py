"""Odd-polynomial (Newton-Schulz-type) iteration towards the polar factor.

For ``X = U S V^T``, one step ``X <- a X + (b A + c A^2) X`` with ``A = X X^T`` maps
``X`` to ``U p(S) V^T`` with ``p(s) = a s + b s^3 + c s^5``: singular vectors are
kept and every singular value goes through the same scalar polynomial. Composing
well-chosen polynomials drives all singular values towards 1, i.e. ``X`` towards
``msign(X) = U V^T``, using matmuls only (Higham, *Functions of Matrices*, ch. 8; KellerJordan/Muon).

References:
    Keller Jordan, "Muon: An optimizer for hidden layers in neural networks" (2024),
        https://github.com/KellerJordan/Muon.
    Amsel, Persson, Musco, Gower, "The Polar Express", arXiv 2505.16932.
    Higham, "Functions of Matrices: Theory and Computation", SIAM 2008, ch. 8.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from muonlab.orth import workspace
from muonlab.orth.norms import pow2_scale, widened_dtype
from muonlab.orth.schedules import Triple, get_schedule


def check_matrix(X: Tensor) -> None:
    """Raise ValueError unless ``X`` is a real floating tensor of shape (..., m, n)."""
    if not isinstance(X, Tensor):
        raise ValueError(f"X must be a torch.Tensor, got {type(X).__name__}")
    if X.ndim < 2:
        raise ValueError(f"X must have shape (..., m, n) with ndim >= 2, got shape {tuple(X.shape)}")
    if not X.is_floating_point():
        raise ValueError(f"X must be a real floating-point tensor, got dtype {X.dtype}")


def check_compute_dtype(dtype: torch.dtype | None) -> None:
    """Raise ValueError unless ``dtype`` is None or a floating dtype."""
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be None or a floating torch.dtype, got {dtype!r}")


#: the largest stack (elements) that :func:`normalize` normalizes in fp64 (:func:`_normalize_widened`). Its
#: fp64 copy and quotient cost more memory traffic than the scaled form's passes, which its fewer
#: dispatches repay only on small stacks: 0.67x at (2, 64, 64), 0.94x at (4, 128, 256), 1.06x at
#: (4, 384, 128) (CPU, AVX2, torch 2.13; docs/BENCHMARKS.md).
WIDEN_NORMALIZE_MAX_NUMEL = 1 << 17


def normalize(
    X: Tensor, prescale: float, eps: float, dtype: torch.dtype | None, norm: Tensor | None = None,
) -> Tensor:
    """Return ``X / (prescale * ||X||_F + eps)`` per matrix, cast to the compute dtype.

    The norm and the division run in fp32 (fp64 when ``X`` or ``dtype`` is fp64, or for a stack of at
    most :data:`WIDEN_NORMALIZE_MAX_NUMEL` elements on a device with fp64) so that a bf16 input or
    compute dtype does not lose the scale before the cast; a zero denominator (zero matrix with
    ``eps = 0``) is replaced by a positive one so zeros stay zeros.

    ``norm``: ``||X||_F`` per matrix (shape ``X.shape[:-2]``), when the caller has it already, e.g.
    NAMO's statistics of the same momentum. The result is then one division (no max-abs, scaled copy
    or norm pass over ``X``); it equals the computed form up to the rounding of the norm's summation
    order. The value is trusted, not checked.
    """
    if prescale <= 0:
        raise ValueError(f"prescale must be > 0, got {prescale!r}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    norm_dtype = torch.promote_types(X.dtype, torch.float32)
    if dtype is not None:
        norm_dtype = torch.promote_types(norm_dtype, dtype)
    Xn = X.to(norm_dtype)  # no copy for fp32 input
    # The exact norm at every magnitude (a sum of squares of fp32 entries above ~1.8e19 would
    # overflow): scale by a power of two that brings max|x| into [0.5, 1) -- exact -- and divide the
    # scaled matrix by its norm, X / (s ||X|| + eps) = (2^-e X) / (s ||2^-e X|| + 2^-e eps).
    # Bitwise the plain formula wherever the plain squares neither overflow nor underflow.
    if Xn.numel() == 0:
        return Xn.to(dtype if dtype is not None else X.dtype)
    out_dtype = dtype if dtype is not None else X.dtype
    if norm is not None:
        denom = prescale * norm.to(norm_dtype).reshape(*Xn.shape[:-2], 1, 1) + eps
        denom = torch.where(denom > 0, denom, torch.ones_like(denom))
        if torch.compiler.is_compiling():
            return (Xn / denom).to(out_dtype)
        # Never into X itself; in X's layout (a tall stack's wide view is a transposed one: a contiguous
        # result would cost a transposing pass, and the iterates and the result would come back as a
        # transposed view of the tall stack), as the computed form does.
        return torch.div(Xn, denom, out=workspace.empty_like(Xn, out_dtype))
    if Xn.numel() <= WIDEN_NORMALIZE_MAX_NUMEL and widened_dtype(Xn) != Xn.dtype:
        return _normalize_widened(Xn, prescale, eps, out_dtype)
    # max|x| from |X| in the buffer that then takes the scaled copy: X is read twice rather than three
    # times (amax, amin, scale), and on CPU the reads of a large X are what cost (docs/BENCHMARKS.md).
    buf = workspace.out_like(Xn)
    p2 = pow2_scale(torch.abs(Xn, out=buf).amax((-2, -1), keepdim=True))  # (..., 1, 1)
    Xs = torch.mul(Xn, p2, out=buf)
    norm = torch.linalg.vector_norm(Xs, dim=(-2, -1), keepdim=True)  # in [0.5, sqrt(mn)], or 0 for a zero matrix
    if prescale != 1.0:
        norm = norm.mul_(prescale)
    denom = torch.add(norm, p2, alpha=eps) if eps else norm  # prescale ||Xs|| + 2^-e eps (exact: p2 is a power of two)
    # 0 (a zero matrix, eps = 0) -> tiny: zeros stay zeros, no NaN, no host sync. Any other denominator is
    # >= prescale / 2 (fp32: above tiny for every prescale >= 2.4e-38), so it is left as it is: one dispatch
    # where where(denom > 0, denom, 1) took three.
    denom = denom.clamp_(min=torch.finfo(denom.dtype).tiny)
    if torch.compiler.is_compiling():  # the compiler plans its own buffers; out= on a strided view breaks the graph
        return (Xs / denom).to(out_dtype)
    out = Xs if out_dtype == Xs.dtype else workspace.empty_like(Xn, out_dtype)  # in X's layout, as above
    return torch.div(Xs, denom, out=out)


def _normalize_widened(Xn: Tensor, prescale: float, eps: float, out_dtype: torch.dtype) -> Tensor:
    """:func:`normalize`'s computed form for a small stack: in fp64.

    The fp64 copy's squares are exact, so its norm needs no scaling, and the division runs in fp64 and
    rounds once into the output: six dispatches where the scaled form takes about fifteen, which is
    what a small stack's normalization costs on CPUs (docs/BENCHMARKS.md). Equal to the scaled form up
    to the rounding of the norm and the quotient.
    """
    D = Xn.to(torch.float64) if torch.compiler.is_compiling() else workspace.empty_like(Xn, torch.float64).copy_(Xn)
    denom = torch.linalg.vector_norm(D, dim=(-2, -1), keepdim=True)
    if prescale != 1.0:
        denom = denom.mul_(prescale)
    if eps:
        denom = denom.add_(eps)
    denom = denom.clamp_(min=torch.finfo(torch.float64).tiny)  # a zero matrix with eps = 0 stays zero
    if torch.compiler.is_compiling():
        return (D / denom).to(out_dtype)
    out = workspace.empty_like(Xn, out_dtype)  # in X's layout (see normalize)
    # Divided in fp64 and rounded once by the copy: torch.div(D, denom, out=<fp32>) gives the same values
    # but runs TensorIterator's mixed-dtype loop, 3.5x (contiguous) to 20x (transposed) slower on CPU.
    return out.copy_(D.div_(denom))


def _iterate(X: Tensor, triples: Sequence[Triple], steps: int) -> Tensor:
    """Run ``steps`` odd-quintic steps on a wide stack ``X`` of shape (B, k, K), k <= K.

    ``X`` is a fresh tensor owned by the caller and is overwritten: the iterates alternate between
    ``X`` and one more (B, k, K) buffer, and the two (B, k, k) products have one buffer each, so no
    step allocates; inside an optimizer step the buffers come from its workspace
    (:mod:`muonlab.orth.workspace`), whose pages stay mapped between steps.
    """
    if steps == 0:
        return X
    if torch.compiler.is_compiling():  # the same products, buffers left to the compiler (out= breaks graphs)
        for t in range(steps):
            a, b, c = triples[min(t, len(triples) - 1)]
            A = torch.bmm(X, X.mT)
            B = A * b if c == 0.0 else torch.baddbmm(A, A, A, beta=b, alpha=c)
            X = torch.baddbmm(X, B, X, beta=a, alpha=1.0)
        return X
    k = X.shape[-2]
    A = workspace.empty((X.shape[0], k, k), X.dtype, X.device)  # X X^T, the small Gram side
    B = workspace.empty_like(A)  # b A + c A^2
    Y = workspace.empty_like(X)
    for t in range(steps):
        a, b, c = triples[min(t, len(triples) - 1)]  # steps beyond the list reuse the last entry
        torch.bmm(X, X.mT, out=A)
        if c == 0.0:
            torch.mul(A, b, out=B)  # cubic: skip the A @ A product
        else:
            torch.baddbmm(A, A, A, beta=b, alpha=c, out=B)  # b*A + c*A@A
        torch.baddbmm(X, B, X, beta=a, alpha=1.0, out=Y)  # a*X + B@X
        X, Y = Y, X
    return X


def newton_schulz(
    X: Tensor,
    schedule: str | Sequence[Triple] = "jordan",
    steps: int = 5,
    *,
    dtype: torch.dtype | None = None,
    prescale: float | None = None,
    eps: float = 1e-7,
    norm: Tensor | None = None,
) -> Tensor:
    """Approximate the polar factor ``U V^T`` of every matrix in ``X`` by an odd quintic iteration.

    Algorithm (per matrix)::

        X <- X^T if m > n                      # iterate on the small Gram side
        X <- X / (s ||X||_F + eps)             # fp32 (fp64 for fp64 input), then cast to dtype
        for t in 1..steps:  (a, b, c) = schedule[min(t, len) - 1]
            A <- X X^T;  X <- a X + (b A + c A^2) X
        undo the transpose; cast back to X.dtype

    Args:
        X: tensor of shape (..., m, n); leading dims are a batch.
        schedule: a name from ``muonlab.orth.SCHEDULES`` ("jordan", "you", "polar_express",
            "polar_express_dion", "cubic") or a sequence of ``(a, b, c)`` triples.
        steps: number of iterations (>= 0); steps past the end of the schedule reuse its last entry.
        dtype: compute dtype of the iteration (None: ``X.dtype``), e.g. ``torch.bfloat16``.
        prescale: safety factor ``s`` of the normalisation; None uses the schedule's own
            default (1.0 jordan/you/cubic, 1.01 polar_express, 1.02 polar_express_dion,
            1.0 for user sequences).
        eps: added to the scaled norm; keeps zero matrices at zero.
        norm: ``||X||_F`` per matrix (shape ``X.shape[:-2]``) when the caller knows it already;
            the normalization then skips its own passes over ``X`` (see :func:`normalize`).

    Returns:
        Tensor of ``X``'s shape and dtype.

    References:
        Keller Jordan, Muon (2024), https://github.com/KellerJordan/Muon.
        Amsel et al., "The Polar Express", arXiv 2505.16932.
    """
    check_matrix(X)
    check_compute_dtype(dtype)
    triples, default_prescale = get_schedule(schedule)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    prescale = default_prescale if prescale is None else float(prescale)

    shape, out_dtype = X.shape, X.dtype
    if X.numel() == 0:
        return X.clone()  # empty batch or a 0-sized side: nothing to orthogonalize
    transposed = shape[-2] > shape[-1]
    Y = X.mT if transposed else X  # (..., k, K) with k <= K: Gram matrices are k x k
    Y = normalize(Y, prescale, eps, dtype, norm)
    lead = Y.shape[:-2]
    Y = _iterate(Y.reshape(-1, *Y.shape[-2:]), triples, steps).reshape(*lead, *Y.shape[-2:])
    if transposed:
        Y = Y.mT
    return Y.to(out_dtype)
