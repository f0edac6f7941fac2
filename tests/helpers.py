"""Small helpers shared by the optimizer tests."""

from __future__ import annotations

import inspect
from typing import Any

import torch


def step(opt: torch.optim.Optimizer, loss: float | torch.Tensor = 1.0):
    """``opt.step()``, with ``loss=`` for optimizers whose step needs the loss (``needs_loss``: NGNM).

    Generic suites that set gradients by hand have no loss of their own; they pass a fixed positive
    value (any ``f > 0`` is a valid NGN input) or, where there is one, the problem's loss.
    """
    if getattr(opt, "needs_loss", False):
        return opt.step(loss=loss if isinstance(loss, torch.Tensor) else torch.tensor(float(loss)))
    return opt.step()


def with_svd(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` plus ``orthogonalizer="svd"`` (exact fp64 polar factor) for classes that take one (Pion has none)."""
    if "orthogonalizer" in inspect.signature(cls).parameters:
        return dict(kwargs, orthogonalizer="svd")
    return dict(kwargs)


def run_steps(opt: torch.optim.Optimizer, params: list[torch.Tensor], grads: list[list[torch.Tensor]]) -> list[list[torch.Tensor]]:
    """Feed a gradient sequence (one list per step); returns the parameters after every step."""
    history = []
    for gs in grads:
        for p, G in zip(params, gs):
            p.grad = G.clone()
        step(opt)
        history.append([p.detach().clone() for p in params])
    return history


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Norm-wise relative error ``||a - b|| / ||b||``."""
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def spectral_norm(X: torch.Tensor) -> float:
    """Spectral norm of the ``(out, rest)`` view."""
    return torch.linalg.matrix_norm(X.reshape(X.shape[0], -1), ord=2).item()


EXTREME_KINDS = ("zero", "zero-columns", "huge")


def extreme_gradient(shape: tuple[int, ...], kind: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """A gradient of ``shape`` that is all zero, zero in every other column and the first row, or +-1e30."""
    G = torch.randn(*shape, generator=generator)
    if kind == "zero":
        return torch.zeros(*shape)
    if kind == "zero-columns":
        G.view(shape[0], -1)[:, ::2] = 0
        G[0] = 0
        return G
    if kind == "huge":
        return G.sign() * 1e30
    raise ValueError(f"kind={kind!r}")
