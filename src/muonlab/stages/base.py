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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

import torch
from torch import Tensor

Scalar = Union[float, Tensor]


@dataclass
class Stack:
    """A bucket of ``k`` same-shape matrices travelling through a chain of stages.

    Attributes:
        grad: ``(k, m, n)`` raw gradients in the compute dtype (read only).
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
    _hp: dict[str, Tensor] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return self.grad.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one item of the stack (``(m, n)`` for matrices)."""
        return tuple(self.grad.shape[1:])

    def hp(self, name: str) -> Tensor:
        """Group hyperparameter ``name`` as a 0-D tensor on the stack's device (cached)."""
        if name not in self._hp:
            self._hp[name] = torch.full((), float(self.group[name]), dtype=self.grad.dtype, device=self.grad.device)
        return self._hp[name]

    def per_item(self, x: Tensor) -> Tensor:
        """View a ``(k,)`` tensor so it broadcasts over the item dims, e.g. ``(k, 1, 1)``."""
        return x.view(-1, *([1] * (self.grad.dim() - 1)))

    def buffer(self, key: str, shape: tuple[int, ...] | None = None, fill: float = 0.0) -> Tensor:
        """The stacked state tensor ``key`` with item shape ``shape`` (default: the item shape).

        Stages update it in place. The per-parameter state entries are *views* into this one
        stacked tensor, so in-place updates are the write-back. The stacked tensor is kept in
        ``cache`` between steps and reused as long as every parameter's entry is still the view
        made last time (a state_dict load, a new parameter or a different set of parameters with
        gradients rebuilds it from the per-parameter entries, ``fill`` where there is none yet).
        """
        if key in self.state:
            return self.state[key]
        shape = self.shape if shape is None else tuple(shape)
        cached = self.cache.get(key)
        if (
            cached is not None
            and len(cached[1]) == len(self.param_states)
            and all(st.get(key) is v for st, v in zip(self.param_states, cached[1]))
        ):
            buf = cached[0]
        else:
            opts = dict(dtype=self.grad.dtype, device=self.grad.device)
            parts = []
            for st, c in zip(self.param_states, self.counts):
                t = st.get(key)
                parts.append(torch.full((c, *shape), fill, **opts) if t is None else t.to(**opts).reshape(c, *shape))
            buf = torch.cat(parts)
            views, offset = [], 0
            for st, c, sq in zip(self.param_states, self.counts, self.squeeze):
                view = buf[offset] if sq else buf[offset : offset + c]
                st[key] = view
                views.append(view)
                offset += c
            self.cache[key] = (buf, views)
        self.state[key] = buf
        return buf
