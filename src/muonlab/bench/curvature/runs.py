"""Training runs of the curvature experiment, through the bench runner (JSONL records, resumable).

Each run is a :class:`muonlab.bench.runner.RunSpec` trained by :func:`muonlab.bench.runner.run`
with a :class:`~muonlab.bench.curvature.probe.CurvatureProbe` attached; validation is evaluated on the
probe steps so that every probe row carries the validation loss used for matched-loss pairing.
A finished record with the same run id (a hash of the whole spec) is reused instead of retrained.

References:
    Wang et al., "Why Muon Outperforms Adam: A Curvature Perspective", arXiv 2606.04662 (2026).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import torch

import muonlab
from muonlab import diagnostics as dg
from muonlab.bench.curvature.config import CurvatureConfig, StructureConfig
from muonlab.bench.curvature.probe import CurvatureProbe
from muonlab.bench import provenance
from muonlab.bench.runner import RunSpec, load_run, reusable_run, run
from muonlab.bench.tasks import make_task

OnStep = Callable[[int, int], None]
POSITIVE_RTOL = 1e-8  # paired curvatures below this fraction of the largest count as zero


def _task(task_cfg: dict[str, Any]) -> Any:
    # Training uses fast SDPA; every diagnostic pass switches the model to math attention itself.
    return make_task("gpt", **{"attn_impl": "sdpa", **task_cfg})


def train(cfg: CurvatureConfig, out: Path, *, experiment: str, task_cfg: dict[str, Any], optimizer: str,
          seed: int, steps: int, probe_every: int, layer_split: bool, on_step: OnStep | None = None,
          tasks: dict | None = None, alt_task: dict[str, Any] | None = None, fresh: bool = False,
          reused: dict[str, str] | None = None) -> list[dict]:
    """One probed run; returns its step rows.

    A finished record with the same cache key is reused from ``out`` unless ``fresh``; ``reused`` (if given)
    collects ``run id -> where the record came from`` for every reused run.
    """
    hp = dict(cfg.optimizers[optimizer])
    lr = float(hp.pop("lr"))
    probe_kw = {**dataclasses.asdict(cfg.probe), "every": probe_every, "layer_split": layer_split}
    if alt_task is not None:
        probe_kw["alt_task"] = alt_task
    spec = RunSpec(experiment=experiment, task="gpt", task_config=task_cfg, optimizer=optimizer, lr=lr, seed=seed,
                   hparams=hp, steps=steps, eval_every=probe_every, target=None, grad_clip=cfg.grad_clip,
                   schedule=dict(cfg.schedule), callbacks={"curvature": probe_kw})
    path = out / "runs" / experiment / f"{spec.run_id}.jsonl"
    found = None if fresh else reusable_run(path, spec)
    if found is not None and reused is not None:
        reused[f"{experiment}/{spec.run_id}"] = provenance.describe(found[0])
    if found is None:
        key = repr(sorted(task_cfg.items()))
        if tasks is None or key not in tasks:
            task = _task(task_cfg)
            if tasks is not None:
                tasks[key] = task
        task = tasks[key] if tasks is not None else task
        run(spec, task, muonlab.optimizers()[optimizer], path, callbacks=[CurvatureProbe(**probe_kw)],
            on_step=on_step)
    elif on_step is not None:
        on_step(steps, steps)
    return load_run(path)[1]


class _Keep:
    """Callback that keeps a reference to the model (the runner builds it internally)."""

    def __init__(self, every: int) -> None:
        self.every, self.model = every, None

    def __call__(self, step, model, optimizer, task, batch) -> dict[str, float]:
        self.model = model
        return {}


def structure(sc: StructureConfig, cfg: CurvatureConfig, out: Path, on_step: OnStep | None = None) -> dict:
    """Train a small GPT with Muon, then measure ξ(r), η_sd, paired curvatures and ζ per attention matrix."""
    task = _task(sc.task)
    keep = _Keep(sc.steps)
    spec = RunSpec(experiment="structure", task="gpt", task_config=sc.task, optimizer="muon", lr=sc.lr, seed=0,
                   hparams={"adamw_lr": sc.adamw_lr, "ns_dtype": "float32"}, steps=sc.steps, eval_every=sc.steps, target=None,
                   grad_clip=cfg.grad_clip, schedule=dict(cfg.schedule))
    run(spec, task, muonlab.optimizers()["muon"], out / "runs" / "structure" / f"{spec.run_id}.jsonl",
        callbacks=[keep], on_step=on_step)
    model = keep.model
    batch = next(iter(task.train_batches(12345)))
    with dg.diagnostic_mode(model), torch.enable_grad():
        model.zero_grad(set_to_none=True)
        task.loss(model, batch).backward()
    params = dict(model.named_parameters())
    results = {}
    for short in sc.matrices:
        name = f"h.0.attn.{short}.weight"
        w = params[name]
        d1, d2 = w.shape
        h = dg.block_hessian(model, task.loss, batch, name)
        kr = dg.kronecker_approx(h, d1, d2, sc.r)
        qa, ea = dg.joint_diagonalize(kr["A"])
        qb, eb = dg.joint_diagonalize(kr["B"])
        wc, pairs = dg.paired_curvatures(kr["A"], kr["B"], qa, qb)
        zeta = dg.grad_energy_ratio(w.grad.detach(), qa, qb, pairs)
        pos = wc[wc > POSITIVE_RTOL * wc.abs().max()]  # "positive" = above round-off
        results[short] = {
            "xi": kr["xi"][:8].tolist(), "eta_A": ea["eta_sd"], "eta_B": eb["eta_sd"],
            "w": wc.tolist(), "q_positive": int(pos.numel()),
            "w_span": float(pos[0] / pos[-1]) if pos.numel() > 1 else float("nan"),
            "zeta": zeta.tolist(), "zeta_q": float(zeta[pos.numel() - 1]) if pos.numel() else float("nan"),
            "shape": [d1, d2],
        }
    model.zero_grad(set_to_none=True)
    return results
