"""Routing: which parameters of a model are orthogonalized and which use AdamW.

Muon-family updates are meant for *hidden* weight matrices. Embeddings (a lookup, not a linear
map), the output head (its rows are classes / tokens), 1-D gains and biases, the first conv layer
(few input channels) and depthwise convs (one tiny filter per channel) go to AdamW. This is the
recipe of Keller Jordan's Muon README and of Moonlight; :func:`param_groups` applies it, checks
that every trainable parameter is routed exactly once and can print a dry-run table.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from torch import nn

#: module-name endings taken to mean "output head"
HEAD_NAMES = ("lm_head", "head", "classifier", "output", "fc_out", "readout")

ROLES = {
    "hidden": "orthogonal",
    "embedding": "adamw",
    "head": "adamw",
    "vector": "adamw",
    "first_conv": "adamw",
    "depthwise_conv": "adamw",
}


def classify(model: nn.Module, head: Sequence[str] = ()) -> dict[str, str]:
    """Map each trainable parameter name to its role (see :data:`ROLES`).

    Heads are ``nn.Linear`` modules whose name ends in one of :data:`HEAD_NAMES` or is listed in
    ``head``; in a model with no embedding and no named head, the last ``nn.Linear`` is the head.
    A weight tied between an embedding and a head is routed once, as an embedding.

    Args:
        model: the model.
        head: extra module names to treat as output heads (besides :data:`HEAD_NAMES`).
    """
    roles: dict[int, str] = {}
    names: dict[int, str] = {}
    first_conv_seen = False
    embeddings = set()
    for mod_name, module in model.named_modules():
        last = mod_name.rsplit(".", 1)[-1]
        for p_name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in roles:
                # tied weights appear under several modules: the first role wins, except that a
                # weight shared by an embedding and a head is an embedding (routed to AdamW either way)
                continue
            names[id(p)] = f"{mod_name}.{p_name}" if mod_name else p_name
            if isinstance(module, nn.Embedding):
                role = "embedding"
                embeddings.add(id(p))
            elif p.dim() < 2:
                role = "vector"
            elif isinstance(module, nn.Linear) and (last in HEAD_NAMES or mod_name in head):
                role = "head"
            elif isinstance(module, nn.modules.conv._ConvNd):
                if module.groups > 1 and module.groups == module.in_channels:
                    role = "depthwise_conv"
                elif not first_conv_seen:
                    role = "first_conv"
                else:
                    role = "hidden"
            elif mod_name in head:
                role = "head"
            else:
                role = "hidden"
            if isinstance(module, nn.modules.conv._ConvNd) and p.dim() >= 2:
                first_conv_seen = True
            roles[id(p)] = role
    if "head" not in roles.values() and not embeddings:
        # An MLP / CNN without named head: its last Linear maps features to outputs (classes),
        # which the recipe keeps in AdamW. Models with embeddings name their head or tie it.
        linears = [m.weight for m in model.modules() if isinstance(m, nn.Linear) and m.weight.requires_grad]
        if linears and roles.get(id(linears[-1])) == "hidden":
            roles[id(linears[-1])] = "head"
    return {names[i]: roles[i] for i in roles}


def param_groups(
    model: nn.Module,
    *,
    lr: float | None = None,
    weight_decay: float | None = None,
    adamw_lr: float | None = None,
    adamw_weight_decay: float | None = None,
    head: Sequence[str] = (),
    vocab_warning: int = 8192,
    verbose: bool = False,
) -> list[dict[str, Any]]:
    """Param groups for any muonlab optimizer: hidden matrices orthogonalized, the rest AdamW.

    One group per role that occurs (``hidden``, ``embedding``, ``head``, ``vector``, ``first_conv``,
    ``depthwise_conv``), each with ``algorithm``, ``role`` and ``param_names``. ``lr`` /
    ``weight_decay`` are set on the orthogonal group and ``adamw_lr`` / ``adamw_weight_decay`` on the
    AdamW groups when given (otherwise the optimizer's defaults apply). 1-D parameters (gains,
    biases) get ``weight_decay=0``.

    Args:
        model: the model whose trainable parameters are routed.
        lr, weight_decay, adamw_lr, adamw_weight_decay: optional per-group overrides.
        head: extra module names that are output heads.
        vocab_warning: warn when an orthogonalized matrix has a dimension at least this large
            (it is probably a vocabulary projection that belongs in AdamW).
        verbose: print the dry-run table (name, shape, role, algorithm, lr, weight decay).

    Returns:
        A list of group dicts to pass to an optimizer.

    Example:
        >>> groups = muonlab.param_groups(model, verbose=True)
        >>> opt = muonlab.Muon(groups, lr=0.02, adamw_lr=3e-4)
    """
    roles = classify(model, head)
    by_name = dict(model.named_parameters())
    groups: dict[str, dict[str, Any]] = {}
    for name, role in roles.items():
        g = groups.setdefault(role, {"params": [], "param_names": [], "algorithm": ROLES[role], "role": role})
        g["params"].append(by_name[name])
        g["param_names"].append(name)
    for role, g in groups.items():
        if g["algorithm"] == "orthogonal":
            _set(g, "lr", lr)
            _set(g, "weight_decay", weight_decay)
            for name, p in zip(g["param_names"], g["params"]):
                if max(p.shape[0], p[0].numel()) >= vocab_warning:
                    warnings.warn(
                        f"param_groups: {name} {tuple(p.shape)} will be orthogonalized but has a vocabulary-sized "
                        f"dimension (>= {vocab_warning}); if it is an embedding or output head, pass head=[...] ",
                        UserWarning,
                        stacklevel=2,
                    )
        else:
            _set(g, "lr", adamw_lr)
            _set(g, "weight_decay", 0.0 if role == "vector" else adamw_weight_decay)
    _check_routed_once(model, groups.values())
    out = [groups[r] for r in ROLES if r in groups]
    if verbose:
        print(format_table(out))
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


def format_table(groups: list[dict[str, Any]]) -> str:
    """The dry-run table as text: one row per parameter."""
    rows = [("name", "shape", "role", "algorithm", "lr", "weight_decay")]
    for g in groups:
        for name, p in zip(g["param_names"], g["params"]):
            rows.append((
                name, "x".join(map(str, p.shape)), g["role"], g["algorithm"],
                f"{g['lr']:g}" if "lr" in g else "default",
                f"{g['weight_decay']:g}" if "weight_decay" in g else "default",
            ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    n_orth = sum(p.numel() for g in groups if g["algorithm"] == "orthogonal" for p in g["params"])
    n_all = sum(p.numel() for g in groups for p in g["params"])
    lines.append(f"{n_orth:,} of {n_all:,} parameters orthogonalized")
    return "\n".join(lines)
