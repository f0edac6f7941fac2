"""``MuonEF``: Muon with error feedback on by default (registry name ``"muon-ef"``).

A registry entry of its own, so that the generic contract, reliability and probe suites (which run
over ``muonlab.optimizer_infos()`` and its sample hyperparameters) cover the ``error_feedback=True``
path, and bench configs can name it. The algorithm is :class:`~muonlab.Muon`'s flag; see
:mod:`muonlab.stages.error_feedback` and docs/optimizers/error_feedback.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .presets import Muon
from .registry import register


class MuonEF(Muon):
    r"""Error-feedback Muon: ``Muon(error_feedback=True)`` with an lr in SGD units.

    .. code-block:: text

        for each hidden matrix W (m x n view) with gradient G:
            M  <- mu M + (1 - mu) G ;  U <- (1 - mu) G + mu M   if nesterov else M
            P  <- E + lr U                                # E: the residual, 0 at start
            O  <- Orth(P) ;  D <- (<P, O> / ||O||_F^2) O  # = (||P||_* / min(m, n)) polar(P), exact Orth
            E  <- P - D
            W  <- W (1 - lr wd) - D                       # s(m, n) unused; W - E runs SGD with momentum
        every other parameter (embeddings, head, 1-D): AdamW with adamw_lr, adamw_betas, ...

    The update's step is set by the projection, so lr is in SGD units, not Muon's spectral units.
    Default lr 0.1 (ours, not the paper's, whose algorithm box was not retrieved): on the test
    suite's 200-step tiny transformer Muon's 0.02 leaves the loss at 0.70x its start, 0.1-0.5 at
    0.51-0.20x (tests/test_training.py; not tuned further). The paper reports that error feedback
    *degrades* Muon on CIFAR-10 and nanoGPT; use this to study convex Lipschitz problems, not to train
    networks better.

    Args:
        params, lr, and every other argument: as :class:`~muonlab.Muon` (``error_feedback`` defaults
            to True here; False gives plain Muon with this class's lr).

    References:
        Parshakova, Khaled, Crawshaw, Garrigos, Gower, "Muon Does Not Converge on Convex Lipschitz
        Functions", arXiv 2605.08980 (2026). Karimireddy, Rebjock, Stich, Jaggi, "Error Feedback Fixes
        SignSGD and other Gradient Compression Schemes", arXiv 1901.09847.
    """

    name = "muon-ef"

    def __init__(self, params: Iterable[Any], lr: float = 0.1, error_feedback: bool = True, **kwargs: Any):
        super().__init__(params, lr=lr, error_feedback=error_feedback, **kwargs)


register(
    "muon-ef", MuonEF,
    {"lr": 0.1},
    {"lr": 0.005, "nesterov": False, "momentum_form": "sum", "weight_decay": 0.01, "ns_dtype": "float32"},
    {"lr": 0.1, "momentum": 0.0, "orthogonalizer": "polar_express", "ns_steps": 6, "batch_3d": True},
)
