"""NGN-M as a plain loop over a list of parameters (fp64), written from Islamov et al. (arXiv 2508.15071).

Algorithm 1, in its published heavy-ball form (not the buffer form the library runs):

    gamma_k = c / (1 + c ||grad f(x_k)||^2 / (2 f(x_k)))     # ||.||^2 over all stepped parameters
    x_{k+1} = x_k - (1 - beta) gamma_k grad f(x_k) + beta (x_k - x_{k-1}),   x_{-1} = x_0

and the muonlab extension ``direction="muon"``: Muon's step with lr replaced by gamma_k.
"""

from __future__ import annotations

from tests.reference.muon import muon_step


def ngn_gamma(c: float, loss: float, grads) -> float:
    """The NGN step size from the loss and the list of gradients."""
    grad_sq = sum(float((G * G).sum()) for G in grads)
    return c / (1 + c * grad_sq / (2 * loss))


def ngnm_heavy_ball(xs, xs_prev, grads, loss, *, lr, momentum, weight_decay=0.0):
    """One NGN-M step on every parameter; returns (new xs, new xs_prev = old xs)."""
    gamma = ngn_gamma(lr, loss, grads)
    new = [
        x - (1 - momentum) * gamma * G + momentum * (x - xp) - lr * weight_decay * x
        for x, xp, G in zip(xs, xs_prev, grads)
    ]
    return new, [x.clone() for x in xs]


def ngnm_muon(xs, Ms, grads, loss, *, lr, momentum, weight_decay=0.0, adjust_lr="spectral"):
    """One step of the extension: Muon (Nesterov, exact polar factor) at lr = gamma_k; decay with c."""
    gamma = ngn_gamma(lr, loss, grads)
    out, new_Ms = [], []
    for x, M, G in zip(xs, Ms, grads):
        W, M = muon_step(x, G, M, lr=gamma, momentum=momentum, nesterov=True, weight_decay=0.0, adjust_lr=adjust_lr)
        out.append(W - lr * weight_decay * x)
        new_Ms.append(M)
    return out, new_Ms
