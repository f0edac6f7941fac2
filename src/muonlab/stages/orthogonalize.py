"""Replace each matrix of the stack by (an approximation of) its polar factor."""

from __future__ import annotations

import torch

from .. import orth
from .base import Stack

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32, "float64": torch.float64}


def as_dtype(value: str | torch.dtype) -> torch.dtype:
    """``"bfloat16"`` or ``torch.bfloat16`` -> ``torch.bfloat16`` (ValueError on anything else)."""
    if isinstance(value, torch.dtype):
        return value
    if value not in _DTYPES:
        raise ValueError(f"ns_dtype={value!r}: expected one of {sorted(_DTYPES)}")
    return _DTYPES[value]


def orthogonalize(stack: Stack) -> None:
    """``U <- Orth(U)`` with the group's ``orthogonalizer``, ``ns_steps`` and ``ns_dtype``.

    The iteration runs in ``ns_dtype`` (bf16 by default, as in the reference implementations),
    except that fp64 stacks stay in fp64 so reference tests can be exact. The result is cast back
    to the compute dtype of the stack.
    """
    group = stack.group
    dtype = torch.float64 if stack.update.dtype == torch.float64 else as_dtype(group["ns_dtype"])
    fn = orth.resolve(group["orthogonalizer"])
    stack.update = fn(stack.update, group["ns_steps"], dtype).to(stack.grad.dtype)


def sign(stack: Stack) -> None:
    """``U <- sign(U)`` (AdaMuon's sign-stabilised pre-step; sign(0) = 0)."""
    stack.update = torch.sign(stack.update)
