"""Euclidean norms that neither overflow nor underflow, for any finite floating-point input.

A plain ``vector_norm`` squares the entries in the input's precision: in fp32 a matrix with entries
above ~1.8e19 has ``sum x^2 = inf`` (and entries below ~1e-23 square to zero), although its norm is
a perfectly representable number. :func:`safe_norm` avoids both in one of two ways:

* **Widened** (fp32, bf16 and fp16 inputs of up to :data:`WIDEN_MAX_NUMEL` elements, on devices with
  fp64): the entries are converted to fp64, where their squares are exact and can neither overflow nor
  underflow (an fp32 square lies in ``[2e-90, 1.2e77]``), and the norm is taken there. The result is
  the fp64 norm of the input, rounded once to the output dtype. Three passes (convert, square, sum;
  two for norms over the last dim, which ``vector_norm`` reduces in one) and no small ops around them.
* **Scaled** (fp64 inputs, larger inputs, and devices without fp64 such as Apple MPS): every slice is
  scaled by a power of two ``s = 2^-e`` with ``max|x| = f 2^e``, ``f`` in ``[0.5, 1)``, so that its
  largest entry lies in ``[0.5, 1)``; the norm is taken there and divided by ``s``. Multiplying by a
  power of two is exact, so for inputs whose squares neither overflow nor underflow the result is
  bitwise the plain norm (``vector_norm(X)`` for norms over the last dim, which it then computes with,
  ``X.square().sum().sqrt()`` for the columns); for the others it is the correctly scaled value (the classical
  remedy of LAPACK's ``xNRM2``, Blue, "A Portable Fortran Program to Find the Euclidean Norm of a
  Vector", ACM TOMS 4(1), 1978).

Both are accurate to the rounding of a plain norm, and the choice depends on the input's dtype, size and
device only, so a given shape always takes the same form. Neither syncs with the host. On CPU (torch
2.13, AVX2) the widened form is 1.3-4x faster up to 1 MB stacks, where the scaled form's dozen small
ops dominate; from ~3 MB the scaled one is as fast or faster (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

Dims = int | tuple[int, ...]


def pow2_scale(amax: Tensor) -> Tensor:
    """``2^-e`` with ``amax = f 2^e``, ``f`` in ``[0.5, 1)``; 1 where ``amax`` is 0 or not finite.

    The scale is capped at ``2^(maxexp - 2)`` (``2^126`` in fp32) so that it stays finite for
    subnormal ``amax``: such a slice then has its largest entry somewhat below 0.5, still far from
    underflow.
    """
    # Inf and NaN go to 0 first: frexp(0) stores exponent 0 (C standard), while its exponent for
    # inf / NaN is unspecified. (amax >= 0 or NaN here: a max-abs.) Four dispatches fewer than a where.
    _, e = torch.frexp(amax.nan_to_num(nan=0.0, posinf=0.0))
    e = e.clamp_(min=2 - math.frexp(torch.finfo(amax.dtype).max)[1])  # maxexp: 128 fp32, 1024 fp64
    return torch.ldexp(torch.ones_like(amax), e.neg_())  # 2^0 = 1 for 0, inf, NaN


def max_abs(X: Tensor, dim: Dims, keepdim: bool = False) -> Tensor:
    """``max |x|`` over ``dim`` (NaN propagates), as ``max(amax(X), -amin(X))``.

    Two vectorized reductions: ``vector_norm(X, ord=inf)`` computes the same value ~15x slower on CPU
    (torch 2.13, AVX2; an unvectorized abs-max kernel), ``X.abs().amax()`` needs a temporary.
    """
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    return torch.maximum(X.amax(dims, keepdim=keepdim), X.amin(dims, keepdim=keepdim).neg())


#: the largest input (elements) that :func:`safe_norm` widens to fp64. Above it the scaled form is as fast
#: or faster on CPU (its passes over an fp32 temporary stay in cache, the fp64 copy's do not: NAMO-D's
#: (4, 1024, 256) column norms 1.13x slower widened, (4, 256, 256) 0.74x; docs/BENCHMARKS.md).
WIDEN_MAX_NUMEL = 1 << 19


def widened_dtype(X: Tensor) -> torch.dtype:
    """The dtype :func:`safe_norm` computes ``X``'s norms in: fp64 for a narrower input of at most
    :data:`WIDEN_MAX_NUMEL` elements on a device with fp64 (the *widened* form), else ``X.dtype``
    (the *scaled* form)."""
    if X.dtype.itemsize < 8 and X.numel() <= WIDEN_MAX_NUMEL and X.device.type != "mps":
        return torch.float64
    return X.dtype


def safe_norm(
    X: Tensor, dim: Dims, keepdim: bool = False, *, scratch: Tensor | None = None, dtype: torch.dtype | None = None,
) -> Tensor:
    """``||X||_2`` over ``dim`` without intermediate overflow or underflow.

    Accurate to the rounding of a plain norm at every magnitude (widened: the fp64 norm, rounded once);
    the result is ``inf`` only when the true norm exceeds the largest finite value of ``dtype``. Inf
    entries give inf and NaN entries NaN, as ``vector_norm`` does.

    Args:
        X: a floating-point tensor.
        dim: the dims reduced.
        keepdim: keep them as size 1.
        scratch: a tensor of ``X``'s shape in :func:`widened_dtype` ``(X)``, overwritten, so that several
            norms in a row share one temporary (on CPUs each fresh large temporary costs page faults).
        dtype: the result's dtype (default ``X.dtype``); e.g. fp64 for statistics of squared norms,
            which then keep the widened form's precision.

    >>> safe_norm(torch.full((64, 64), 1e30), (-2, -1))
    tensor(6.4000e+31)
    """
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    dtype = dtype or X.dtype
    if X.numel() == 0:  # an empty shard: max-abs has no identity, and nothing can overflow
        return torch.linalg.vector_norm(X, dim=dims, keepdim=keepdim, dtype=dtype)
    if widened_dtype(X) != X.dtype:
        return widened_norm(X, dims, keepdim, scratch=scratch).to(dtype)
    return scaled_norm(X, dims, keepdim, scratch=scratch).to(dtype)


def widened_norm(X: Tensor, dims: tuple[int, ...], keepdim: bool = False, *, scratch: Tensor | None = None) -> Tensor:
    """:func:`safe_norm`'s widened form: the norm of ``X`` converted to fp64, in fp64 (``X`` fp32 / bf16 / fp16).

    ``scratch``: an fp64 tensor of ``X``'s shape for the converted copy (overwritten).
    """
    D = X.to(torch.float64) if scratch is None else scratch.copy_(X)
    if X.dim() - 1 in {d % X.dim() for d in dims}:
        return torch.linalg.vector_norm(D, dim=dims, keepdim=keepdim)  # over the last dim: one vectorized pass
    # Square-and-sum: on CPU vector_norm over non-innermost dims alone (the columns, dim=-2) is ~7x slower.
    return D.square_().sum(dims, keepdim=keepdim).sqrt_()


def scaled_norm(X: Tensor, dims: tuple[int, ...], keepdim: bool = False, *, scratch: Tensor | None = None) -> Tensor:
    """:func:`safe_norm`'s scaled form, in ``X``'s dtype: each slice scaled by a power of two into ``[0.5, 1)``.

    ``scratch``: a tensor of ``X``'s shape and dtype for ``|X|`` (overwritten).
    """
    # X is read once (into |X|); the other passes run over the temporary while it is in cache.
    # |x| 2^-e squares exactly as x 2^-e does.
    A = torch.abs(X) if scratch is None else torch.abs(X, out=scratch)
    s = pow2_scale(A.amax(dims, keepdim=True))
    if X.dim() - 1 in {d % X.dim() for d in dims}:
        # Over the last dim vector_norm squares and sums in one vectorized pass: 0.78x square_ + sum on CPU
        # for a (4, 1024, 256) stack (docs/BENCHMARKS.md); bitwise vector_norm(X) in range.
        norm = torch.linalg.vector_norm(A.mul_(s), dim=dims, keepdim=True).div_(s)
    else:
        norm = A.mul_(s).square_().sum(dims, keepdim=True).sqrt_().div_(s)
    return norm if keepdim else norm.squeeze(dims) if dims else norm
