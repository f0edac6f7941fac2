"""Error feedback around an orthogonalized direction (opt-in ``error_feedback=True``; a reconstruction).

Muon's step ``lr s(m, n) Orth(M)`` throws away the singular values of the momentum. On convex
Lipschitz functions that loss of information is fatal: Muon need not converge for any lr schedule
(Parshakova et al., arXiv 2605.08980), and on diagonal objectives Muon *is* signed momentum, whose
classical counterexamples apply. Error feedback keeps what the step did not apply and adds it back
the next time, the remedy of EF-SGD / EF-signSGD (Karimireddy et al., arXiv 1901.09847), which
the paper shows restores convergence for Muon and every non-Euclidean subgradient method with
momentum. Its algorithm box was not retrieved; this is the standard error-feedback template with
the preset's direction pipeline as a scaled "compressor"::

    P  <- E + lr U                       # U: the preset's (Nesterov) momentum; E: the residual, 0 at start
    D  <- Dir(P / ||P||_F)               # the preset's direction stages on P (Orth, row/column/element
                                         #   reshaping), per-matrix scalars dropped (see keep_residual)
    a  <- <P, D> / ||D||_F^2             # Muon, exact polar factor, full-rank P: ||P||_* / min(m, n)
    E  <- P - a D                        # a D: the least-squares multiple of D closest to P
    W  <- W * decay - a D                # decay: the preset's own (lr wd, NAMO's adaptive form, ...)

``a D`` is the orthogonal projection of ``P`` onto the line of ``D``, so ``||E|| <= ||P||`` for every
preset (and ``||E||^2 <= (1 - 1/min(m, n)) ||P||^2`` for Muon with an exact polar factor: a
contractive compressor in the sense of Karimireddy et al.). The *virtual* iterate ``W - E`` then
moves by exactly ``-lr U`` (without decay): SGD with the preset's momentum, whatever ``Dir`` is,
which is what makes the convergence argument go through; the price is that lr is in SGD units.
Because the projection sets the step's size, every per-matrix scalar of the preset (lr, the shape
factor, NAMO's and AdaGO's adaptive step, NorMuon's and TrasMuon's RMS calibration) cancels; what
survives is the *shape* of the direction: NorMuon's and TrasMuon's rows, TrasMuon's column gate,
NAMO-D's relative column rates, AdaMuon's sign and element-wise normalisation
(docs/optimizers/error_feedback.md has the table).

References:
    Parshakova, Khaled, Crawshaw, Garrigos, Gower, "Muon Does Not Converge on Convex Lipschitz
    Functions", arXiv 2605.08980 (2026). Karimireddy, Rebjock, Stich, Jaggi, "Error Feedback Fixes
    SignSGD and other Gradient Compression Schemes", arXiv 1901.09847 (ICML 2019).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..orth import workspace
from .base import Stack

#: state key of the residual E (same shape as the matrix view)
ERROR_KEY = "ef.error"


def enabled(group: dict) -> bool:
    """Whether a param group runs with error feedback."""
    return bool(group.get("error_feedback", False))


def accumulate_error(stack: Stack) -> None:
    """``P <- E + lr U`` into the residual buffer; ``P / ||P||_F`` becomes the input of the direction stages.

    No-op unless the group's ``error_feedback`` is True. Runs after the momentum and any stage that
    reads the momentum's magnitude (NAMO's norm ratio), right before the first direction stage
    (``orthogonalize``, or AdaMuon's sign); the buffer holds ``P`` until :func:`keep_residual`.
    """
    if not enabled(stack.group):
        return
    # Gated: on a skipped step lr counts as 0 here and the projection as 0 in keep_residual, so E is
    # left as it was without a snapshot of it (a copy and a restoring where() over E every step).
    E = stack.buffer(ERROR_KEY, gated=True)  # (k, m, n)
    lr, take = stack.hp("lr"), stack.take(1.0, E)
    E.addcmul_(stack.update, lr if isinstance(take, float) else lr * take)  # P = E + lr U, in one pass
    # The direction stages get P / ||P||_F, not P: Newton-Schulz normalises by ||X||_F + eps, and that
    # eps would make the compressor not quite positively homogeneous (C(cP) != c C(P) at small ||P||),
    # which EF's analysis assumes and an lr schedule would feel (first move not exactly proportional
    # to lr). Every direction stage is invariant to a positive scale of its input otherwise.
    (norm,) = stack.norms((E, (-2, -1)))  # (k,), overflow-safe
    scale = stack.per_item(torch.where(norm > 0, norm, 1.0))
    stack.update = torch.div(E, scale, out=workspace.out_like(E))  # a new tensor: E stays P


def _shape_of_step(stack: Stack) -> torch.Tensor | None:
    """The part of ``stack.step_size`` that varies inside a matrix (NAMO-D's ``(k, 1, n)`` rates), else None.

    A per-matrix scalar (a float, a 0-D or a ``(k, 1, 1)`` tensor) only rescales the direction and
    cancels in the projection, so it is dropped: the step then does not depend on lr, as in EF-SGD
    (a step with lr = 0 still applies the projection of the residual).
    """
    s = stack.step_size
    if isinstance(s, torch.Tensor) and s.dim() == stack.update.dim() and any(d > 1 for d in s.shape[1:]):
        return s
    return None


def keep_residual(stack: Stack) -> None:
    """``D = Dir(P)``, ``a = <P, D> / ||D||^2``; ``E <- P - a D``; the write applies ``a D`` with step size 1.

    No-op unless ``error_feedback``. Runs after the last stage that shapes the direction or sets the
    step size (it replaces the step size: the projection sets the step's size); the decay the
    preset set (``stack.decay``) is kept.
    """
    if not enabled(stack.group):
        return
    P, D = stack.buffer(ERROR_KEY, gated=True), stack.update  # (k, m, n) each
    shape = _shape_of_step(stack)
    if shape is not None:  # per-row / per-column step sizes are part of the direction
        D = torch.mul(D, shape, out=workspace.out_like(D))
    # The products go into the step's workspace: fresh full-size temporaries cost page faults on CPU.
    PD, DD = torch.mul(P, D, out=workspace.out_like(P)), torch.mul(D, D, out=workspace.out_like(D))
    num, den = stack.sums((PD, (-2, -1)), (DD, (-2, -1)))  # (k,) each, one reduction
    a = torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 0.0)  # a zero direction: step 0
    take = stack.take(1.0, a)
    if not isinstance(take, float):
        a = a * take  # a skipped step projects nothing: E (= P there) stays
    D = torch.mul(stack.per_item(a), D, out=workspace.out_like(D))
    P.sub_(D)  # the buffer now holds the residual E
    stack.update = D
    stack.step_size = 1.0


Stage = Callable[[Stack], None]


def with_error_feedback(chain: tuple[Stage, ...], before: Stage) -> tuple[Stage, ...]:
    """``chain`` with :func:`accumulate_error` inserted before the stage ``before`` and :func:`keep_residual` last.

    ``before`` is the first stage of the direction pipeline (the one that must see ``P``). Both
    stages are no-ops unless the group's ``error_feedback`` is True, so with the flag off the chain
    computes exactly what it did without them.
    """
    i = chain.index(before)
    return (*chain[:i], accumulate_error, *chain[i:], keep_residual)
