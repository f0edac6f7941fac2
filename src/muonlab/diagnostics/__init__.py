"""Curvature diagnostics for any PyTorch model and optimizer.

Why does an orthogonalized update lower the loss more than Adam's? Over one step ``θ → θ − u`` on a
batch, ``L(θ − u) − L(θ) ≈ −gᵀu + ½uᵀHu``: the first-order gain ``gᵀu`` minus the curvature penalty
``½‖u‖²·NDS``, where ``NDS = uᵀHu/‖u‖²`` is the Hessian's Rayleigh quotient along the update. This
package measures each term on your model, along your optimizer's actual update:

.. code-block:: python

    from muonlab import diagnostics as dg
    loss_fn = lambda model, batch: F.cross_entropy(model(batch[0]), batch[1])
    loss_fn(model, batch).backward()
    u = dg.optimizer_update(opt, model)          # the step opt.step() would take; nothing changes
    dg.taylor_decomposition(model, loss_fn, batch, u)   # first_order, curvature_penalty, nds, ...
    dg.layer_decomposition(model, loss_fn, batch, u, dg.groups_by_block(model))
    opt.step()

Vectors are lists aligned with the trainable parameters (``named_parameters`` order, tied tensors
once) or dicts keyed by parameter name; results are plain dicts of floats. Everything is computed
functionally in eval mode with math attention and without autocast, so parameters, gradients and
optimizer state are left bitwise unchanged.

References:
    Wang et al., "Why Muon Outperforms Adam: A Curvature Perspective", arXiv 2606.04662 (2026).
    Pearlmutter, "Fast Exact Multiplication by the Hessian", Neural Computation, 1994.
"""

from muonlab.diagnostics._params import diagnostic_mode, trainable
from muonlab.diagnostics.curvature import (
    directional_sharpness,
    groups_by_block,
    layer_decomposition,
    self_check,
    taylor_decomposition,
)
from muonlab.diagnostics.hvp import bilinear, directional_curvature, hessian_trace, hvp, top_eigenvalue
from muonlab.diagnostics.spectra import matrix_spectrum, update_spectra
from muonlab.diagnostics.structure import (
    block_hessian,
    grad_energy_ratio,
    joint_diagonalize,
    kronecker_approx,
    paired_curvatures,
    structural_summary,
)
from muonlab.diagnostics.update import optimizer_update

__all__ = [
    "bilinear",
    "block_hessian",
    "diagnostic_mode",
    "directional_curvature",
    "directional_sharpness",
    "grad_energy_ratio",
    "groups_by_block",
    "hessian_trace",
    "hvp",
    "joint_diagonalize",
    "kronecker_approx",
    "layer_decomposition",
    "matrix_spectrum",
    "optimizer_update",
    "paired_curvatures",
    "self_check",
    "structural_summary",
    "taylor_decomposition",
    "top_eigenvalue",
    "trainable",
    "update_spectra",
]
