"""The unit of work every stage sees: a stack of same-shape matrices with named state.

The shell (`muonlab.optim.shell`) buckets the parameters of a group by the shape of their matrix
view, stacks their gradients into one ``(k, m, n)`` tensor and hands a :class:`Stack` to each stage
of the chain in turn. A stage reads ``stack.update`` (and, if it needs them, ``stack.grad``, the
group hyperparameters and its own state), and *replaces* ``stack.update`` with a new tensor; it
never writes into a tensor it did not create, so the raw gradient and other stages' state stay
intact. Stages that change the step size or the weight decay do so through ``stack.step_size`` and
``stack.decay``; the shell finally applies

    W <- W * decay - step_size * update

to every matrix of the stack. Both factors broadcast against ``(k, m, n)``.

Statistics that span a matrix (norms, row/column sums, the median of column energies) go through
``stack.sums`` / ``stack.norms`` / ``stack.nanmean_cols`` / ``stack.kthvalue_cols``, and state is
declared by its axes (``stack.buffer("normuon.v", "m1")``), so the same stage runs unchanged when the
matrices are sharded across ranks (``muonlab.stages.context``).

A skipped step (``nonfinite="skip"``: a gradient holds NaN or Inf, decided on the device) runs the
chain on a zero gradient with ``stack.gate`` False, and must leave every state value unchanged. A
stage either updates a buffer through *gated coefficients* (``buffer(..., gated=True)`` with
:meth:`Stack.keep` / :meth:`Stack.take`: ``M.lerp_(g, stack.take(1 - beta, M))`` moves M by
``0 * (g - M)`` on a skipped step), which costs nothing extra, or leaves it to the default: the
buffer is snapshotted when taken and put back after the chain (a clone and a ``where`` per buffer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Union

import torch
from torch import Tensor

from .context import Dims, Local, check_axes

Scalar = Union[float, Tensor]


@dataclass
class Stack:
    """A bucket of ``k`` same-shape matrices travelling through a chain of stages.

    Attributes:
        grad: ``(k, m, n)`` raw gradients in the compute dtype (read only); under FSDP2 the local
            shards, e.g. ``(k, m_local, n)``.
        update: the current update, replaced by each stage (starts as ``grad``).
        group: the param group dict; hyperparameters are read from it every step.
        step: ``(k,)`` step count of each matrix *after* this step's increment (1 on the first
            step), in the compute dtype so bias corrections stay on the device.
        param_states: the per-parameter state dicts behind the stack, in stack order; their
            tensors are views into the stacked buffers (see :meth:`buffer`).
        counts: how many matrices of the stack each parameter contributes (1, or ``E`` for a
            3-D parameter treated as a batch of ``E`` matrices).
        step_size: multiplier of the update in the final write (default: the group lr).
        decay: multiplicative factor on the weights in the final write (default: 1).
        param_shapes: original shapes of the parameters behind the stack, in stack order (for
            rules that read more than the matrix view, e.g. NAMO's ``W.shape[:2]`` for conv).
        weights: ``(k, m, n)`` copy of the matrices themselves in the compute dtype, for presets
            whose update reads ``W`` (Pion's multiplicative rotation; the shell fills it only when
            the optimizer class sets ``needs_weights``), else None.
        ctx: where the matrices live (:class:`~muonlab.stages.context.Local` by default); global
            statistics and the orthogonalizer go through it.
        gate: 0-D bool tensor, False when this step is skipped (non-finite gradients): ``grad`` is
            then zero, gated buffers are left unchanged by their own updates, every other buffer is
            restored after the chain, and the final write is the identity. None: no gate.
        fold_gate: whether gated buffers use gated coefficients (True) or are snapshotted like the
            rest (False: the shell's choice for compiled chains; inductor's CPU backend, torch
            2.13-2.14, crashes compiling an in-place EMA with a 0-D tensor weight on a cached
            buffer, KeyError 'bufN' in outer-loop fusion, pytorch/pytorch#196570, and a compiled
            graph fuses the snapshot's where() into its loops anyway). Same values either way.
        memo: small tensors that every stack of a step computes alike (0-D hyperparameters, gated
            coefficients), shared by the step's stacks: the shell passes one fresh dict per step
            (eager only), which saves each later bucket ~4 dispatches per coefficient. None: each
            stack keeps its own.
    """

    grad: Tensor
    update: Tensor
    group: dict[str, Any]
    step: Tensor | None
    param_states: list[dict[str, Any]]
    counts: list[int]
    squeeze: list[bool]
    step_size: Scalar = 0.0
    decay: Scalar = 1.0
    state: dict[str, Tensor] = field(default_factory=dict)
    cache: dict[str, tuple[Tensor, list[Tensor]]] = field(default_factory=dict)
    param_shapes: list[tuple[int, ...]] = field(default_factory=list)
    weights: Tensor | None = None
    ctx: Local | None = None
    gate: Tensor | None = None
    fold_gate: bool = True
    memo: dict[tuple, Tensor] | None = None
    _own_memo: dict[tuple, Tensor] = field(default_factory=dict)
    _snapshots: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    _update_norm: tuple[Tensor, Tensor] | None = None

    def __post_init__(self) -> None:
        if self.ctx is None:
            self.ctx = Local(tuple(self.grad.shape[1:]))

    @property
    def k(self) -> int:
        return self.grad.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        """Global shape of one item of the stack (``(m, n)`` for matrices), also when sharded."""
        return self.ctx.shape

    def sums(self, *requests: tuple[Tensor, Dims]) -> list[Tensor]:
        """Global ``X.sum(dims)`` for each ``(X, dims)`` (one collective for all, when sharded)."""
        return self.ctx.sums(*requests)

    def norms(
        self, *requests: tuple[Tensor, Dims], safe: bool = True, dtype: torch.dtype | None = None,
    ) -> list[Tensor]:
        """Global ``||X||_2`` over dims for each ``(X, dims)`` (one collective for all, when sharded).

        Overflow-safe unless ``safe=False`` (for inputs of order 1, e.g. an orthogonalized update).
        ``dtype``: of the results (default: each ``X``'s), e.g. :func:`stat_dtype` for statistics.
        """
        return self.ctx.norms(*requests, safe=safe, dtype=dtype)

    def remember_norm(self, norm: Tensor) -> None:
        """Record ``||update||_F`` per matrix (``(k,)``, global when sharded) for the orthogonalizer.

        A stage that has computed it anyway (NAMO's statistics) saves the normalization's own passes
        over the update. The record holds only while ``update`` is the tensor it was taken of: a stage
        that replaces the update drops it.
        """
        self._update_norm = (self.update, norm)

    def known_norm(self) -> Tensor | None:
        """``||update||_F`` per matrix if a stage recorded it for the current update, else None."""
        if self._update_norm is not None and self._update_norm[0] is self.update:
            return self._update_norm[1]
        return None

    def nanmean_cols(self, x: Tensor) -> Tensor:
        """NaN-aware mean over the columns of a per-column vector ``(k, n)``, shape ``(k, 1)``."""
        return self.ctx.nanmean_cols(x)

    def kthvalue_cols(self, x: Tensor, rank: int) -> Tensor:
        """``rank``-th smallest (1-based) entry over the columns of a per-column vector, ``(k,)``."""
        return self.ctx.kthvalue_cols(x, rank)

    def hp(self, name: str) -> Tensor:
        """Group hyperparameter ``name`` as a 0-D tensor on the stack's device (cached for the step)."""
        # zeros().add_(value), not torch.full((), float(value)): under torch.compile a Python float
        # that enters tensor arithmetic becomes a graph input, while torch.full's fill value is a
        # constant guarded by value, so an LR scheduler forced a recompile at every step (until
        # torch._dynamo's recompile_limit). Eager results are bitwise the same.
        # The shared memo serves several groups; a stack's own serves one (and under torch.compile an
        # id() in the key would be a guard on the group object: a recompile per new group dict).
        key = ("hp", name, self.grad.dtype, self.grad.device) + (() if self.memo is None else (id(self.group),))
        return self._memoized(key, lambda: self._scalar(self.group[name], self.grad))

    def _memoized(self, key: tuple, make: Callable[[], Tensor]) -> Tensor:
        """``make()``, computed once per step (``memo``) or per stack; callers never write into it."""
        memo = self._own_memo if self.memo is None else self.memo
        value = memo.get(key)
        if value is None:
            value = memo[key] = make()
        return value

    def per_item(self, x: Tensor) -> Tensor:
        """View a ``(k,)`` tensor so it broadcasts over the item dims, e.g. ``(k, 1, 1)``."""
        return x.view(self.k, *([1] * (self.grad.dim() - 1)))

    def buffer(
        self, key: str, axes: str | None = None, fill: float = 0.0, dtype: torch.dtype | None = None,
        gated: bool = False,
    ) -> Tensor:
        """The stacked state tensor ``key`` whose item dims are named by ``axes``.

        ``axes`` is a string over ``"m"`` (rows), ``"n"`` (columns) and ``"1"`` (a singleton):
        ``"m1"`` is one value per row kept as ``(m, 1)``, ``"n"`` one per column, ``""`` one per
        matrix; None (default) is the item shape itself. The names let a sharded stack give the
        state the local size and the parameter's placement.

        Stages update it in place. The per-parameter state entries are *views* into this one
        stacked tensor, so in-place updates are the write-back. The stacked tensor is kept in
        ``cache`` between steps and reused as long as every parameter's entry is still the view
        made last time (a state_dict load, a new parameter or a different set of parameters with
        gradients rebuilds it from the per-parameter entries, ``fill`` where there is none yet).

        ``dtype`` (default: the gradients' compute dtype) is for statistics that need more range,
        e.g. :func:`stat_dtype`'s fp64 for EMAs of squared norms.

        ``gated=True`` declares that the caller updates the buffer only in ways a skipped step
        leaves unchanged (coefficients from :meth:`keep` / :meth:`take`, or adding a term that is
        zero when ``grad`` is), so no snapshot is taken for it. Values are then kept exactly; only
        the sign of an exact zero may change (``-0 + 0 = +0``). The first call for a key decides.
        """
        if key in self.state:
            return self.state[key]
        check_axes(axes)
        shape = self.ctx.state_shape(axes)
        cached = self.cache.get(key)
        if (
            cached is not None
            and len(cached[1]) == len(self.param_states)
            and all(st.get(key) is v for st, v in zip(self.param_states, cached[1]))
        ):
            buf = cached[0]
        else:
            opts = dict(dtype=dtype or self.grad.dtype, device=self.grad.device)
            parts = []
            for st, c in zip(self.param_states, self.counts):
                t = st.get(key)
                part = None if t is None else self.ctx.unwrap(t).to(**opts).reshape(c, *shape)
                parts.append(torch.full((c, *shape), fill, **opts) if part is None else part)
            buf = torch.cat(parts)
            views, offset = [], 0
            for j, (st, c, sq) in enumerate(zip(self.param_states, self.counts, self.squeeze)):
                view = self.ctx.wrap(buf[offset] if sq else buf[offset : offset + c], axes, j)
                st[key] = view
                views.append(view)
                offset += c
            self.cache[key] = (buf, views)
        self.state[key] = buf
        if self.gate is not None and not (gated and self._folds_gate()):
            self._snapshots.append((buf, buf.clone()))
        return buf

    def _folds_gate(self) -> bool:
        return self.gate is not None and self.fold_gate

    def keep(self, beta: float, like: Tensor) -> Scalar:
        """``beta`` on a step that runs, 1 on a skipped one, in ``like``'s dtype: the decay factor of a gated EMA.

        Without a gate (``nonfinite="propagate"`` / ``"raise"``) or with ``fold_gate`` off, the float
        itself, so the kernels see the same scalar either way (a 0-D tensor of ``like``'s dtype holds
        the same value).
        """
        if not self._folds_gate():
            return beta
        return self._memoized(("keep", beta, like.dtype, like.device), lambda: torch.where(self.gate, self._scalar(beta, like), 1.0))

    def take(self, weight: float, like: Tensor) -> Scalar:
        """``weight`` on a step that runs, 0 on a skipped one: the weight of a gated EMA's new term."""
        if not self._folds_gate():
            return weight
        return self._memoized(("take", weight, like.dtype, like.device), lambda: torch.where(self.gate, self._scalar(weight, like), 0.0))

    @staticmethod
    def _scalar(value: float, like: Tensor) -> Tensor:
        # zeros().add_(value) rounds value once to like's dtype, as a Python scalar operand of a kernel
        # on like is rounded: the gated coefficient equals the float the ungated code passes.
        return torch.zeros((), dtype=like.dtype, device=like.device).add_(value)

    def restore_if_skipped(self) -> None:
        """Put back every state buffer the chain touched if the step is skipped (no host sync)."""
        for buf, before in self._snapshots:
            torch.where(self.gate, buf, before, out=buf)
        self._snapshots.clear()


def stat_dtype(device: torch.device) -> torch.dtype:
    """The dtype of per-matrix / per-column statistics of squared norms (NAMO's ``v``, TrasMuon's energies).

    fp64: a squared fp32 norm overflows fp32 above ~1.8e19 but not fp64, and the statistics are a few
    numbers per matrix, so the extra precision costs nothing measurable. fp32 on devices without fp64
    (Apple MPS), where squares of norms above ~1.8e19 saturate instead.
    """
    return torch.float32 if device.type == "mps" else torch.float64
