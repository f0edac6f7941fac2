"""Per-step hooks of the benchmark runner, and the one shipped hook: :class:`UpdateStats`.

A callback has an attribute ``every`` and is called as ``cb(step, model, optimizer, task, batch)``
after ``loss.backward()`` (and after gradient clipping) and before ``optimizer.step()``, on the steps
where ``step % every == 0`` (steps are 1-based). The floats it returns are merged into that step's
JSONL row, so anything a callback measures ends up in the run record and can be plotted.

A callback may also define ``after_step(step, model, optimizer) -> dict[str, float]``; the runner
calls it right after ``optimizer.step()`` on the same steps and merges its dict into the same row.
That is how :class:`UpdateStats` sees the update actually applied, without a dry run.

Callbacks are named in an experiment's ``[callbacks.<name>]`` tables; :data:`CALLBACKS` maps names to
factories (a class or ``"module:attr"`` string imported lazily, so the curvature callback lives in
``muonlab.bench.curvature`` without this module importing it).

References:
    Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024),
    https://kellerjordan.github.io/posts/muon/ (orthogonalized updates: flat singular values).
    Liu et al., "Muon is Scalable for LLM Training", arXiv 2502.16982 (update RMS matched to AdamW's).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class Callback(Protocol):
    """A runner hook; see the module docstring for when it is called."""

    every: int

    def __call__(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, task: Any,
                 batch: Any) -> dict[str, float]:
        ...


def hidden_matrices(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters an orthogonalizing optimizer treats as hidden matrices.

    Mirrors the routing convention of ``muonlab.param_groups``: trainable tensors with >= 2 dims that
    are not token embeddings (``nn.Embedding``) nor the LM head (a module named ``lm_head``).
    """
    skip: set[int] = set()
    for mod_name, mod in model.named_modules():
        if isinstance(mod, nn.Embedding) or mod_name.split(".")[-1] == "lm_head":
            skip.update(id(p) for p in mod.parameters(recurse=False))
    out: dict[str, nn.Parameter] = {}
    for name, p in model.named_parameters():  # named_parameters already drops tied duplicates
        if p.requires_grad and p.ndim >= 2 and id(p) not in skip:
            out[name] = p
    return out


class UpdateStats:
    """Records the update each hidden matrix actually received: its RMS and singular-value spread.

    On a recorded step, ``__call__`` snapshots the hidden matrices and ``after_step`` compares them with
    the parameters after ``optimizer.step()``. The update ``U = W_before - W_after`` (weight decay
    included, as it is part of what the optimizer did) is viewed as ``(out, rest)`` and summarized:

    * ``update_rms/<param>``: ``‖U‖_F / sqrt(numel)``, per matrix (with ``per_param=True``);
    * ``update_rms``: mean of the per-matrix RMS;
    * ``update_sv_max``: mean over matrices of the top singular value of ``U``;
    * ``update_sv_ratio``: mean over matrices of ``σ_max / σ_median`` (1 for an exactly orthogonal
      update; AdamW's updates are far from it).

    Args:
        every: record every ``every`` steps (>= 1).
        per_param: also record the per-matrix RMS.
        singular_values: compute the SVD-based statistics (skip on very large models).

    References:
        Jordan et al. (2024), Muon blog post; Liu et al., arXiv 2502.16982 (update RMS 0.2 matching).
    """

    def __init__(self, every: int = 10, per_param: bool = False, singular_values: bool = True) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}")
        self.every = every
        self.per_param = per_param
        self.singular_values = singular_values
        self._before: dict[str, torch.Tensor] = {}

    def __call__(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, task: Any,
                 batch: Any) -> dict[str, float]:
        self._before = {n: p.detach().clone() for n, p in hidden_matrices(model).items()}
        return {}

    @torch.no_grad()
    def after_step(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        params = hidden_matrices(model)
        rms, sv_max, sv_ratio, row = [], [], [], {}
        for name, before in self._before.items():
            upd = (before - params[name].detach()).double().reshape(before.shape[0], -1)  # (out, rest)
            r = float(upd.norm() / upd.numel() ** 0.5)
            rms.append(r)
            if self.per_param:
                row[f"update_rms/{name}"] = r
            if self.singular_values:
                s = torch.linalg.svdvals(upd)
                sv_max.append(float(s[0]))
                med = float(s.median())
                # A zero median (update of rank < min(m, n) / 2) has no finite ratio: leave it out.
                if med > 0:
                    sv_ratio.append(float(s[0]) / med)
        self._before = {}
        if rms:
            row["update_rms"] = sum(rms) / len(rms)
        if sv_max:
            row["update_sv_max"] = sum(sv_max) / len(sv_max)
        if sv_ratio:
            row["update_sv_ratio"] = sum(sv_ratio) / len(sv_ratio)
        return row


# name -> factory (a callable, or "module:attr" imported on first use).
CALLBACKS: dict[str, Callable[..., Any] | str] = {
    "update_stats": UpdateStats,
    "curvature": "muonlab.bench.curvature:CurvatureCallback",
}


def register_callback(name: str, factory: Callable[..., Any] | str) -> None:
    """Make ``[callbacks.<name>]`` available in experiment configs."""
    CALLBACKS[name] = factory


def resolve_callback(name: str) -> Callable[..., Any]:
    """The factory registered under ``name``; raises ``KeyError`` / ``ImportError`` when unavailable."""
    factory = CALLBACKS[name]
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        factory = getattr(importlib.import_module(module), attr)
    return factory


def make_callbacks(specs: dict[str, dict[str, Any]]) -> list[Any]:
    """Fresh callback instances (one set per run, so per-run state never leaks between runs)."""
    return [resolve_callback(name)(**kwargs) for name, kwargs in specs.items()]
