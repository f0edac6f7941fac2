"""Adam with a single beta (beta1 = beta2): the one-knob AdamW of "In Search of Adam's Secret Sauce"."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import validate as V
from .presets import AdamW
from .registry import register


class AdamSingleBeta(AdamW):
    r"""AdamW with ``betas = (beta, beta)``: an online estimate of the gradient's mean and variance.

    .. code-block:: text

        W <- W (1 - lr wd)
        m <- beta m + (1 - beta) g ;  v <- beta v + (1 - beta) g^2        # the same beta
        W <- W - lr / (1 - beta^t) * m / (sqrt(v) / sqrt(1 - beta^t) + eps)

    With one beta, ``m`` and ``v`` are exponential averages of ``g`` and ``g^2`` with the *same*
    weights, so ``s^2 = v - m^2`` is the weighted variance of the recent gradients (never negative)
    and obeys ``s_t^2 = beta s_{t-1}^2 + beta (1 - beta) (g_t - m_{t-1})^2``. The direction is then

        m / sqrt(v) = sign(m) / sqrt(1 + s^2 / m^2)

    Signum damped by the inverse signal-to-noise ratio of each coordinate, never larger than 1 in
    magnitude (``/ sqrt(1 - beta^t)`` with the bias corrections). Orvieto & Gower find beta1 = beta2
    near-optimal across their 1,300+ language-model runs; they tune beta with lr per setting, so the
    default 0.95 is a library choice (it is also TrasMuon's Adam fallback), not a value from the paper.
    ``muonlab.AdamW(params, betas=(b, b))`` and ``adamw_betas=(b, b)`` in every hybrid optimizer give the
    same update; this class exists so that the configuration has a registry name and one knob.

    Args:
        params: parameters or param groups (every group runs AdamW).
        lr: learning rate (1e-3).
        beta: the common ``beta1 = beta2``, in [0, 1) (0.95).
        eps: added to ``sqrt(v_hat)`` (1e-8).
        weight_decay: decoupled decay (0.01, as :class:`~muonlab.AdamW`).
        process_group, nonfinite: as in :class:`~muonlab.AdamW`.

    References:
        Orvieto & Gower, "In Search of Adam's Secret Sauce", arXiv 2505.21829 (NeurIPS 2025).
        Loshchilov & Hutter, "Decoupled Weight Decay Regularization", arXiv 1711.05101.
    """

    name = "adam-single-beta"

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        beta: float = 0.95,
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        process_group: Any = None,
        nonfinite: str = "skip",
    ):
        V.unit_interval("beta", beta)  # named as the user wrote it, before it becomes betas=(beta, beta)
        super().__init__(params, lr=lr, betas=(beta, beta), eps=eps, weight_decay=weight_decay,
                         process_group=process_group, nonfinite=nonfinite)


register("adam-single-beta", AdamSingleBeta, {"lr": 1e-2}, {"lr": 1e-2, "beta": 0.9, "weight_decay": 0.0})

