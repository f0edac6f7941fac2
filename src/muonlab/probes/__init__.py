"""Failure probes: tiny pass/fail problems that catch silent optimizer failures (``muonlab probes``).

In the spirit of LightBench's sanity problems, each probe is a deterministic fp64 problem that runs
in milliseconds on a CPU and has one precise, falsifiable criterion. They are run against every
registered optimizer (and each of its sample hyperparameter sets, ``OptimizerInfo.sample_kwargs``):

========== ===================================================================================
groups     every param group moves after a step with nonzero gradients
scheduler  ``LambdaLR`` reaches every group: x0.5 from the start halves the first move exactly;
           x0.5 after ``scheduler.step()`` roughly halves the next one
momentum   the second step remembers the sign of the first gradient (and forgets it at momentum 0;
           error-feedback residuals, which remember it by design, are cleared between the steps)
decay      decoupled decay shrinks by exactly ``1 - lr wd`` (adaptive: linearly in wd, once)
adam       the AdamW part moves ~lr at gradient scales 1e-3, 1e3 and 1e30 (Adam, not SGD)
routing    a transformers-style ``Conv1D`` is orthogonalized as ``W^T`` (its update is its ``nn.Linear``
           twin's, transposed) and a head tied to the embedding goes to AdamW
resume     3 steps + checkpoint + fresh optimizer + 2 steps == 5 steps, bitwise
========== ===================================================================================

>>> from muonlab.probes import run_probes
>>> failed = [r for r in run_probes(["muon"]) if not r.passed]

The criteria and what each one catches are in :mod:`muonlab.probes.checks` and docs/reliability.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Optional

from ..optim import OptimizerInfo, optimizer_infos
from .checks import probe_adam, probe_decay, probe_groups, probe_momentum, probe_scheduler
from .plumbing import probe_resume, probe_routing

__all__ = ["PROBES", "Probe", "ProbeResult", "run_probes", "select_optimizers"]

#: ``probe(optimizer class, kwargs) -> None`` if the property holds, else the reason it does not
Probe = Callable[[type, dict[str, Any]], Optional[str]]

#: probe name -> probe, in table order
PROBES: dict[str, Probe] = {
    "groups": probe_groups,
    "scheduler": probe_scheduler,
    "momentum": probe_momentum,
    "decay": probe_decay,
    "adam": probe_adam,
    "routing": probe_routing,
    "resume": probe_resume,
}


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one probe on one optimizer.

    Attributes:
        optimizer: registry name.
        probe: probe name (a key of :data:`PROBES`).
        passed: whether the criterion held for every sample hyperparameter set.
        reason: why it failed (``"sample_kwargs[i] {...}: ..."``), empty when it passed.
    """

    optimizer: str
    probe: str
    passed: bool
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def select_optimizers(names: Sequence[str] | None = None) -> list[OptimizerInfo]:
    """Registry entries named by ``names`` (all when None); an unknown name raises ``ValueError``."""
    infos = optimizer_infos()
    if names is None:
        return infos
    by_name = {info.name: info for info in infos}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown optimizer(s) {', '.join(unknown)}; registered: {', '.join(by_name)}")
    return [by_name[n] for n in names]


def _run_one(probe: str, info: OptimizerInfo) -> ProbeResult:
    for i, kwargs in enumerate(info.sample_kwargs):
        try:
            reason = PROBES[probe](info.cls, dict(kwargs))
        except Exception as exc:  # a crash is a failure of the probe, reported like any other
            reason = f"raised {type(exc).__name__}: {exc}"
        if reason is not None:
            return ProbeResult(info.name, probe, False, f"sample_kwargs[{i}] {kwargs}: {reason}")
    return ProbeResult(info.name, probe, True)


def run_probes(
    optimizers: Iterable[str | OptimizerInfo] | None = None, probes: Sequence[str] | None = None
) -> list[ProbeResult]:
    """Run the probes on the optimizers; one result per (optimizer, probe), optimizers outer.

    Args:
        optimizers: registry names or :class:`~muonlab.OptimizerInfo` entries (e.g. a broken variant
            in a test); all registered optimizers when None.
        probes: probe names (keys of :data:`PROBES`); all when None.

    Returns:
        The results. A probe passes on an optimizer when it passes for every one of its sample
        hyperparameter sets; the reason names the first set that failed.

    Raises:
        ValueError: an unknown optimizer or probe name.
    """
    if optimizers is None:
        infos = optimizer_infos()
    else:
        items = list(optimizers)
        named = select_optimizers([o for o in items if isinstance(o, str)])
        lookup = iter(named)
        infos = [o if isinstance(o, OptimizerInfo) else next(lookup) for o in items]
    names = list(PROBES) if probes is None else list(probes)
    unknown = [p for p in names if p not in PROBES]
    if unknown:
        raise ValueError(f"unknown probe(s) {', '.join(unknown)}; available: {', '.join(PROBES)}")
    return [_run_one(probe, info) for info in infos for probe in names]
