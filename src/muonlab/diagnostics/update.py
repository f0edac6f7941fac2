"""The update an optimizer is about to apply, read without applying it.

``optimizer_update`` dry-runs ``optimizer.step()``: it snapshots the parameters, the gradients,
every per-parameter state tensor, the group hyperparameters and the RNG, takes the step, reads
``u = θ_before − θ_after`` (so the step is ``θ − u``, learning rate, weight decay, Newton–Schulz
error and the AdamW-routed parameters included, not the raw gradient), and restores everything
bitwise — tensors in place, so the objects the optimizer holds keep their identity. A later real
``step()`` therefore applies exactly ``u``. Works for any ``torch.optim.Optimizer``.

References:
    Wang et al., "Why Muon Outperforms Adam: A Curvature Perspective", arXiv 2606.04662 (2026),
    §3 (the update ``Z_t`` includes the learning rate).
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
from torch import nn

from muonlab.diagnostics._params import TensorDict, trainable


def _restore_value(current: Any, saved: Any, original: Any) -> Any:
    """The object to put back: the original tensor refilled with the saved values when possible."""
    if isinstance(original, torch.Tensor):
        if isinstance(saved, torch.Tensor) and original.shape == saved.shape and original.dtype == saved.dtype:
            with torch.no_grad():
                original.copy_(saved)
            return original
        return saved
    return saved  # deep copy: containers mutated in place are replaced wholesale


def _snapshot_state(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    shallow = {p: dict(s) for p, s in optimizer.state.items()}
    deep = {p: copy.deepcopy(s) for p, s in optimizer.state.items()}
    return shallow, deep


def _restore_state(optimizer: torch.optim.Optimizer, shallow: dict, deep: dict) -> None:
    for p in list(optimizer.state.keys()):
        if p not in shallow:
            del optimizer.state[p]  # state created lazily by the dry-run step
            continue
        cur = optimizer.state[p]
        restored = {k: _restore_value(cur.get(k), deep[p][k], v) for k, v in shallow[p].items()}
        cur.clear()
        cur.update(restored)
    for p, s in shallow.items():  # state the step removed (unusual) comes back too
        if p not in optimizer.state:
            optimizer.state[p] = {k: _restore_value(None, deep[p][k], v) for k, v in s.items()}


def _snapshot_groups(optimizer: torch.optim.Optimizer) -> list[tuple[dict, dict]]:
    out = []
    for g in optimizer.param_groups:
        hyper = {k: v for k, v in g.items() if k != "params"}
        out.append((hyper, copy.deepcopy(hyper)))
    return out


def _restore_groups(optimizer: torch.optim.Optimizer, saved: list[tuple[dict, dict]]) -> None:
    for g, (shallow, deep) in zip(optimizer.param_groups, saved):
        for k in [k for k in g if k != "params" and k not in shallow]:
            del g[k]
        for k, v in shallow.items():
            g[k] = _restore_value(g.get(k), deep[k], v)


def optimizer_update(
    optimizer: torch.optim.Optimizer, model: nn.Module, closure: Callable[[], Any] | None = None, *,
    as_dict: bool = False,
) -> list[torch.Tensor] | TensorDict:
    """The update ``u`` such that ``optimizer.step()`` would set ``θ ← θ − u``, without stepping.

    Call it where you would call ``optimizer.step()`` (after ``backward``). Parameters, gradients,
    optimizer state (values and tensor identities), group hyperparameters and the torch RNG are
    bitwise unchanged afterwards.

    Args:
        optimizer: any ``torch.optim.Optimizer``.
        model: the model whose trainable parameters define the layout of ``u``; parameters the
            optimizer does not own get ``u = 0``.
        closure: passed to ``optimizer.step`` (for optimizers that need one).
        as_dict: return ``{name: tensor}`` instead of a list aligned with the trainable parameters.

    Returns:
        ``u`` in the parameters' dtype.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    owned = [p for g in optimizer.param_groups for p in g["params"]]
    before = [p.detach().clone() for p in owned]
    grads = [None if p.grad is None else p.grad.detach().clone() for p in owned]
    state = _snapshot_state(optimizer)
    groups = _snapshot_groups(optimizer)
    rng = torch.random.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    after: list[torch.Tensor] = []
    try:
        optimizer.step(closure) if closure is not None else optimizer.step()
        after = [p.detach().clone() for p in owned]
    finally:
        with torch.no_grad():
            for p, b, g in zip(owned, before, grads):
                p.copy_(b)
                if g is None:
                    p.grad = None
                elif p.grad is not None and p.grad.shape == g.shape:
                    p.grad.copy_(g)
                else:
                    p.grad = g
        _restore_state(optimizer, *state)
        _restore_groups(optimizer, groups)
        torch.random.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
    delta = {id(p): b - a for p, b, a in zip(owned, before, after)}
    u = {n: delta.get(id(p), torch.zeros_like(p.detach())) for n, p in trainable(model).items()}
    return u if as_dict else list(u.values())
