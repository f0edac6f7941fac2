"""The routing rules: how a model's structure decides the role of each trainable parameter.

:func:`route` applies the rules below in order; the first that matches decides. Modules are
recognized by type or by duck typing (never by importing transformers), so the same rules serve
plain PyTorch models, transformers models and custom layers.

1. ``roles={name: role}`` from the caller (a parameter name as in the dry-run table, tied aliases
   included) decides outright.
2. **Embeddings** → ``embedding``: weights of ``nn.Embedding`` / ``nn.EmbeddingBag``, the ≥2-D
   parameters of ``model.get_input_embeddings()`` (the transformers convention), and any weight tied
   to one of them: the same ``Parameter`` reached under another name (GPT-2's ``lm_head``, BERT's
   ``decoder``) or another parameter over overlapping memory of the same storage.
3. **Vectors** → ``vector``: 1-D parameters (gains, biases), and every parameter of a normalization
   layer (``LayerNorm((N, D))`` has a 2-D gain, still elementwise).
4. **Named heads** → ``head``: the ≥2-D parameters of ``model.get_output_embeddings()``, of any
   module listed in ``head=``, and the weight of a Linear-like module whose name ends in
   :data:`HEAD_NAMES`.
5. **Convolutions**: depthwise → ``depthwise_conv``; the first conv with a trainable weight (the
   stem, few input channels) → ``first_conv``; the others → ``hidden``.
6. **Linear-like weights** → ``hidden``, except the output projection (below) → ``head``.
   Linear-like: ``nn.Linear`` and subclasses; transformers' ``Conv1D`` (class name ``Conv1D``, an
   ``nf`` attribute, a weight stored ``(in, out)``); any module with integer ``in_features`` /
   ``out_features`` and a 2-D ``weight`` of those sizes.
7. **Matrices of torch's composite layers** → ``hidden``: ``nn.MultiheadAttention``'s
   ``*_proj_weight``, the ``weight_*`` of ``nn.RNN`` / ``LSTM`` / ``GRU``, ``nn.Bilinear.weight``.
8. **Any other ≥2-D parameter** (a raw ``nn.Parameter``: ViT's ``cls_token`` and ``pos_embed``, a
   positional table) → ``embedding`` (AdamW). Confident when its shape begins with 1 or its own
   name says table (:data:`TABLE_WORDS`); otherwise flagged unsure.

The output projection (rule 6) is looked for only when rules 2-4 found no head (no output
embeddings, no named head, no Linear-like weight tied to an embedding). The candidate is the last
Linear-like module in registration order; with ``out`` its output width, it is the head when
``out`` is the vocabulary size of an embedding or is not a hidden width, where the hidden widths
are the input widths of every other Linear-like module but the first (the first one's input is the
data), the embedding widths, the last dimension of raw tables and the output channels of convs.
A candidate whose ``out`` *is* a hidden width is a hidden matrix in a model with embeddings (a base
model with no head, e.g. ``GPT2Model``) and, as before, the head of a model without embeddings
(an MLP), flagged unsure there. Also flagged unsure: a projection to the vocabulary size whose
width is also a hidden width, and an orthogonalized matrix with a vocabulary-sized dimension.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
from torch import nn

#: module-name endings taken to mean "output head" (for Linear-like modules)
HEAD_NAMES = ("lm_head", "head", "classifier", "output", "fc_out", "readout", "decoder", "score", "unembed", "logits")

#: words (``_``-separated, digits dropped) in a raw parameter's own name that mark a lookup table
TABLE_WORDS = frozenset({
    "pos", "position", "positions", "positional", "posemb", "embed", "embeds", "embedding", "embeddings", "emb",
    "token", "tokens", "cls", "table", "prompt", "prompts", "register", "registers", "latent", "latents",
    "wpe", "wte",
})

OVERRIDE = "roles= override"  # the note of rule 1: later checks leave the caller's decisions alone

ROLES = {
    "hidden": "orthogonal",
    "embedding": "adamw",
    "head": "adamw",
    "vector": "adamw",
    "first_conv": "adamw",
    "depthwise_conv": "adamw",
}


class Route(NamedTuple):
    """One routing decision: the parameter, its role, why (``note``) and whether the rules were sure."""

    name: str
    param: nn.Parameter
    role: str
    note: str = ""
    unsure: bool = False
    layout: str = "out_in"  # "in_out": the weight is stored (in, out) and is orthogonalized as W^T


def linear_dims(module: nn.Module) -> tuple[int, int] | None:
    """``(in, out)`` widths of a Linear-like module (rule 6), ``None`` for anything else."""
    # the registered Parameter, not ``module.weight``: a parametrized weight would be recomputed
    w = module._parameters.get("weight")
    if w is None or isinstance(w, nn.parameter.UninitializedParameter) or w.dim() != 2:
        return None
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D" and getattr(module, "nf", None) == w.shape[1]:
        return w.shape[0], w.shape[1]  # transformers' Conv1D stores its weight (in, out)
    i, o = getattr(module, "in_features", None), getattr(module, "out_features", None)
    if isinstance(i, int) and isinstance(o, int) and tuple(w.shape) in ((o, i), (i, o)):
        return i, o
    return None


def _is_norm(module: nn.Module) -> bool:
    norms = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, getattr(nn, "RMSNorm", nn.LayerNorm))
    return isinstance(module, norms) or type(module).__name__.lower().endswith("norm")


def _composite_matrix(module: nn.Module, p_name: str) -> bool:
    return (
        (isinstance(module, nn.MultiheadAttention) and p_name.endswith("proj_weight"))
        or (isinstance(module, nn.RNNBase) and p_name.startswith("weight_"))
        or (isinstance(module, nn.Bilinear) and p_name == "weight")
    )


def _model_module(model: nn.Module, method: str) -> nn.Module | None:
    """``model.get_input_embeddings()`` / ``get_output_embeddings()`` where the model has it."""
    fn = getattr(model, method, None)
    if not callable(fn):
        return None
    try:
        out = fn()
    except (NotImplementedError, AttributeError, TypeError):  # transformers' base classes may not implement it
        return None
    return out if isinstance(out, nn.Module) else None


def _memory(p: torch.Tensor) -> tuple[int, int, int] | None:
    """``(storage pointer, first byte, end byte)`` of ``p``, ``None`` where it has no plain memory."""
    try:
        ptr = p.untyped_storage().data_ptr()
    except Exception:  # tensor subclasses (DTensor, fakes) have no plain storage: they cannot alias by memory
        return None
    if ptr == 0 or p.numel() == 0 or p.device.type == "meta":
        return None
    extent = 1 + sum((n - 1) * abs(s) for n, s in zip(p.shape, p.stride()))
    start = p.storage_offset() * p.element_size()
    return ptr, start, start + extent * p.element_size()


def _overlaps(a: tuple[int, int, int] | None, others: list[tuple[int, int, int]]) -> bool:
    # overlap, not just the same storage: views into one flat buffer (FSDP1, fused inits) are not ties
    return a is not None and any(a[0] == b[0] and a[1] < b[2] and b[1] < a[2] for b in others)


def route(
    model: nn.Module,
    head: Sequence[str] = (),
    roles: Mapping[str, str] | None = None,
    vocab_warning: int = 8192,
) -> list[Route]:
    """Route every trainable parameter of ``model`` once, in ``named_parameters()`` order.

    Args:
        model: the model.
        head: extra module names whose ≥2-D parameters are output heads.
        roles: explicit ``{parameter name: role}`` decisions (rule 1); names may be tied aliases.
        vocab_warning: flag an orthogonalized matrix with a dimension at least this large.

    Returns:
        One :class:`Route` per trainable parameter.

    Raises:
        ValueError: an unknown role or parameter name in ``roles``, a 1-D parameter routed ``hidden``,
            or an uninitialized lazy parameter.
    """
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    for name, p in params:
        if isinstance(p, nn.parameter.UninitializedParameter):
            raise ValueError(f"param_groups: {name} is an uninitialized lazy parameter; run one forward pass first")
    aliases: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(p), []).append(name)
    forced = _forced(model, roles or {})
    owners: dict[int, list[tuple[nn.Module, str]]] = {}  # every module holding the tensor, registration order
    for _, module in model.named_modules(remove_duplicate=False):
        for p_name, p in module.named_parameters(recurse=False):
            owners.setdefault(id(p), []).append((module, p_name))

    # rule 2 inputs: embedding parameters by module type and by the transformers convention
    inp = _model_module(model, "get_input_embeddings")
    emb: dict[int, str] = {}
    for m in model.modules():
        if isinstance(m, (nn.Embedding, nn.EmbeddingBag)):
            emb.update({id(q): type(m).__name__ for q in m.parameters(recurse=False)})
    if inp is not None:
        emb.update({id(q): "input embeddings" for q in inp.parameters() if q.dim() >= 2 and id(q) not in emb})
    emb_memory = [m for m in (_memory(q) for q in model.parameters() if id(q) in emb) if m is not None]
    out_mod = _model_module(model, "get_output_embeddings")
    head_ids = {id(q) for q in out_mod.parameters() if q.dim() >= 2} if out_mod is not None else set()
    # Linear-like modules outside the input embeddings (a Linear used as the input table is no head candidate)
    inside_inp = {id(m) for m in inp.modules()} if inp is not None else set()
    linears = [
        (n, m, d) for n, m in model.named_modules() if (d := linear_dims(m)) is not None and id(m) not in inside_inp
    ]
    for n, m in model.named_modules():
        if n in head or (linear_dims(m) is not None and n.rsplit(".", 1)[-1] in HEAD_NAMES):
            head_ids.update(id(q) for q in m.parameters(recurse=False) if q.dim() >= 2)
    convs = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    first_conv = next((m for m in convs if getattr(m._parameters.get("weight"), "requires_grad", False)), None)
    tied_linear = any(
        id(w) in emb or _overlaps(_memory(w), emb_memory) for w in (m._parameters["weight"] for _, m, _ in linears)
    )

    routes: list[Route] = []
    raw: list[tuple[str, nn.Parameter, str]] = []
    for name, p in params:
        module, p_name = owners[id(p)][0]
        others = [a for a in aliases[id(p)] if a != name]
        tied = f"; tied: also {', '.join(others)}" if others else ""
        if id(p) in forced:
            routes.append(Route(name, p, forced[id(p)], OVERRIDE))
        elif id(p) in emb:
            routes.append(Route(name, p, "embedding", emb[id(p)] + tied))
        elif _overlaps(_memory(p), emb_memory):
            routes.append(Route(name, p, "embedding", "shares memory with an embedding (tied)"))
        elif p.dim() < 2:
            routes.append(Route(name, p, "vector"))
        elif _is_norm(module):
            routes.append(Route(name, p, "vector", f"{type(module).__name__} gain"))
        elif id(p) in head_ids:
            why = "output embeddings" if out_mod is not None and module is out_mod else "named head"
            routes.append(Route(name, p, "head", why))
        elif isinstance(module, nn.modules.conv._ConvNd):
            if module.groups > 1 and module.groups == module.in_channels:
                routes.append(Route(name, p, "depthwise_conv", "depthwise conv"))
            elif module is first_conv:
                routes.append(Route(name, p, "first_conv", "first conv"))
            else:
                routes.append(Route(name, p, "hidden"))
        elif p_name == "weight" and linear_dims(module) is not None:
            if type(module).__name__ == "Conv1D":
                routes.append(Route(name, p, "hidden", "Conv1D, stored (in, out): layout in_out", layout="in_out"))
            else:
                routes.append(Route(name, p, "hidden"))
        elif _composite_matrix(module, p_name):
            routes.append(Route(name, p, "hidden", type(module).__name__))
        else:
            raw.append((name, p, type(module).__name__))
            routes.append(_raw_route(name, p, p_name, type(module).__name__))

    if not head_ids and not tied_linear and linears:
        has_emb = bool(emb) or bool(raw)
        widths = {d[0] for _, _, d in linears[1:]}  # the first Linear's input is the data, not a hidden width
        widths |= {m.embedding_dim for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))}
        widths |= {p.shape[-1] for _, p, _ in raw} | {m.out_channels for m in convs}
        vocab = {m.num_embeddings for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))}
        routes = _output_projection(routes, linears[-1][1], linears[-1][2][1], widths, vocab, has_emb)
    return [_flag_vocab(r, vocab_warning) for r in routes]


def _declared(model: nn.Module) -> dict[str, str]:
    """``{full parameter name: role}`` from modules that declare ``muonlab_roles = {local name: role}``.

    The hook for custom layers whose raw parameters the structural rules cannot place (a bare
    ``nn.Parameter`` matrix that *is* a hidden weight); an explicit ``roles=`` entry wins over it.
    """
    out: dict[str, str] = {}
    for prefix, module in model.named_modules():
        declared = getattr(module, "muonlab_roles", None)
        if not declared:
            continue
        if not isinstance(declared, Mapping):
            raise ValueError(f"{type(module).__name__}.muonlab_roles must map parameter names to roles, got {declared!r}")
        out.update({f"{prefix}.{name}" if prefix else name: role for name, role in declared.items()})
    return out


def _forced(model: nn.Module, roles: Mapping[str, str]) -> dict[int, str]:
    by_name = dict(model.named_parameters(remove_duplicate=False))
    out: dict[int, str] = {}
    for name, role in {**_declared(model), **roles}.items():
        if role not in ROLES:
            raise ValueError(f"roles[{name!r}]={role!r}: expected one of {tuple(ROLES)}")
        if name not in by_name:
            raise ValueError(f"roles: the model has no parameter named {name!r} (use the names of the dry-run table)")
        if ROLES[role] == "orthogonal" and by_name[name].dim() < 2:
            raise ValueError(f"roles[{name!r}]={role!r}: a {by_name[name].dim()}-D parameter cannot be orthogonalized")
        out[id(by_name[name])] = role
    return out


def _raw_route(name: str, p: nn.Parameter, p_name: str, owner: str) -> Route:
    """Rule 8: a ≥2-D parameter that is no Linear/Conv-like weight goes to AdamW, sure or not."""
    shape = "x".join(map(str, p.shape))
    if p.shape[0] == 1 or TABLE_WORDS.intersection(re.findall(r"[a-z]+", p_name.lower())):
        return Route(name, p, "embedding", f"raw parameter {shape}: table / token")
    kind = f"{p.dim()}-D stack (experts?)" if p.dim() >= 3 else "matrix"
    return Route(name, p, "embedding", f"raw {kind} on {owner}, not a Linear/Conv-like weight", unsure=True)


def _output_projection(
    routes: list[Route], module: nn.Module, out: int, widths: set[int], vocab: set[int], has_emb: bool
) -> list[Route]:
    """Rule 6's exception: decide whether the last Linear-like module is the output head."""
    if out in vocab:
        role, note, unsure = "head", f"last Linear, out {out} = vocabulary size", out in widths
    elif out not in widths:
        role, note, unsure = "head", f"last Linear, out {out} is no hidden width", False
    elif not has_emb:
        role, note, unsure = "head", f"last Linear of a model without embeddings; out {out} is a hidden width", True
    else:
        return routes  # a base model (embeddings, no head): its last Linear maps back to a hidden width
    weight = module._parameters["weight"]
    decide = [r.param is weight and r.role == "hidden" and r.note != OVERRIDE for r in routes]
    return [Route(r.name, r.param, role, note, unsure) if d else r for r, d in zip(routes, decide)]


def _flag_vocab(r: Route, vocab_warning: int) -> Route:
    rows = r.param.shape[0]
    if r.role != "hidden" or r.note == OVERRIDE or max(rows, r.param.numel() // max(rows, 1)) < vocab_warning:
        return r
    note = f"vocabulary-sized dimension (>= {vocab_warning}): an embedding or output head?"
    return r._replace(note=note, unsure=True)
