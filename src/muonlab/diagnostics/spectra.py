"""Spectral statistics of an update, per layer.

For a matrix update ``U`` (N-D tensors viewed as ``(out, rest)``, as the optimizers do) with
singular values ``σ_1 ≥ … ≥ σ_k`` (``k = min(m, n)``):

* ``orth_error = ‖UᵀU / σ_1² − I_k‖_F / √k = sqrt(mean_i (σ_i²/σ_1² − 1)²)`` (Gram on the
  smaller side) — zero
  exactly when ``U`` is a scaled semi-orthogonal matrix (all singular values equal), as an ideal
  Muon update is; about 1 for a rank-one update;
* ``sv_ratio = σ_k / σ_1`` (1 = flat spectrum) and ``sv_cv`` (std / mean of the σ_i);
* ``effective_rank = exp(H(p))`` with ``p_i = σ_i / Σσ`` (Roy & Vetterli 2007), in ``[1, k]``;
  ``stable_rank = ‖U‖_F² / σ_1²``;
* ``rms = ‖U‖_F / sqrt(mn)`` (also for 1-D tensors, the only statistic they get).

References:
    Roy & Vetterli, "The effective rank: a measure of effective dimensionality", EUSIPCO 2007.
    Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024 blog post).
    Wang et al., "Why Muon Outperforms Adam: A Curvature Perspective", arXiv 2606.04662 (2026).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch


def matrix_spectrum(update: torch.Tensor) -> dict[str, float]:
    """Spectral statistics of one update tensor (see the module docstring).

    Args:
        update: a tensor with at least one element; ``ndim >= 2`` is viewed as ``(size(0), -1)``.

    Returns:
        ``rms`` always; for matrices also ``orth_error``, ``sv_max``, ``sv_min``, ``sv_ratio``,
        ``sv_cv``, ``effective_rank`` and ``stable_rank`` (NaN for an all-zero matrix).
    """
    if not isinstance(update, torch.Tensor) or update.numel() == 0:
        raise ValueError(f"update must be a non-empty tensor, got {update!r:.60}")
    x = update.detach().double()
    out = {"rms": float(x.pow(2).mean().sqrt())}
    if x.ndim < 2:
        return out
    mat = x.reshape(x.shape[0], -1)
    s = torch.linalg.svdvals(mat)  # (k,), descending
    nan = float("nan")
    if float(s[0]) == 0.0:
        out.update(orth_error=nan, sv_max=0.0, sv_min=0.0, sv_ratio=nan, sv_cv=nan,
                   effective_rank=nan, stable_rank=nan)
        return out
    rel = (s / s[0]).pow(2)
    p = s / s.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    out.update(
        orth_error=float((rel - 1.0).pow(2).mean().sqrt()),
        sv_max=float(s[0]),
        sv_min=float(s[-1]),
        sv_ratio=float(s[-1] / s[0]),
        sv_cv=float(s.std(correction=0) / s.mean()),
        effective_rank=float(entropy.exp()),
        stable_rank=float(s.pow(2).sum() / s[0] ** 2),
    )
    return out


def update_spectra(
    update: Mapping[str, torch.Tensor] | Sequence[torch.Tensor], names: Sequence[str] | None = None,
    *, matrices_only: bool = False,
) -> dict[str, float]:
    """:func:`matrix_spectrum` for every tensor of an update, as flat ``"<name>/<stat>"`` keys.

    Args:
        update: ``{name: tensor}`` (e.g. from ``optimizer_update(..., as_dict=True)``) or a list.
        names: labels for a list input (default ``"p0", "p1", …``).
        matrices_only: skip tensors with fewer than two dimensions.
    """
    if isinstance(update, Mapping):
        items = list(update.items())
    else:
        tensors = list(update)
        labels = list(names) if names is not None else [f"p{i}" for i in range(len(tensors))]
        if len(labels) != len(tensors):
            raise ValueError(f"names has {len(labels)} entries for {len(tensors)} tensors")
        items = list(zip(labels, tensors))
    out: dict[str, float] = {}
    for name, t in items:
        if matrices_only and t.ndim < 2:
            continue
        for k, v in matrix_spectrum(t).items():
            out[f"{name}/{k}"] = v
    return out
