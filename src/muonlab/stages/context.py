"""Where a stack's matrices live, and the few operations whose result depends on it.

Every stage is written once, against this small interface. On one process (and under DDP, where
every rank holds whole matrices) the methods are plain torch reductions; when the matrices are
row- or column-sharded across ranks (FSDP2), ``muonlab.distributed`` supplies a context whose
methods combine the local partial results with one packed collective, so every statistic equals
its single-process value exactly.

The interface:

* ``sums(*(X, dims))`` / ``norms(*(X, dims), dtype=)``: per-matrix sums / Euclidean norms (overflow-safe:
  1e30 entries give their true norm, not inf) of ``(k, m, n)`` tensors over ``dims`` (``-1``: over the columns of each row, ``-2``: over the rows of each column,
  ``(-2, -1)``: the whole matrix). Several requests are combined into one collective.
* ``nanmean_cols(x)`` / ``kthvalue_cols(x, rank)``: NaN-aware mean and k-th smallest value of a
  per-column vector ``(k, n)`` over its columns.
* ``orthogonalize(fn, U, steps, dtype)``: ``fn(U, steps, dtype)`` for every matrix of the stack.
* ``state_shape(axes)``, ``wrap(view, axes, j)``, ``unwrap(t)``: the local shape of a state tensor
  whose dims are named by ``axes`` (``"m"`` rows, ``"n"`` columns, ``"1"`` a singleton), and the
  conversion between the local stacked buffer and the per-parameter entry kept in
  ``optimizer.state`` (a ``DTensor`` under FSDP2, so ``torch.distributed.checkpoint`` sees ordinary
  sharded state).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Union

import torch
from torch import Tensor

from ..orth import workspace
from ..orth.norms import safe_norm, widened_dtype

Dims = Union[int, tuple[int, ...]]


def _dims(dims: Dims) -> tuple[int, ...]:
    return (dims,) if isinstance(dims, int) else tuple(dims)


class Local:
    """Whole matrices on this process: world size 1, DDP (replicated), ZeRO owners.

    Args:
        shape: the global item shape of the stack (``(m, n)`` for matrices).
    """

    #: matrix dim (-2 rows, -1 columns) split across ranks; None when every matrix is whole here
    sharded_dim: int | None = None

    def __init__(self, shape: tuple[int, ...]):
        self.shape = tuple(shape)

    # -------------------------------------------------------------- reductions
    def sums(self, *requests: tuple[Tensor, Dims]) -> list[Tensor]:
        """``X.sum(dims)`` for each ``(X, dims)``."""
        return [X.sum(dim=_dims(d)) for X, d in requests]

    def norms(
        self, *requests: tuple[Tensor, Dims], safe: bool = True, dtype: torch.dtype | None = None,
    ) -> list[Tensor]:
        """``||X||_2`` over ``dims`` for each ``(X, dims)``, in ``dtype`` (default: each ``X``'s).

        ``safe``: without intermediate overflow (:func:`~muonlab.orth.norms.safe_norm`). ``safe=False``
        is a plain ``vector_norm`` for inputs that cannot overflow, such as an orthogonalized update.
        """
        if not safe:
            return [torch.linalg.vector_norm(X, dim=_dims(d), dtype=dtype) for X, d in requests]
        # Requests of one shape share one temporary (NAMO's gradient and momentum), taken from the
        # step's workspace: a fresh large temporary costs page faults on CPU.
        scratch: dict[tuple, Tensor | None] = {}
        for X, _ in requests:
            scratch.setdefault((X.shape, X.dtype, X.device), workspace.out_like(X, widened_dtype(X)))
        return [
            safe_norm(X, _dims(d), scratch=scratch[X.shape, X.dtype, X.device], dtype=dtype) for X, d in requests
        ]

    def nanmean_cols(self, x: Tensor) -> Tensor:
        """NaN-aware mean of a per-column vector ``(k, n)`` over its columns, shape ``(k, 1)``."""
        return torch.nanmean(x, dim=-1, keepdim=True)

    def kthvalue_cols(self, x: Tensor, rank: int) -> Tensor:
        """``rank``-th smallest entry (1-based) of a per-column vector ``(k, n)``, shape ``(k,)``."""
        return torch.kthvalue(x, rank, dim=-1).values

    # -------------------------------------------------------------- orthogonalization
    def orthogonalize(
        self, fn: Callable[..., Tensor], U: Tensor, steps: int, dtype: torch.dtype, wire: torch.dtype,
        norm: Tensor | None = None,
    ) -> Tensor:
        """``fn(U, steps, dtype)`` (``wire`` is the dtype results may travel in between ranks).

        ``norm``: ``||U||_F`` per matrix, ``(k,)``, already known; passed on as ``fn(..., norm=)`` for
        the matrices ``fn`` gets (only for an ``fn`` that takes it).
        """
        del wire
        return fn(U, steps, dtype) if norm is None else fn(U, steps, dtype, norm=norm)

    # -------------------------------------------------------------- state layout
    def state_shape(self, axes: str | None) -> tuple[int, ...]:
        """Local item shape of a state tensor with dims ``axes`` (None: the item shape)."""
        if axes is None:
            return self.shape
        size = {"1": 1}
        if len(self.shape) >= 2:
            size.update(m=self.shape[-2], n=self.shape[-1])
        return tuple(size[a] for a in axes)

    def wrap(self, view: Tensor, axes: str | None, j: int) -> Tensor:
        """The per-parameter state entry for parameter ``j`` of the stack (here: the view itself)."""
        del axes, j
        return view

    def unwrap(self, t: Tensor) -> Tensor:
        """The local tensor behind a per-parameter state entry."""
        return t


def check_axes(axes: str | None) -> None:
    """Reject a state layout that is not a string over ``"m"``, ``"n"``, ``"1"``."""
    if axes is not None and (not isinstance(axes, str) or set(axes) - set("mn1")):
        raise ValueError(f"state axes={axes!r}: expected None or a string over 'm', 'n', '1' (e.g. 'm1', 'n', '')")
