"""Parameter bookkeeping shared by the diagnostics.

Every diagnostic works on the *trainable* parameters of a model, in the order of
``model.named_parameters()`` (which already deduplicates tied tensors by identity, so a tied
embedding / head is counted once — curvature spec §6.6 pitfall 8). Vectors given by the user are
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

    Why: curvature terms are small differences of large numbers (spec §6.6 pitfall 3); bf16/fp16
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
    """Frobenius inner product summed over tensors, accumulated in fp64 (spec §6.6 pitfall 3)."""
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


def functional_loss(model: nn.Module, loss_fn: LossFn, batch: Any) -> Callable[[TensorDict], torch.Tensor]:
    """``params -> loss_fn(model with params, batch)``, a pure function for ``torch.func``."""
    bound = _Bound(model, loss_fn)

    def f(params: TensorDict) -> torch.Tensor:
        loss = functional_call(bound, {"model." + n: t for n, t in params.items()}, (batch,))
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
