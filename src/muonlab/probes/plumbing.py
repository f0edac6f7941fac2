"""The probes of the plumbing around the update math: routing (Conv1D layout, tied head) and resume.

Same contract as :mod:`muonlab.probes.checks`: ``probe(cls, kwargs) -> str | None``.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from .. import routing
from . import problem as P


def probe_routing(cls: type, kwargs: dict[str, Any]) -> str | None:
    """A transformers-style ``Conv1D`` and a tied head are routed and stepped correctly.

    On :class:`~muonlab.probes.problem.TinyLM`: ``param_groups`` routes it without a warning; the
    head tied to the embedding is one parameter, in exactly one group, an AdamW one; the ``Conv1D``
    weight (stored ``(in, out)``) is in an orthogonal group with ``layout="in_out"`` (the AdamW
    optimizer: AdamW) and its ``nn.Linear`` twin (``W^T``, stored ``(out, in)``) is not; one step with
    the twin's gradient transposed moves the ``Conv1D`` weight by the twin's move transposed (rtol 1e-9).

    Breaks on: routing by shape or name alone (a tied head orthogonalized); an optimizer that drops
    or ignores ``layout`` (then a non-square ``Conv1D`` gets the shape factor and row/column
    statistics of the wrong axes).
    """
    model = P.TinyLM()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        groups = routing.param_groups(model)
    if caught:
        return f"param_groups warned on an unambiguous model: {str(caught[0].message).splitlines()[0]}"
    opt = cls(groups, **kwargs)
    seen = [p for g in opt.param_groups for p in g["params"]]
    for name, p in model.named_parameters():
        if sum(q is p for q in seen) != 1:
            return f"{name} is in {sum(q is p for q in seen)} optimizer groups, expected exactly 1"
    _, head = P.group_of(opt, model.lm_head.weight)
    if head["algorithm"] != "adamw":
        return f"the head tied to the embedding is in a {head['algorithm']} group, expected adamw"
    _, conv = P.group_of(opt, model.c_fc.weight)
    _, twin = P.group_of(opt, model.twin.weight)
    if getattr(opt, "default_algorithm", "orthogonal") != "adamw":  # the AdamW optimizer puts everything in AdamW
        if conv["algorithm"] != "orthogonal" or conv.get("layout") != "in_out":
            return (f"the Conv1D weight is in a group with algorithm={conv['algorithm']!r}, "
                    f"layout={conv.get('layout', 'out_in')!r}; expected 'orthogonal', 'in_out'")
        if twin["algorithm"] != "orthogonal" or twin.get("layout", "out_in") != "out_in":
            return (f"the nn.Linear twin is in a group with algorithm={twin['algorithm']!r}, "
                    f"layout={twin.get('layout', 'out_in')!r}; expected 'orthogonal', 'out_in'")
    g = torch.Generator().manual_seed(5)
    grads = {n: torch.randn(p.shape, generator=g, dtype=P.DTYPE) for n, p in model.named_parameters()}
    grads["twin.weight"] = grads["c_fc.weight"].t().clone()
    grads["twin.bias"] = grads["c_fc.bias"].clone()
    params = dict(model.named_parameters())
    moves = P.step_with(opt, params, grads)
    err = P.rel(moves["c_fc.weight"].t(), moves["twin.weight"])
    if err > 1e-9:
        return (f"the Conv1D weight's move is not its nn.Linear twin's move transposed (relative difference "
                f"{err:.3g}): its matrix is read along the wrong axes")
    return None


def _train(opt: Any, params: dict[str, Tensor], steps: range) -> None:
    for t in steps:
        P.step_with(opt, params, P.random_grads(t))


def probe_resume(cls: type, kwargs: dict[str, Any]) -> str | None:
    """A resume restores the state: 3 steps, checkpoint, fresh model and optimizer, load, 2 steps == 5 steps, bitwise.

    The checkpoint goes through ``torch.save`` / ``torch.load`` (default ``weights_only``). Both the
    parameters and every state tensor must equal those of the uninterrupted run exactly.

    Breaks on: state left out of ``state_dict`` or not put back by ``load_state_dict``; stale stacked
    buffers surviving a load.
    """
    opt_a, params_a = P.build(cls, kwargs)
    _train(opt_a, params_a, range(5))
    opt_b, params_b = P.build(cls, kwargs)
    _train(opt_b, params_b, range(3))
    checkpoint = P.roundtrip({"model": P.snapshot(params_b), "opt": opt_b.state_dict()})
    opt_c, params_c = P.build(cls, kwargs, seed=1)  # other initial values: the checkpoint must set them
    with torch.no_grad():
        for name, p in params_c.items():
            p.copy_(checkpoint["model"][name])
    opt_c.load_state_dict(checkpoint["opt"])
    _train(opt_c, params_c, range(3, 5))
    for i, group, name in P.members(opt_c, params_c):
        where = P.where(i, group, name)
        if not torch.equal(params_c[name], params_a[name]):
            diff = float((params_c[name].detach() - params_a[name].detach()).abs().max())
            return f"{where} differs from the uninterrupted run by up to {diff:.3g}"
        state_a, state_c = opt_a.state[params_a[name]], opt_c.state[params_c[name]]
        if sorted(state_a) != sorted(state_c):
            return f"{where}: state keys {sorted(state_c)} after resume, {sorted(state_a)} uninterrupted"
        for key, value in state_a.items():
            if isinstance(value, Tensor) and not torch.equal(value, state_c[key]):
                return f"{where}: state {key!r} differs from the uninterrupted run"
    return None
