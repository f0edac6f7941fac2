"""Parameter bookkeeping shared by the diagnostics.

Every diagnostic works on the *trainable* parameters of a model, in the order of
``model.named_parameters()`` (which already deduplicates tied tensors by identity, so a tied
embedding / head is counted once, or ‖u‖² and uᵀHu would count it twice). Vectors given by the user are
either lists aligned with that order or dicts keyed by parameter name; internally everything is a
``dict[name, Tensor]`` of detached tensors, and the loss is evaluated *functionally*
(``torch.func.functional_call``) so the model's own parameters and ``.grad`` are never touched.

References:
    Wang et al., "Why Muon Outperforms Adam: A Curvature Perspective", arXiv 2606.04662 (2026).
    PyTorch docs, ``torch.func.functional_call``.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping, Sequence, Union

import torch
from torch import nn
from torch.func import functional_call

LossFn = Callable[[nn.Module, Any], torch.Tensor]
Vector = Union[Sequence[torch.Tensor], Mapping[str, torch.Tensor]]
TensorDict = dict[str, torch.Tensor]


def trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    """Trainable parameters by name, tied tensors once (``named_parameters`` dedups by identity)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def compute_dtype(model: nn.Module, dtype: torch.dtype | None) -> torch.dtype:
    """The dtype diagnostics run in: ``dtype`` if given, else the widest of fp32 and the params'.

    Why: curvature terms are small differences of large numbers (cancellation); bf16/fp16
    parameters are upcast to fp32 for the probe.
    """
    if dtype is not None:
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating dtype, got {dtype}")
        return dtype
    widest = torch.float32
    for p in trainable(model).values():
        if p.is_floating_point() and torch.finfo(p.dtype).bits > torch.finfo(widest).bits:
            widest = p.dtype
    return widest


def primals(model: nn.Module, dtype: torch.dtype) -> TensorDict:
    """Detached copies (views when no cast is needed) of the trainable parameters."""
    return {n: p.detach().to(dtype) for n, p in trainable(model).items()}


def as_dict(model: nn.Module, v: Vector, dtype: torch.dtype | None = None, *, arg: str = "v") -> TensorDict:
    """Normalize a user vector to ``{name: tensor}`` over all trainable params (zeros where absent).

    Args:
        model: the model whose trainable parameters define the layout.
        v: list aligned with the trainable parameters (or with all of ``model.parameters()``,
            frozen ones then ignored), or a dict keyed by parameter name (a subset is allowed).
        dtype: cast every entry to this dtype.
        arg: the argument name used in error messages.

    Raises:
        ValueError: on a wrong length, an unknown name or a shape mismatch.
    """
    params = trainable(model)
    if isinstance(v, Mapping):
        unknown = [k for k in v if k not in params]
        if unknown:
            raise ValueError(f"{arg} has names that are not trainable parameters: {unknown[:5]}")
        items = {n: (v[n] if n in v else torch.zeros_like(p)) for n, p in params.items()}
    else:
        v = list(v)
        if len(v) == len(params):
            items = dict(zip(params, v))
        else:
            everything = list(model.named_parameters())
            if len(v) != len(everything):
                raise ValueError(
                    f"{arg} has {len(v)} tensors; expected {len(params)} (trainable parameters)"
                )
            items = {n: t for (n, p), t in zip(everything, v) if p.requires_grad}
    out: TensorDict = {}
    for n, p in params.items():
        t = items[n]
        if not isinstance(t, torch.Tensor) or t.shape != p.shape:
            shape = getattr(t, "shape", type(t).__name__)
            raise ValueError(f"{arg}[{n!r}] has shape {shape}, parameter has {tuple(p.shape)}")
        out[n] = t.detach().to(dtype=dtype or p.dtype, device=p.device)
    return out


def like(v: Vector, out: TensorDict) -> Union[list[torch.Tensor], TensorDict]:
    """Return ``out`` in the structure of ``v``: a dict stays a dict (all names), a list a list."""
    return dict(out) if isinstance(v, Mapping) else list(out.values())


def dot(a: TensorDict, b: TensorDict, names: Sequence[str] | None = None) -> float:
    """Frobenius inner product summed over tensors, accumulated in fp64 (cancellation)."""
    keys = a.keys() if names is None else names
    total = torch.zeros((), dtype=torch.float64)
    for n in keys:
        total = total + (a[n].double() * b[n].double()).sum().cpu()
    return float(total)


def restrict(v: TensorDict, names: Sequence[str]) -> TensorDict:
    """``v`` with every entry outside ``names`` replaced by zeros."""
    keep = set(names)
    return {n: (t if n in keep else torch.zeros_like(t)) for n, t in v.items()}


class _Bound(nn.Module):
    """``loss_fn(model, batch)`` as a module, so ``functional_call`` can swap the parameters."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> torch.Tensor:
        return self.loss_fn(self.model, batch)


def cast_floating(obj: Any, dtype: torch.dtype) -> Any:
    """``obj`` with every floating-point tensor cast to ``dtype``; tuples, lists and dicts are walked.

    Integer and bool tensors (token ids, labels, masks) and anything else come back unchanged.
    Why: a batch of fp32 inputs fed to parameters cast to fp64 fails in the first matmul
    ("mat1 and mat2 must have the same dtype").
    """
    if isinstance(obj, torch.Tensor):
        return obj.to(dtype) if obj.is_floating_point() and obj.dtype != dtype else obj
    if isinstance(obj, Mapping):
        items = {k: cast_floating(v, dtype) for k, v in obj.items()}
        try:  # keep dict subclasses (e.g. a tokenizer's batch); fall back to a plain dict
            return type(obj)(items)
        except TypeError:
            return items
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(cast_floating(v, dtype) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(cast_floating(v, dtype) for v in obj)
    return obj


def functional_loss(
    model: nn.Module, loss_fn: LossFn, batch: Any, dtype: torch.dtype | None = None
) -> Callable[[TensorDict], torch.Tensor]:
    """``params -> loss_fn(model with params, batch)``, a pure function for ``torch.func``.

    With ``dtype``, the floating-point tensors of ``batch`` and the model's floating-point buffers
    are cast to it as well (integer ones, such as token ids, are kept), so that parameters cast to
    a wider compute dtype meet inputs of the same dtype. Nothing of the model is written.
    """
    bound = _Bound(model, loss_fn)
    buffers: TensorDict = {}
    if dtype is not None:
        batch = cast_floating(batch, dtype)
        buffers = {"model." + n: b.to(dtype) for n, b in model.named_buffers()
                   if b.is_floating_point() and b.dtype != dtype}

    def f(params: TensorDict) -> torch.Tensor:
        loss = functional_call(bound, {**buffers, **{"model." + n: t for n, t in params.items()}}, (batch,))
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ValueError(f"loss_fn must return a scalar tensor, got {type(loss).__name__}")
        return loss.reshape(())

    return f


@contextlib.contextmanager
def diagnostic_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode, math attention and no autocast for the duration of a probe.

    Why: dropout makes the loss a random function (pitfall 6); flash / memory-efficient SDPA
    kernels have neither double backward nor forward AD (pitfall 1, pytorch/pytorch#116350), so
    attention is forced onto the math path — both through SDPA's backend selector and through an
    ``attn_impl`` attribute, which muonlab's GPT exposes; autocast would silently run in bf16.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    modes = [(m, m.training) for m in model.modules()]
    impls = [(m, m.attn_impl) for m in model.modules() if isinstance(getattr(m, "attn_impl", None), str)]
    device = next((p.device.type for p in model.parameters()), "cpu")
    try:
        model.eval()
        for m, _ in impls:
            m.attn_impl = "math"
        with sdpa_kernel([SDPBackend.MATH]), torch.autocast(device_type=device, enabled=False):
            yield
    finally:
        for m, mode in modes:
            m.training = mode
        for m, impl in impls:
            m.attn_impl = impl


def reference_loss(
    model: nn.Module, loss_fn: LossFn, batch: Any, theta: TensorDict, dtype: torch.dtype
) -> tuple[Callable[[TensorDict], torch.Tensor], torch.dtype, torch.Tensor]:
    """The loss as a function of the parameters, in fp64 when the model runs in it, else in ``dtype``.

    Returns ``(f, dtype used, L(theta))``; ``f`` must be called under :func:`diagnostic_mode`.
    Why fp64: a finite second difference divides rounding noise of about ``u·|L|`` by ``ε²``, and
    with fp32's ``u ≈ 1.2e-7`` that noise exceeds the curvature along a random unit direction on
    typical networks. fp64 is missing on some devices (MPS) and in some custom kernels; the
    difference is then taken in ``dtype``.
    """
    for dt in dict.fromkeys((torch.float64, dtype)):
        try:
            f = functional_loss(model, loss_fn, batch, dt)
            with torch.no_grad(), diagnostic_mode(model):
                return f, dt, f({n: t.to(dt) for n, t in theta.items()})
        except (RuntimeError, TypeError, NotImplementedError):
            if dt == dtype:
                raise
    raise AssertionError("unreachable: the loop ends by returning or raising")
