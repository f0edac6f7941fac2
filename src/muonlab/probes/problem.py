"""The tiny deterministic problems the failure probes step on.

Everything is fp64 on the CPU so that the criteria can be exact (bitwise, or to ~1e-9 relative):
the parameters of every orthogonal stack are then orthogonalized in fp64 too (``ns_dtype`` follows
fp64 parameters). Gradients are set by hand from a seeded generator, so a probe controls exactly
what each step sees (a sign flip, a scale, a zero) and two runs can be compared bit for bit.

The standard problem has four groups, two of each kind, so that a skipped or mis-scheduled group
cannot hide behind another of the same kind:

* group 0, orthogonal: ``W`` ``(6, 4)`` (a tall matrix);
* group 1, orthogonal: ``V`` ``(4, 10)`` (wide, wide enough for TrasMuon's column gate) and ``K``
  ``(3, 2, 3)`` (a 3-D tensor: a batch of matrices under ``batch_3d``, else viewed ``(3, 6)``);
* group 2, AdamW: ``b`` ``(5,)`` (a bias);
* group 3, AdamW: ``E`` ``(7, 3)`` (an embedding-like matrix).

For the AdamW optimizer every group is AdamW (its ``default_algorithm``).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

DTYPE = torch.float64
SHAPES: dict[str, tuple[int, ...]] = {"W": (6, 4), "V": (4, 10), "K": (3, 2, 3), "b": (5,), "E": (7, 3)}
#: (parameter names, explicit algorithm or None for the optimizer's default) per group
GROUPS: tuple[tuple[tuple[str, ...], str | None], ...] = (
    (("W",), None), (("V", "K"), None), (("b",), "adamw"), (("E",), "adamw"),
)

Grads = dict[str, Tensor]
#: ``(group index, group, parameter name)`` for every parameter of a problem
Members = list[tuple[int, dict[str, Any], str]]


def make_params(seed: int = 0) -> dict[str, Tensor]:
    """Fresh leaf parameters with random entries bounded away from zero (ratios ``W1 / W0`` stay defined)."""
    g = torch.Generator().manual_seed(1000 + seed)
    out = {}
    for name, shape in SHAPES.items():
        sign = torch.randint(0, 2, shape, generator=g, dtype=DTYPE) * 2 - 1
        out[name] = (sign * (0.5 + torch.rand(shape, generator=g, dtype=DTYPE))).requires_grad_(True)
    return out


def make_groups(params: dict[str, Tensor], extra: dict[str, Any] | None = None,
                per_group: Callable[[int], dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The four group dicts over ``params``; ``extra`` keys go into every group, ``per_group(i)`` into group i."""
    groups = []
    for i, (names, algorithm) in enumerate(GROUPS):
        group: dict[str, Any] = {"params": [params[n] for n in names], **(extra or {})}
        if algorithm is not None:
            group["algorithm"] = algorithm
        if per_group is not None:
            group.update(per_group(i))
        groups.append(group)
    return groups


def build(cls: type, kwargs: dict[str, Any], seed: int = 0, **group_options: Any) -> tuple[Any, dict[str, Tensor]]:
    """``(optimizer, params)`` on a fresh standard problem (``group_options`` as in :func:`make_groups`)."""
    params = make_params(seed)
    return cls(make_groups(params, **group_options), **kwargs), params


def random_grads(step: int, seed: int = 0, scale: float = 1.0) -> Grads:
    """Deterministic gradients for step ``step``: entries ``+-scale * [0.5, 1.5)`` (never tiny, never zero)."""
    g = torch.Generator().manual_seed(7919 * (seed + 1) + step)
    out = {}
    for name, shape in SHAPES.items():
        sign = torch.randint(0, 2, shape, generator=g, dtype=DTYPE) * 2 - 1
        out[name] = scale * sign * (0.5 + torch.rand(shape, generator=g, dtype=DTYPE))
    return out


def step_with(opt: Any, params: dict[str, Tensor], grads: Grads) -> dict[str, Tensor]:
    """Set the gradients, take one step and return each parameter's move ``W1 - W0``."""
    before = snapshot(params)
    for name, p in params.items():
        p.grad = grads[name].clone()
    if getattr(opt, "needs_loss", False):  # NGNM: hand-set gradients have no loss; any f > 0 is valid
        opt.step(loss=torch.tensor(1.0, dtype=DTYPE))
    else:
        opt.step()
    return {name: params[name].detach() - before[name] for name in params}


def snapshot(params: dict[str, Tensor]) -> dict[str, Tensor]:
    """Detached copies of the parameter values."""
    return {name: p.detach().clone() for name, p in params.items()}


def group_of(opt: Any, p: Tensor) -> tuple[int, dict[str, Any]]:
    """``(index, group)`` of the optimizer group holding ``p`` (by identity)."""
    for i, group in enumerate(opt.param_groups):
        if any(q is p for q in group["params"]):
            return i, group
    raise KeyError("parameter is in no group")


def roundtrip(state_dict: dict[str, Any]) -> dict[str, Any]:
    """``state_dict`` through ``torch.save`` / ``torch.load`` (default ``weights_only``), as a checkpoint would go."""
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    buf.seek(0)
    return torch.load(buf)


class Conv1D(nn.Module):
    """The duck type of transformers' ``Conv1D``: ``nf`` outputs, weight stored ``(in, out)``, ``y = x W + b``."""

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.weight + self.bias


class TinyLM(nn.Module):
    """An embedding, a ``Conv1D`` with an ``nn.Linear`` twin holding ``W^T``, and a head tied to the embedding."""

    def __init__(self, vocab: int = 11, dim: int = 6, hidden: int = 8, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # torch's default inits draw from the global RNG: leave it alone
            self.wte = nn.Embedding(vocab, dim)
            self.c_fc = Conv1D(hidden, dim)  # weight (dim, hidden): stored (in, out)
            self.twin = nn.Linear(dim, hidden)  # weight (hidden, dim): the same map stored (out, in)
            self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, GPT-2 style
        self.double()
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=DTYPE))
            self.twin.weight.copy_(self.c_fc.weight.t())

    def forward(self, idx: Tensor) -> Tensor:
        # Never called by the probes (they set gradients by hand); it shows the intended shapes:
        # the Conv1D maps dim -> hidden, the twin's weight (hidden, dim) maps back.
        x = self.wte(idx)
        return self.lm_head(torch.tanh(self.c_fc(x)) @ self.twin.weight)


def rel(a: Tensor, b: Tensor) -> float:
    """``||a - b|| / ||b||`` (``||a - b||`` when ``b`` is zero)."""
    den = float(b.norm())
    return float((a - b).norm()) / (den if den > 0 else 1.0)


def members(opt: Any, params: dict[str, Tensor]) -> Members:
    """``(group index, group, parameter name)`` for every parameter of the standard problem."""
    names = {id(p): n for n, p in params.items()}
    return [(i, g, names[id(p)]) for i, g in enumerate(opt.param_groups) for p in g["params"]]


def where(i: int, group: dict[str, Any], name: str) -> str:
    """``"group i (algorithm) name"`` for messages."""
    return f"group {i} ({group['algorithm']}) {name}"
