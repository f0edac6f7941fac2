"""Replace each matrix of the stack by (an approximation of) its polar factor."""

from __future__ import annotations

import torch

from .. import orth
from .base import Stack

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32, "float64": torch.float64}


def as_dtype(value: str | torch.dtype, device: torch.device | None = None) -> torch.dtype:
    """``"bfloat16"`` or ``torch.bfloat16`` -> ``torch.bfloat16`` (ValueError on anything else).

    ``"auto"`` is bf16 on accelerators (as in the reference implementations, 2-3x faster than fp32
    there) and fp32 on CPUs, where bf16 matmuls of small matrices measured far slower than fp32
    (docs/BENCHMARKS.md).
    """
    if isinstance(value, torch.dtype):
        return value
    if value == "auto":
        return torch.float32 if device is None or device.type == "cpu" else torch.bfloat16
    if value not in _DTYPES:
        raise ValueError(f"ns_dtype={value!r}: expected 'auto' or one of {sorted(_DTYPES)}")
    return _DTYPES[value]


def orthogonalize(stack: Stack) -> None:
    """``U <- Orth(U)`` with the group's ``orthogonalizer``, ``ns_steps`` and ``ns_dtype``.

    The iteration runs in ``ns_dtype`` (``"auto"``: bf16 on GPUs as in the reference
    implementations, fp32 on CPUs), except that fp64 stacks stay in fp64 so reference tests can be exact. The result is cast back
    to the compute dtype of the stack.
    """
    group = stack.group
    dtype = torch.float64 if stack.update.dtype == torch.float64 else as_dtype(group["ns_dtype"], stack.grad.device)
    fn = orth.resolve(group["orthogonalizer"])
    stack.update = fn(stack.update, group["ns_steps"], dtype).to(stack.grad.dtype)


def sign(stack: Stack) -> None:
    """``U <- sign(U)`` (AdaMuon's sign-stabilised pre-step; sign(0) = 0)."""
    stack.update = torch.sign(stack.update)
