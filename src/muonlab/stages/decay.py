"""Decoupled weight decay."""

from __future__ import annotations

from .base import Stack


def decay_weights(stack: Stack) -> None:
    """``W <- W (1 - lr * weight_decay)`` with the *unadjusted* lr (Loshchilov & Hutter, arXiv
    1711.05101; the shape factor of Muon does not enter the decay, as in all reference codes)."""
    wd = stack.group["weight_decay"]
    if wd != 0:
        stack.decay = 1 - stack.hp("lr") * wd
