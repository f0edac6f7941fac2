"""Routing: which parameters of a model are orthogonalized and which use AdamW.

Muon-family updates are meant for *hidden* weight matrices. Embeddings (a lookup, not a linear
map) and the tables and tokens that act like them, the output head (its rows are classes /
tokens), 1-D gains and biases, the first conv layer (few input channels) and depthwise convs (one
tiny filter per channel) go to AdamW. This is the recipe of Keller Jordan's Muon README and of
Moonlight; :func:`param_groups` applies it from the model's structure (the rules, in order, are in
:mod:`muonlab.routing_rules` and docs/reliability.md), checks that every trainable parameter is
routed exactly once, flags what it is unsure about, and can print a dry-run table.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from .routing_rules import HEAD_NAMES, ROLES, TABLE_WORDS, Route, linear_dims, route

__all__ = ["HEAD_NAMES", "ROLES", "TABLE_WORDS", "Route", "classify", "format_table", "linear_dims", "param_groups",
           "route"]


def classify(model: nn.Module, head: Sequence[str] = (), *, roles: Mapping[str, str] | None = None) -> dict[str, str]:
    """Map each trainable parameter name to its role (see :data:`ROLES`).

    The rules are those of :func:`muonlab.routing_rules.route`: embeddings (by type, by
    ``get_input_embeddings()``, and anything tied to them), 1-D and norm parameters, named and
    structural heads, convs, Linear-like weights (``nn.Linear``, transformers' ``Conv1D``), and raw
    ≥2-D parameters (positional tables, class tokens) to AdamW. A weight tied between an embedding
    and a head is routed once, as an embedding. Unsure decisions are not reported here; use
    :func:`param_groups` (which warns) or :func:`route` (which returns them).

    Args:
        model: the model.
        head: extra module names to treat as output heads (besides :data:`HEAD_NAMES`).
        roles: explicit ``{parameter name: role}`` decisions that override the rules.
    """
    return {r.name: r.role for r in route(model, head, roles)}


def param_groups(
    model: nn.Module,
    *,
    lr: float | None = None,
    weight_decay: float | None = None,
    adamw_lr: float | None = None,
    adamw_weight_decay: float | None = None,
    head: Sequence[str] = (),
    roles: Mapping[str, str] | None = None,
    vocab_warning: int = 8192,
    strict: bool = False,
    verbose: bool = False,
) -> list[dict[str, Any]]:
    """Param groups for any muonlab optimizer: hidden matrices orthogonalized, the rest AdamW.

    One group per role that occurs (``hidden``, ``embedding``, ``head``, ``vector``, ``first_conv``,
    ``depthwise_conv``), each with ``algorithm``, ``role`` and ``param_names``; hidden weights stored
    ``(in, out)`` (transformers' ``Conv1D``) get a second ``hidden`` group with ``layout="in_out"``. ``lr`` /
    ``weight_decay`` are set on the orthogonal group and ``adamw_lr`` / ``adamw_weight_decay`` on the
    AdamW groups when given (otherwise the optimizer's defaults apply). 1-D parameters (gains,
    biases) get ``weight_decay=0``.

    Decisions the rules are unsure about (a raw matrix that is no Linear/Conv-like weight, a guessed
    head, an orthogonalized matrix with a vocabulary-sized dimension) are marked ``?`` in the
    table's ``note`` column and listed in one ``UserWarning``; settle them with ``roles=`` or
    ``head=``.

    Args:
        model: the model whose trainable parameters are routed.
        lr, weight_decay, adamw_lr, adamw_weight_decay: optional per-group overrides.
        head: extra module names that are output heads.
        roles: explicit ``{parameter name: role}`` decisions (names as in the dry-run table, tied
            aliases included; roles from :data:`ROLES`); they are never flagged.
        vocab_warning: flag an orthogonalized matrix with a dimension at least this large (it is
            probably a vocabulary projection that belongs in AdamW).
        strict: raise instead of warning when any decision is unsure.
        verbose: print the dry-run table (name, shape, role, algorithm, lr, weight decay, note).

    Returns:
        A list of group dicts to pass to an optimizer.

    Raises:
        ValueError: ``strict=True`` and some decision is unsure (the message names every such
            parameter), or invalid ``roles``.

    Example:
        >>> groups = muonlab.param_groups(model, verbose=True)
        >>> opt = muonlab.Muon(groups, lr=0.02, adamw_lr=3e-4)
    """
    routes = route(model, head, roles, vocab_warning)
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for r in routes:
        # Weights stored (in, out) (transformers' Conv1D) get a group of their own with layout="in_out",
        # so the optimizer orthogonalizes, scales and normalizes W^T, the (out, in) matrix.
        layout = r.layout if ROLES[r.role] == "orthogonal" else "out_in"
        g = groups.setdefault(
            (r.role, layout), {"params": [], "param_names": [], "algorithm": ROLES[r.role], "role": r.role}
        )
        if layout != "out_in":
            g["layout"] = layout
        g["params"].append(r.param)
        g["param_names"].append(r.name)
    for (role, _), g in groups.items():
        if g["algorithm"] == "orthogonal":
            _set(g, "lr", lr)
            _set(g, "weight_decay", weight_decay)
        else:
            _set(g, "lr", adamw_lr)
            _set(g, "weight_decay", 0.0 if role == "vector" else adamw_weight_decay)
    _check_routed_once(model, groups.values())
    out = [groups[key] for r in ROLES for key in sorted(k for k in groups if k[0] == r)]
    notes = {r.name: ("? " if r.unsure else "") + r.note for r in routes if r.note or r.unsure}
    if verbose:
        print(format_table(out, notes))
    unsure = [r for r in routes if r.unsure]
    if unsure:
        listing = "\n".join(
            f"  {r.name} {tuple(r.param.shape)} -> {r.role} ({ROLES[r.role]}): {r.note}" for r in unsure
        )
        if strict:
            raise ValueError(
                f"param_groups(strict=True): routing is unsure about {len(unsure)} parameter(s):\n{listing}\n"
                "decide each with roles={name: role} (or head=[...])"
            )
        warnings.warn(
            f"param_groups: routing is unsure about {len(unsure)} parameter(s):\n{listing}\n"
            "check the dry-run table (verbose=True) and decide with roles={name: role} or head=[...]; "
            "strict=True makes this an error",
            UserWarning,
            stacklevel=2,
        )
    return out


def _set(group: dict[str, Any], key: str, value: float | None) -> None:
    if value is not None:
        group[key] = value


def _check_routed_once(model: nn.Module, groups: Any) -> None:
    seen: dict[int, int] = {}
    for g in groups:
        for p in g["params"]:
            seen[id(p)] = seen.get(id(p), 0) + 1
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    twice = [i for i, c in seen.items() if c > 1]
    missing = trainable - seen.keys()
    if twice or missing:
        raise AssertionError(f"routing error: {len(missing)} parameter(s) unrouted, {len(twice)} routed twice")


def format_table(groups: list[dict[str, Any]], notes: Mapping[str, str] | None = None) -> str:
    """The dry-run table as text: one row per parameter.

    Args:
        groups: groups from :func:`param_groups`.
        notes: optional ``{parameter name: note}`` for the last column (why a parameter got its role;
            ``?`` first where the rules were unsure).
    """
    notes = notes or {}
    rows = [("name", "shape", "role", "algorithm", "lr", "weight_decay", "note")]
    for g in groups:
        for name, p in zip(g["param_names"], g["params"]):
            rows.append((
                name, "x".join(map(str, p.shape)), g["role"], g["algorithm"],
                f"{g['lr']:g}" if "lr" in g else "default",
                f"{g['weight_decay']:g}" if "weight_decay" in g else "default",
                notes.get(name, ""),
            ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    n_orth = sum(p.numel() for g in groups if g["algorithm"] == "orthogonal" for p in g["params"])
    n_all = sum(p.numel() for g in groups for p in g["params"])
    lines.append(f"{n_orth:,} of {n_all:,} parameters orthogonalized")
    n_unsure = sum(1 for n in notes.values() if n.startswith("?"))
    if n_unsure:
        lines.append(f"{n_unsure} routing decision(s) marked '?' are unsure: decide them with roles={{name: role}}")
    return "\n".join(lines)
