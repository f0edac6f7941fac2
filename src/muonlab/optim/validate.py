"""Constructor checks: each raises ``ValueError`` naming the argument and its value.

What counts as a number: a real ``int`` / ``float`` (or ``numbers.Real``, e.g. a NumPy scalar) or a
0-D real floating-point tensor; never a ``bool`` (almost always a positional mix-up), a string, a
complex number, NaN or an infinity, and never larger in magnitude than :data:`MAX_MAGNITUDE`.
Integers (``ns_steps``, periods) must be real ``int`` s; ``ns_steps`` is at most :data:`MAX_NS_STEPS`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch

#: largest magnitude accepted for a real hyperparameter. Beyond it a value is a unit mistake, not a
#: setting, and the fp32 arithmetic of the step overflows (lr^2 in TrasMuon's gate average, v0^2 in
#: AdaGO's accumulator, lr * update in the final write).
MAX_MAGNITUDE = 1e10
#: most orthogonalizer iterations accepted: the shipped schedules converge in 5-10 steps (later
#: steps reuse the last coefficients and change nothing) and each one costs a few matmuls.
MAX_NS_STEPS = 100
#: largest step count or period accepted (``warmup_steps``, ``col_gate_every``, ...): compared with
#: fp32 step counters on the device, which are exact integers only up to 2**24.
MAX_STEPS = 2**24
#: compute dtypes an orthogonalizer can run in
NS_DTYPES = (torch.bfloat16, torch.float16, torch.float32, torch.float64)


def _number(name: str, value: Any) -> float:
    if isinstance(value, torch.Tensor):
        if value.dim() != 0 or not value.is_floating_point():
            raise ValueError(f"{name}={value!r}: expected a number (a 0-D floating-point tensor at most)")
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}={value!r}: expected a number, got {type(value).__name__}")
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"{name}={value!r}: expected a finite number")
    if abs(x) > MAX_MAGNITUDE:
        raise ValueError(f"{name}={value!r}: expected a number of magnitude <= {MAX_MAGNITUDE:g}")
    return x


def positive(name: str, value: Any) -> None:
    """``value > 0``."""
    if not _number(name, value) > 0:
        raise ValueError(f"{name}={value!r}: expected > 0")


def divisor_eps(name: str, value: Any) -> None:
    """An ``eps`` added to ``sqrt(v)`` before dividing: > 0 also in fp32, so a zero gradient gives 0 / eps, not 0 / 0."""
    x = _number(name, value)
    if not (x > 0 and float(torch.tensor(x, dtype=torch.float32)) > 0):
        raise ValueError(f"{name}={value!r}: expected > 0 (and not 0 in float32: at least ~1e-45)")


def positive_or_zero(name: str, value: Any) -> None:
    """``value >= 0``."""
    if not _number(name, value) >= 0:
        raise ValueError(f"{name}={value!r}: expected >= 0")


def unit_interval(name: str, value: Any, *, closed_right: bool = False) -> None:
    """``0 <= value < 1`` (``<= 1`` with ``closed_right``)."""
    x = _number(name, value)
    # Open on the right in fp32 too: the step computes in fp32, where 1 - 1e-16 is 1 (an EMA that never
    # moves, a bias correction 1 - beta^t of 0).
    ok = 0 <= x <= 1 if closed_right else 0 <= x and float(torch.tensor(x, dtype=torch.float32)) < 1
    if not ok:
        raise ValueError(f"{name}={value!r}: expected in [0, 1{']' if closed_right else ') (< 1 in float32)'}")


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


def integer(name: str, value: Any, minimum: int = 0, maximum: int = MAX_STEPS) -> None:
    """An ``int`` in ``[minimum, maximum]`` (not a ``bool``, not a float such as ``5.0``)."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ValueError(f"{name}={value!r}: expected an integer in [{minimum}, {maximum}]")


def positive_int(name: str, value: Any, maximum: int = MAX_STEPS) -> None:
    """An ``int`` in ``[1, maximum]``."""
    integer(name, value, 1, maximum)


def decoupled_decay(group: dict[str, Any], lr_key: str = "lr") -> None:
    """``lr * weight_decay <= 1``: the decay factor ``1 - lr * weight_decay`` stays in ``[0, 1]``.

    A larger product flips the sign of the weights at every step (and past 2 makes them grow
    geometrically until they overflow); no schedule wants it.
    """
    lr, wd = group[lr_key], group["weight_decay"]
    if _number(lr_key, lr) * _number("weight_decay", wd) > 1:
        raise ValueError(
            f"{lr_key}={lr!r}, weight_decay={wd!r}: expected {lr_key} * weight_decay <= 1 (the decay factor "
            f"1 - {lr_key} * weight_decay must not be negative)"
        )


def ns_dtype(value: Any) -> None:
    """``"auto"``, a dtype name or a floating ``torch.dtype`` an orthogonalizer can compute in."""
    from ..stages import as_dtype

    if isinstance(value, torch.dtype):
        if value not in NS_DTYPES:
            raise ValueError(f"ns_dtype={value!r}: expected 'auto' or one of {NS_DTYPES}")
    elif not isinstance(value, str):
        raise ValueError(f"ns_dtype={value!r}: expected 'auto', a dtype name or a floating torch.dtype")
    else:
        as_dtype(value)


#: how a 2-D weight stores its matrix: ``"out_in"`` (nn.Linear, default) or ``"in_out"``
#: (transformers' Conv1D: ``y = x @ W``), which is orthogonalized and scaled as ``W^T``.
LAYOUTS = ("out_in", "in_out")


def common_orthogonal(group: dict[str, Any]) -> None:
    """Checks shared by every orthogonalized preset (only for the keys the group has)."""
    # Imported here: validate is used by the shell, which sits above stages/orth.
    from .. import orth
    from ..stages import ADJUST_LR

    positive_or_zero("lr", group["lr"])
    positive_or_zero("weight_decay", group["weight_decay"])
    if "momentum" in group:
        unit_interval("momentum", group["momentum"])
    for key in ("nesterov", "batch_3d"):
        if key in group:
            boolean(key, group[key])
    if "ns_steps" in group:
        positive_int("ns_steps", group["ns_steps"], MAX_NS_STEPS)
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
        ns_dtype(group["ns_dtype"])
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
