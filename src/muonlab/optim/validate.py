"""Constructor checks: each raises ``ValueError`` naming the argument and its value."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def _number(name: str, value: Any) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}: expected a number") from None
    if math.isnan(x):
        raise ValueError(f"{name}={value!r}: expected a number, got NaN")
    return x


def positive(name: str, value: Any) -> None:
    """``value > 0``."""
    if not _number(name, value) > 0:
        raise ValueError(f"{name}={value!r}: expected > 0")


def positive_or_zero(name: str, value: Any) -> None:
    """``value >= 0``."""
    if not _number(name, value) >= 0:
        raise ValueError(f"{name}={value!r}: expected >= 0")


def unit_interval(name: str, value: Any, *, closed_right: bool = False) -> None:
    """``0 <= value < 1`` (``<= 1`` with ``closed_right``)."""
    x = _number(name, value)
    ok = 0 <= x <= 1 if closed_right else 0 <= x < 1
    if not ok:
        raise ValueError(f"{name}={value!r}: expected in [0, 1{']' if closed_right else ')'}")


def betas(name: str, value: Any) -> None:
    """A pair of coefficients in ``[0, 1)``."""
    if not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{name}={value!r}: expected a pair (beta1, beta2)")
    for b in value:
        try:
            unit_interval(name, b)
        except ValueError:
            raise ValueError(f"{name}={value!r}: expected two coefficients in [0, 1)") from None


def one_of(name: str, value: Any, options: Sequence[Any]) -> None:
    """``value in options``."""
    if value not in options:
        raise ValueError(f"{name}={value!r}: expected one of {tuple(options)}")


def boolean(name: str, value: Any) -> None:
    """A real ``bool``."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r}: expected True or False")


def positive_int(name: str, value: Any) -> None:
    """An ``int >= 1``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}: expected an integer >= 1")


#: how a 2-D weight stores its matrix: ``"out_in"`` (nn.Linear, default) or ``"in_out"``
#: (transformers' Conv1D: ``y = x @ W``), which is orthogonalized and scaled as ``W^T``.
LAYOUTS = ("out_in", "in_out")


def common_orthogonal(group: dict[str, Any]) -> None:
    """Checks shared by every orthogonalized preset (only for the keys the group has)."""
    # Imported here: validate is used by the shell, which sits above stages/orth.
    from .. import orth
    from ..stages import ADJUST_LR, as_dtype

    positive_or_zero("lr", group["lr"])
    positive_or_zero("weight_decay", group["weight_decay"])
    if "momentum" in group:
        unit_interval("momentum", group["momentum"])
    for key in ("nesterov", "batch_3d"):
        if key in group:
            boolean(key, group[key])
    if "ns_steps" in group:
        positive_int("ns_steps", group["ns_steps"])
    if "adjust_lr" in group:
        one_of("adjust_lr", group["adjust_lr"], ADJUST_LR)
    if "layout" in group:
        one_of("layout", group["layout"], LAYOUTS)
        if group["layout"] == "in_out":
            for p in group.get("params", []):
                if getattr(p, "dim", lambda: 2)() != 2:
                    raise ValueError(f"layout='in_out' needs 2-D parameters (in, out), got shape {tuple(p.shape)}")
    if "momentum_form" in group:
        one_of("momentum_form", group["momentum_form"], ("ema", "sum"))
    if "ns_dtype" in group:
        as_dtype(group["ns_dtype"])
    if "orthogonalizer" in group:
        spec = group["orthogonalizer"]
        try:
            orth.resolve(spec)
        except (TypeError, ValueError):
            raise ValueError(f"orthogonalizer={spec!r}: expected a callable or one of {orth.available()}") from None


def no_copied_kwargs(group: dict[str, Any], defaults: dict[str, Any], adamw_defaults: dict[str, Any]) -> None:
    """Refuse an AdamW group into which a wrapper copied the orthogonal hyperparameters.

    ``ZeroRedundancyOptimizer(groups, optimizer_class=NAMO, lr=..., adamw_lr=...)`` fills every group
    with all its keyword arguments before the groups reach the optimizer: the AdamW groups then
    carry ``adamw_lr`` *and* the orthogonal ``lr`` and would silently train at the wrong rate.
    """
    if not any(k.startswith("adamw_") for k in group):
        return
    copied = [
        k for k in ("lr", "weight_decay", "eps", "betas")
        if k in group and k in defaults and group[k] == defaults[k] and group[k] != adamw_defaults[k]
    ]
    if copied:
        raise ValueError(
            f"an AdamW param group carries the orthogonal group's {', '.join(f'{k}={group[k]!r}' for k in copied)} "
            "next to 'adamw_*' keys: a wrapper (e.g. ZeroRedundancyOptimizer) copied the optimizer's keyword "
            "arguments into every group. Set each group's hyperparameters in the groups, e.g. "
            "muonlab.param_groups(model, lr=..., weight_decay=..., adamw_lr=..., adamw_weight_decay=...), and pass "
            "the wrapper no lr/weight_decay/eps/betas"
        )
