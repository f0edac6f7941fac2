"""A convex Lipschitz matrix objective on which Muon without momentum provably stalls.

For a square ``d x d`` matrix ``W`` (``d = 2 p``) the objective reads only the diagonal, in pairs
``a_i = W[2i, 2i]``, ``b_i = W[2i+1, 2i+1]``::

    f(W) = sum_i |a_i - b_i| + eps |a_i + b_i|,      0 < eps < 1,    min f = 0 (a = b = 0).

It is convex and Lipschitz (constant ``sqrt(2 p (1 + eps^2))`` in Frobenius norm). It is
Karimireddy et al.'s counterexample for signSGD (arXiv 1901.09847, §3) placed on the diagonal of a
matrix, which is the reduction Parshakova et al. use (arXiv 2605.08980: on objectives of the
diagonal, Muon *is* signed momentum).

Why Muon stalls (momentum 0, exact polar factor): the subgradient ``G`` is diagonal with
``G_aa = s + eps t`` and ``G_bb = -s + eps t`` (``s = sign(a - b)``, ``t = sign(a + b)``; the kink's
subgradient is taken as +1). Since ``eps < 1`` every entry is nonzero with signs ``(s, -s)``, so
``Orth(G) = diag(sign G)`` and each step changes ``(a_i, b_i)`` by ``lr (-s, +s)``: ``a_i + b_i`` never
changes, whatever the lr schedule, and ``f(W_t) >= eps sum_i |a_i + b_i|(W_0)`` for ever. With error
feedback the virtual iterate runs SGD on ``f`` and converges. (With momentum the steps can also move
``a + b``: this problem is then not a counterexample; the paper's momentum construction was not
retrieved.)
"""

from __future__ import annotations

import torch

__all__ = ["SignCounterexample"]


def _abs(u: torch.Tensor) -> torch.Tensor:
    # |u| whose autograd subgradient at u = 0 is +1 (torch.abs gives 0 there, and a zero gradient
    # entry would make Orth(G) rank-deficient): a valid subgradient, and it keeps the proof's signs.
    return torch.where(u >= 0, u, -u)


class SignCounterexample:
    """``f(W) = sum_i |a_i - b_i| + eps |a_i + b_i|`` on the diagonal pairs of a ``(2p, 2p)`` matrix.

    Args:
        pairs: ``p`` (the matrix is ``2p x 2p``).
        eps: weight of the term sign descent cannot reduce, in (0, 1).
        dtype: of :meth:`start`.
    """

    def __init__(self, pairs: int = 4, eps: float = 0.5, dtype: torch.dtype = torch.float32) -> None:
        if not (isinstance(pairs, int) and not isinstance(pairs, bool) and pairs >= 1):
            raise ValueError(f"pairs={pairs!r}: expected an integer >= 1")
        if not (isinstance(eps, (int, float)) and 0 < eps < 1):
            raise ValueError(f"eps={eps!r}: expected in (0, 1) (the stall needs eps < 1)")
        self.pairs, self.eps, self.dtype = pairs, float(eps), dtype
        self.d = 2 * pairs

    def start(self) -> torch.Tensor:
        """``W_0``: zero off the diagonal, ``(a_i, b_i) = (1.5 r_i, 0.5 r_i)`` with ``r_i = 1 + i / p``."""
        r = 1 + torch.arange(self.pairs, dtype=torch.float64) / self.pairs
        diag = torch.stack([1.5 * r, 0.5 * r], dim=1).reshape(-1)
        return torch.diag(diag).to(self.dtype)

    def pair_values(self, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a, b)``, each of shape ``(p,)``."""
        diag = torch.diagonal(W)
        return diag[0::2], diag[1::2]

    def loss(self, W: torch.Tensor) -> torch.Tensor:
        """``f(W)`` (= suboptimality: the minimum is 0)."""
        a, b = self.pair_values(W)
        return (_abs(a - b) + self.eps * _abs(a + b)).sum()

    def floor(self, W: torch.Tensor) -> float:
        """``eps sum_i |a_i + b_i|``: a lower bound of ``f`` that sign steps never change."""
        a, b = self.pair_values(W.detach())
        return float(self.eps * (a + b).abs().sum())
