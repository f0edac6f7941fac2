"""Probe the curvature along your optimizer's own update, on your own model, while it trains.

    python examples/curvature_probe.py                     # Muon vs AdamW on a small MLP, probe every 50 steps
    python examples/curvature_probe.py --optimizers muon namo adamw --steps 400
    python examples/curvature_probe.py --tiny              # a few steps at toy size (what the tests run)

At each probe, after ``backward()`` and before ``opt.step()``:

1. ``dg.optimizer_update(opt, model)`` is the update ``u`` the optimizer is about to apply
   (learning rate, weight decay and AdamW-routed parameters included), computed on copies:
   parameters, gradients and optimizer state are left untouched;
2. ``dg.taylor_decomposition`` splits the one-step loss change on a fixed probe batch into the
   first-order gain ``gᵀu`` and the curvature penalty ``½ uᵀHu``, with the normalized directional
   sharpness ``NDS = uᵀHu / ‖u‖²`` and the realized change;
3. ``dg.layer_decomposition`` says how much of ``NDS`` comes from within layer blocks and how much
   from their interactions (``within + cross = NDS``).

Swap in your model, your ``loss_fn(model, batch)`` and your optimizer; nothing else changes.

References:
    Wang et al., "Why Muon Outperforms Adam: A Curvature Perspective", arXiv:2606.04662
    (Taylor split, NDS, within-/cross-layer decomposition); Pearlmutter, "Fast Exact
    Multiplication by the Hessian", Neural Computation 1994 (the Hessian-vector product).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

import muonlab
from muonlab import diagnostics as dg


def make_model(width: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, width), nn.GELU(), nn.Linear(width, width), nn.GELU(), nn.Linear(width, 10))


def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``loss_fn(model, batch) -> scalar``: the one signature every diagnostic takes."""
    x, y = batch
    return F.cross_entropy(model(x), y)


def make_data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random teacher labels Gaussian inputs with 10 classes."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 16, generator=g)
    teacher = torch.randn(16, 10, generator=g)
    return x, (torch.tanh(x @ teacher) + 0.3 * torch.randn(n, 10, generator=g)).argmax(-1)


def run(name: str, args: argparse.Namespace) -> list[dict[str, float]]:
    model = make_model(args.width)
    groups = muonlab.param_groups(model, head=["4"])  # the last Linear is the classifier head: AdamW
    opt = muonlab.optimizers()[name](groups, lr=args.lr if name != "adamw" else args.adamw_lr)
    x, y = make_data(args.n)
    probe_batch = (x[: args.batch_size], y[: args.batch_size])  # one fixed batch for every probe
    blocks = {"in": ["0.weight", "0.bias"], "hidden": ["2.weight", "2.bias"], "head": ["4.weight", "4.bias"]}
    g = torch.Generator().manual_seed(2)
    rows = []
    for step in range(args.steps):
        idx = torch.randint(args.n, (args.batch_size,), generator=g)
        opt.zero_grad()
        loss = loss_fn(model, (x[idx], y[idx]))
        loss.backward()
        if step % args.every == 0:
            u = dg.optimizer_update(opt, model)  # the step opt.step() is about to take; nothing changes
            t = dg.taylor_decomposition(model, loss_fn, probe_batch, u)
            parts = dg.layer_decomposition(model, loss_fn, probe_batch, u, blocks)
            rows.append(dict(step=step, loss=loss.item(), nds=t["nds"], gain=t["first_order"],
                             penalty=t["curvature_penalty"], realized=t["realized"],
                             within=parts["within"], cross=parts["cross"]))
        opt.step()
    return rows


def main(argv: list[str] | None = None) -> dict[str, list[dict[str, float]]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--optimizers", nargs="+", default=["muon", "adamw"], choices=sorted(muonlab.optimizers()))
    p.add_argument("--lr", type=float, default=0.02, help="lr of the orthogonalized optimizers")
    p.add_argument("--adamw-lr", type=float, default=3e-3)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--every", type=int, default=50, help="probe every N steps")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--tiny", action="store_true", help="toy size, a few steps (smoke test)")
    args = p.parse_args(argv)
    if args.tiny:
        args.steps, args.every, args.width, args.n, args.batch_size = 4, 2, 16, 256, 32
    results = {}
    header = f"{'opt':8s} {'step':>5s} {'loss':>7s} {'NDS':>9s} {'gain gᵀu':>10s} {'½uᵀHu':>10s} {'realized':>10s} {'within':>8s} {'cross':>8s}"
    print(header)
    for name in args.optimizers:
        results[name] = run(name, args)
        for r in results[name]:
            print(f"{name:8s} {r['step']:5d} {r['loss']:7.4f} {r['nds']:9.4f} {r['gain']:10.3e} {r['penalty']:10.3e} "
                  f"{r['realized']:10.3e} {r['within']:8.4f} {r['cross']:8.4f}")
    return results


if __name__ == "__main__":
    main()
