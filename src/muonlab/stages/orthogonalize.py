"""Replace each matrix of the stack by (an approximation of) its polar factor."""

from __future__ import annotations

import functools
import inspect

import torch

from .. import orth
from .base import Stack

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32, "float64": torch.float64}


@torch.compiler.assume_constant_result  # a fixed property of the machine: a constant in compiled steps
def native_bf16(device_type: str) -> bool:
    """Whether matmuls on this kind of device have native bf16 support (a host-side query, cached)."""
    return _native_bf16(device_type)


@functools.lru_cache(maxsize=None)
def _native_bf16(device_type: str) -> bool:
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        try:  # oneDNN's check for AVX512-BF16 / AMX; private, hence the guard
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def as_dtype(value: str | torch.dtype, device: torch.device | None = None) -> torch.dtype:
    """``"bfloat16"`` or ``torch.bfloat16`` -> ``torch.bfloat16`` (ValueError on anything else).

    ``"auto"`` is bf16 where the device multiplies bf16 natively (GPUs; CPUs with AVX512-BF16 or
    AMX), as in the reference implementations, and fp32 elsewhere, where bf16 is emulated. Measured
    on a 2-core AMX CPU (docs/BENCHMARKS.md): bf16 Newton–Schulz is 1.5-3x faster than fp32 from
    width 128 up, slightly slower at width 64.
    """
    if isinstance(value, torch.dtype):
        return value
    if value == "auto":
        return torch.bfloat16 if native_bf16(device.type if device is not None else "cpu") else torch.float32
    if value not in _DTYPES:
        raise ValueError(f"ns_dtype={value!r}: expected 'auto' or one of {sorted(_DTYPES)}")
    return _DTYPES[value]


@torch.compiler.assume_constant_result  # a property of the function object, fixed while it lives
def _takes_eps(fn: object) -> bool:
    return _signature_has(fn, "eps")


@functools.lru_cache(maxsize=64)  # bounded: a user callable may come back as a fresh wrapper every step
def _signature_has(fn: object, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def with_eps(fn, eps: float | None):
    """``fn`` with its normalization ``eps`` set, when ``eps`` is given and ``fn`` takes one (the NS family)."""
    return fn if eps is None or not _takes_eps(fn) else functools.partial(fn, eps=eps)


@torch.compiler.assume_constant_result  # a property of the function object, fixed while it lives
def takes_norm(fn: object) -> bool:
    """Whether ``fn`` accepts a known Frobenius norm as ``norm=`` (the NS family; not SVD, AOL)."""
    return _signature_has(fn, "norm")


def orthogonalize(stack: Stack) -> None:
    """``U <- Orth(U)`` with the group's ``orthogonalizer``, ``ns_steps``, ``ns_dtype`` (and ``ns_eps``, if set).

    The iteration runs in ``ns_dtype`` (``"auto"``: bf16 where the device has native bf16
    matmuls, as in the reference implementations, else fp32), except that fp64 stacks stay in fp64 so reference tests can be exact. The result is cast back
    to the compute dtype of the stack.
    """
    group = stack.group
    dtype = torch.float64 if stack.update.dtype == torch.float64 else as_dtype(group["ns_dtype"], stack.grad.device)
    spec = group["orthogonalizer"]
    fn = with_eps(orth.resolve(spec), group.get("ns_eps"))
    # Between ranks the matrices may travel in the iteration dtype (bf16: half the bytes) when the
    # orthogonalizer is a polynomial iteration, whose output is exactly representable in it; an
    # SVD or a user callable may return more precision, so those travel in the stack's dtype.
    polynomial = isinstance(spec, str) and spec.lower().replace("-", "_") not in ("svd",)
    wire = dtype if polynomial and dtype.itemsize < stack.update.dtype.itemsize else stack.update.dtype
    # A Frobenius norm a stage has computed for this update (NAMO's) replaces the normalization's own.
    norm = stack.known_norm() if takes_norm(fn) else None
    stack.update = stack.ctx.orthogonalize(fn, stack.update, group["ns_steps"], dtype, wire, norm=norm).to(stack.grad.dtype)


def sign(stack: Stack) -> None:
    """``U <- sign(U)`` (AdaMuon's sign-stabilised pre-step; sign(0) = 0)."""
    stack.update = torch.sign(stack.update)


def describe_orthogonalizer(group: dict, m: int, n: int, p: torch.Tensor) -> str:
    """What the group's orthogonalizer runs on an ``m x n`` view of ``p``, for tables.

    ``"auto"`` / ``"auto_you"`` are resolved per shape (``muonlab.orth.choose``), e.g.
    ``"auto: gram jordan x5"``; other names are returned as given, callables by their ``__name__``.
    """
    spec = group.get("orthogonalizer", "auto")
    if not isinstance(spec, str):
        return getattr(spec, "__name__", "callable")
    schedule = auto_schedule(spec)
    if schedule is None:
        return spec
    dtype = torch.float64 if p.dtype == torch.float64 else as_dtype(group["ns_dtype"], p.device)
    return f"{spec}: " + orth.choose(m, n, group["ns_steps"], dtype, schedule).label()


#: registry names resolved per shape, and the schedule each iterates
_AUTO_SCHEDULES = {"auto": "jordan", "auto_you": "you"}


def auto_schedule(spec: object) -> str | None:
    """The schedule of a per-shape registry name (``"auto"``, ``"auto_you"``), else None."""
    return _AUTO_SCHEDULES.get(spec.lower().replace("-", "_")) if isinstance(spec, str) else None
