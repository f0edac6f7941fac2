"""The bench callback that records curvature along each optimizer's actual update.

Every ``every`` steps (after ``backward``, before ``optimizer.step()``) :class:`CurvatureProbe`
dry-runs the step to read the update ``u`` (so the step is ``θ − u``, learning rate, weight decay
and the AdamW-routed parameters included), then on a *fixed* probe batch — the same for every
optimizer and checkpoint, so trends are comparable (a per-step training batch would add batch noise) — records the
Taylor split, NDS, the within-/cross-layer split over layer blocks and update statistics. With
``current_batch=True`` it also records the Taylor split on the training batch that produced ``u``
(option (a), the one-step view) under ``curv_cur/…``.

Keys written into the run row (all floats, prefix ``curv/``): ``first_order``, ``curvature_penalty``,
``predicted``, ``realized`` (loss changes), ``taylor_residual``, ``nds``, ``u_norm_sq``, ``uHu``,
``cos_gu``, ``probe_loss``, ``within``, ``cross``, ``within_share``, ``nds_hidden`` and
``u_norm_sq_hidden`` (the update restricted to the hidden matrices, the part Muon orthogonalizes),
``orth_error`` and ``eff_rank`` (mean over hidden matrices), ``top_eig`` (optional) and per block
``within/<block>`` and ``nds/<block>``.

References:
    Wang et al., "Why Muon Outperforms Adam: A Curvature Perspective", arXiv 2606.04662 (2026).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from muonlab import diagnostics as dg
from muonlab.bench.callbacks import hidden_matrices


class CurvatureProbe:
    """Runner callback recording curvature diagnostics into the JSONL rows.

    Args:
        every: record every ``every`` steps (>= 1).
        probe_batches: number of training-stream batches concatenated into the fixed probe batch.
        probe_seed: seed of the stream the probe batch is drawn from (identical across runs).
        layer_split: compute the within-/cross-layer decomposition (``1 + #blocks`` extra
            second-derivative evaluations).
        current_batch: also record the Taylor split on the current training batch.
        top_eig_iters: power-iteration steps for the top Hessian eigenvalue (0 = skip).
        spectra: record orthogonality error / effective rank of the hidden-matrix updates.
        alt_task: optional gpt task config; a second fixed probe batch is drawn from that task's
            training stream and the Taylor split on it is recorded under ``curv_alt/…`` (the imbalance
            sweep uses the balanced s = 0 stream here).
    """

    def __init__(self, every: int = 25, probe_batches: int = 1, probe_seed: int = 12345,
                 layer_split: bool = True, current_batch: bool = False, top_eig_iters: int = 0,
                 spectra: bool = True, alt_task: dict[str, Any] | None = None) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}")
        if not isinstance(probe_batches, int) or probe_batches < 1:
            raise ValueError(f"probe_batches must be an integer >= 1, got {probe_batches!r}")
        if not isinstance(top_eig_iters, int) or top_eig_iters < 0:
            raise ValueError(f"top_eig_iters must be an integer >= 0, got {top_eig_iters!r}")
        self.every, self.probe_batches, self.probe_seed = every, probe_batches, probe_seed
        self.layer_split, self.current_batch = layer_split, current_batch
        self.top_eig_iters, self.spectra = top_eig_iters, spectra
        self.alt_task = dict(alt_task) if alt_task else None
        self._probe: Any = None
        self._alt: Any = None

    def _draw(self, task: Any) -> Any:
        stream = iter(task.train_batches(self.probe_seed))
        parts = [next(stream) for _ in range(self.probe_batches)]
        return tuple(torch.cat(xs) for xs in zip(*parts)) if len(parts) > 1 else parts[0]

    def _probe_batch(self, task: Any) -> Any:
        if self._probe is None:
            self._probe = self._draw(task)
        return self._probe

    def __call__(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, task: Any,
                 batch: Any) -> dict[str, float]:
        loss_fn = task.loss
        u = dg.optimizer_update(optimizer, model, as_dict=True)
        probe = self._probe_batch(task)
        row: dict[str, float] = {}
        tay = dg.taylor_decomposition(model, loss_fn, probe, u)
        for k in ("first_order", "curvature_penalty", "predicted", "realized", "taylor_residual", "nds",
                  "u_norm_sq", "uHu", "cos_gu"):
            row[f"curv/{k}"] = tay[k]
        row["curv/probe_loss"] = tay["loss"]
        hidden = list(hidden_matrices(model))
        if hidden:
            sharp = dg.directional_sharpness(model, loss_fn, probe, {n: u[n] for n in hidden})
            row["curv/nds_hidden"], row["curv/u_norm_sq_hidden"] = sharp["nds"], sharp["u_norm_sq"]
        if self.layer_split:
            lay = dg.layer_decomposition(model, loss_fn, probe, u, dg.groups_by_block(model), method="fwd_fwd")
            for k, v in lay.items():
                if k in ("within", "cross", "within_share") or k.startswith(("within/", "nds/")):
                    row[f"curv/{k}"] = v
        if self.spectra and hidden:
            stats = [dg.matrix_spectrum(u[n]) for n in hidden]
            orth = [s["orth_error"] for s in stats if not math.isnan(s["orth_error"])]
            rank = [s["effective_rank"] / min(u[n].shape[0], u[n][0].numel()) for s, n in zip(stats, hidden)
                    if not math.isnan(s["effective_rank"])]
            if orth:
                row["curv/orth_error"] = sum(orth) / len(orth)
            if rank:
                row["curv/eff_rank_frac"] = sum(rank) / len(rank)
        if self.top_eig_iters:
            row["curv/top_eig"] = dg.top_eigenvalue(model, loss_fn, probe, iters=self.top_eig_iters,
                                                    tol=1e-3)["eigenvalue"]
        if self.alt_task is not None:
            if self._alt is None:
                from muonlab.bench.tasks import make_task

                self._alt = self._draw(make_task("gpt", **self.alt_task))
            alt = dg.taylor_decomposition(model, loss_fn, self._alt, u)
            for k in ("first_order", "curvature_penalty", "realized", "nds"):
                row[f"curv_alt/{k}"] = alt[k]
        if self.current_batch:
            cur = dg.taylor_decomposition(model, loss_fn, batch, u)
            for k in ("first_order", "curvature_penalty", "predicted", "realized", "nds"):
                row[f"curv_cur/{k}"] = cur[k]
        return row


CurvatureCallback = CurvatureProbe  # the name the bench callback registry resolves
