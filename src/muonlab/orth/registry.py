"""Name -> orthogonalizer registry with one calling convention ``f(X, steps, dtype)``.

The optimizer stages call every orthogonalizer the same way, so registry entries
wrap the kernels with their schedule fixed, and user callables that take only ``X``
are wrapped to ignore ``steps`` and ``dtype``.

References:
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import Tensor

from muonlab.orth.aol import aol_newton_schulz
from muonlab.orth.auto import auto_orthogonalize
from muonlab.orth.gram import default_restarts, gram_newton_schulz
from muonlab.orth.polynomial import newton_schulz
from muonlab.orth.svd import svd_polar

Orthogonalizer = Callable[[Tensor, int, "torch.dtype | None"], Tensor]


def _ns(schedule: str) -> Orthogonalizer:
    def orthogonalize(
        X: Tensor, steps: int = 5, dtype: torch.dtype | None = None, eps: float = 1e-7, *, norm: Tensor | None = None,
    ) -> Tensor:
        return newton_schulz(X, schedule, steps, dtype=dtype, eps=eps, norm=norm)

    orthogonalize.__name__ = f"newton_schulz_{schedule}"
    orthogonalize.__doc__ = (
        f"newton_schulz(X, schedule={schedule!r}, steps, dtype=dtype, eps=eps, norm=norm) (eps, norm: the normalization's)."
    )
    return orthogonalize


def _gram(X: Tensor, steps: int = 5, dtype: torch.dtype | None = None, *, norm: Tensor | None = None) -> Tensor:
    """gram_newton_schulz(X, 'you', steps, restarts=default_restarts(steps), dtype=dtype, norm=norm)."""
    return gram_newton_schulz(X, "you", steps, restarts=default_restarts(steps), dtype=dtype, norm=norm)


def _aol(X: Tensor, steps: int = 5, dtype: torch.dtype | None = None) -> Tensor:
    """aol_newton_schulz(X, steps, dtype=dtype): Turbo-Muon (the last ``steps`` of You's list; use 4 steps)."""
    return aol_newton_schulz(X, steps, dtype=dtype)


def _auto(schedule: str) -> Orthogonalizer:
    def orthogonalize(
        X: Tensor, steps: int = 5, dtype: torch.dtype | None = None, eps: float = 1e-7, *, norm: Tensor | None = None,
    ) -> Tensor:
        return auto_orthogonalize(X, steps, dtype, eps, schedule, norm=norm)

    orthogonalize.__name__ = "auto" if schedule == "jordan" else f"auto_{schedule}"
    orthogonalize.__doc__ = f"auto_orthogonalize(X, steps, dtype, eps, schedule={schedule!r}): NS or Gram-NS per shape."
    return orthogonalize


def _svd(X: Tensor, steps: int = 5, dtype: torch.dtype | None = None) -> Tensor:
    """svd_polar(X); ``steps`` and ``dtype`` are ignored (the SVD runs in fp32/fp64)."""
    del steps, dtype
    return svd_polar(X)


_REGISTRY: dict[str, Orthogonalizer] = {
    "newton_schulz": _ns("jordan"),  # the Muon default: Jordan's quintic
    "jordan": _ns("jordan"),
    "you": _ns("you"),
    "polar_express": _ns("polar_express"),
    "polar_express_dion": _ns("polar_express_dion"),
    "cubic": _ns("cubic"),
    "gram_newton_schulz": _gram,
    "turbo_muon": _aol,  # AOL-preconditioned NS (Boissin et al., arXiv 2512.04632)
    "aol": _aol,
    "svd": _svd,
    # per shape, NS or Gram-NS of the same polynomial, whichever has fewer FLOPs (orth/auto.py):
    "auto": _auto("jordan"),  # the presets' default: Jordan's quintic, Gram form only where validated
    "auto_you": _auto("you"),
}


def available() -> list[str]:
    """Return the registered orthogonalizer names, sorted."""
    return sorted(_REGISTRY)


def _positional_capacity(fn: Callable) -> int | None:
    """Number of positional args ``fn`` accepts (None = unbounded or not inspectable)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    count = 0
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            return None
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            count += 1
    return count


def _required_positional(fn: Callable) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    return sum(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty for p in params
    )


def resolve(spec: str | Callable) -> Orthogonalizer:
    """Return an orthogonalizer ``f(X, steps, dtype) -> Tensor`` for a name or a callable.

    Args:
        spec: a registry name (see :func:`available`; case-insensitive, '-' same as '_')
            or a callable. A callable that accepts a single positional argument is
            wrapped so that ``steps`` and ``dtype`` are ignored; otherwise it must accept
            ``(X, steps, dtype)`` positionally and is returned unchanged. Inside an optimizer
            step on CPU, ``X`` may be workspace scratch (:mod:`muonlab.orth.workspace`): a callable
            that keeps it beyond the call must clone it.

    Returns:
        The orthogonalizer.

    Raises:
        ValueError: unknown name, or a callable with an unusable signature.
    """
    if isinstance(spec, str):
        key = spec.lower().replace("-", "_")
        if key not in _REGISTRY:
            raise ValueError(f"orthogonalizer spec must be one of {available()} or a callable, got {spec!r}")
        return _REGISTRY[key]
    if not callable(spec):
        raise ValueError(f"orthogonalizer spec must be a name or a callable, got {spec!r}")
    capacity = _positional_capacity(spec)
    if capacity is None or capacity >= 3:
        if _required_positional(spec) > 3:
            raise ValueError(f"orthogonalizer callable must accept (X, steps, dtype), got {spec!r}")
        return spec
    if capacity == 1 or _required_positional(spec) == 1:
        user = spec

        def wrapped(X: Tensor, steps: int = 5, dtype: torch.dtype | None = None) -> Tensor:
            del steps, dtype  # the user callable only takes X
            return user(X)

        wrapped.__name__ = getattr(user, "__name__", "user_orthogonalizer")
        wrapped.__wrapped__ = user  # type: ignore[attr-defined]
        return wrapped
    raise ValueError(f"orthogonalizer callable must accept (X) or (X, steps, dtype), got {spec!r}")
