"""Error feedback around an orthogonalizer (opt-in ``error_feedback=True``; a reconstruction).

Muon's step ``lr s(m, n) Orth(M)`` throws away the singular values of the momentum. On convex
Lipschitz functions that loss of information is fatal: Muon need not converge for any lr schedule
(Parshakova et al., arXiv 2605.08980), and on diagonal objectives Muon *is* signed momentum, whose
classical counterexamples apply. Error feedback keeps what the step did not apply and adds it back
the next time, the remedy of EF-SGD / EF-signSGD (Karimireddy et al., arXiv 1901.09847), which
the paper shows restores convergence for Muon. Its algorithm box was not retrieved; this is the
standard error-feedback template with a scaled orthogonal "compressor"::

    P  <- E + lr U                       # U: the (Nesterov) momentum; E: the residual, 0 at start
    O  <- Orth(P)
    a  <- <P, O> / ||O||_F^2             # = ||P||_* / min(m, n) for an exact polar factor of a full-rank P
    D  <- a O                            # the least-squares multiple of O closest to P
    E  <- P - D
    W  <- W (1 - lr wd) - D              # lr and the shape factor enter through P and a only

``a O`` is the orthogonal projection of ``P`` onto the line of ``O``, so ``||E|| <= ||P||`` always, and
for an exact polar factor ``||P - D||^2 <= (1 - 1/min(m, n)) ||P||^2`` (a contractive compressor in
the sense of Karimireddy et al.). Then the *virtual* iterate ``W - E`` moves by exactly ``-lr U``,
i.e. runs SGD with momentum, which is what makes the convergence proof go through; the price is
that lr is in SGD units (the step scales with the gradient), not Muon's.

References:
    Parshakova, Khaled, Crawshaw, Garrigos, Gower, "Muon Does Not Converge on Convex Lipschitz
    Functions", arXiv 2605.08980 (2026). Karimireddy, Rebjock, Stich, Jaggi, "Error Feedback Fixes
    SignSGD and other Gradient Compression Schemes", arXiv 1901.09847 (ICML 2019).
"""

from __future__ import annotations

import torch

from .base import Stack

#: state key of the residual E (same shape as the matrix view)
ERROR_KEY = "ef.error"


def accumulate_error(stack: Stack) -> None:
    """``P <- E + lr U`` into the residual buffer, which becomes the orthogonalizer's input.

    No-op unless the group's ``error_feedback`` is True. Runs after the momentum, before
    ``orthogonalize``; the buffer holds ``P`` until :func:`keep_residual` subtracts the step.
    """
    if not stack.group.get("error_feedback", False):
        return
    E = stack.buffer(ERROR_KEY)  # (k, m, n)
    E.add_(stack.hp("lr") * stack.update)
    stack.update = E  # read, not written, by the orthogonalizer (orth kernels are pure)


def keep_residual(stack: Stack) -> None:
    """``D = (<P, O> / ||O||^2) O``; ``E <- P - D``; the write applies ``D`` with step size 1.

    No-op unless ``error_feedback``. Runs after the orthogonalizer and the shape scale (whose factor
    it replaces: the projection sets the step's size).
    """
    if not stack.group.get("error_feedback", False):
        return
    P, O = stack.buffer(ERROR_KEY), stack.update  # (k, m, n) each
    num, den = stack.sums((P * O, (-2, -1)), (O * O, (-2, -1)))  # (k,) each, one reduction
    a = torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 0.0)  # a zero P gives O = 0: step 0
    D = stack.per_item(a) * O
    P.sub_(D)  # the buffer now holds the residual E
    stack.update = D
    stack.step_size = 1.0
