"""Named parameter sets for ``muonlab perf``: shapes only, split into hidden matrices and the AdamW rest.

Every set is a pair of shape lists: ``hidden`` (the orthogonalized weights, as their matrix views
``(out, rest)``) and ``adamw`` (embeddings, heads, gains, biases, first convs). The benchmark builds
fp32 tensors of these shapes with fixed random gradients; what is timed is ``step()`` alone.

* ``gpt2-small`` / ``gpt2-medium`` / ``gpt2-large``: GPT-2's widths and depths (d = 768 / 1024 / 1280,
  12 / 24 / 36 layers; Radford et al. 2019) with vocabulary 50257 and context 1024; per layer qkv
  ``3d x d``, projection ``d x d``, MLP ``4d x d`` and ``d x 4d`` (hidden) and two LayerNorms and four
  biases (AdamW); token and position embeddings and the final LayerNorm (AdamW; the head is tied).
* ``gpt``: the same block at any ``--d`` / ``--layers`` with ``--vocab`` (default 0: no embeddings).
* ``few-large``: four 2048-wide matrices (2048^2 twice, 8192 x 2048, 2048 x 8192).
* ``many-small``: 256 matrices 64 x 64 and 64 of 128 x 64, with 256 gains of 64.
* ``resnet-small``: ResNet-18 for CIFAR-10 (He et al. 2016): 3x3 convs viewed as ``(out, 9 in)``,
  1x1 shortcut convs, BatchNorm gains and biases; the first conv and the 10-way head on AdamW.
* ``module:callable``: your model, ``callable()`` returning an ``nn.Module``, routed by
  ``muonlab.param_groups`` (hidden groups -> ``hidden``, every other group -> ``adamw``).
"""

from __future__ import annotations

import importlib
import math

Shape = tuple[int, ...]
NAMED = ("gpt2-small", "gpt2-medium", "gpt2-large", "gpt", "few-large", "many-small", "resnet-small")
GPT2 = {"gpt2-small": (768, 12), "gpt2-medium": (1024, 24), "gpt2-large": (1280, 36)}


def gpt_shapes(d: int, layers: int, vocab: int = 0, context: int = 1024) -> tuple[list[Shape], list[Shape]]:
    """(hidden, adamw) shapes of a GPT-2-style stack."""
    hidden = [(3 * d, d), (d, d), (4 * d, d), (d, 4 * d)] * layers
    adamw = [(d,), (d,), (d,), (d,), (3 * d,), (d,), (4 * d,), (d,)] * layers + [(d,), (d,)]
    if vocab:
        adamw += [(vocab, d), (context, d)]
    return hidden, adamw


def resnet18_cifar_shapes() -> tuple[list[Shape], list[Shape]]:
    """(hidden, adamw) shapes of ResNet-18 for CIFAR-10, conv weights as their (out, in*kh*kw) views."""
    hidden: list[Shape] = []
    adamw: list[Shape] = [(64, 3 * 9), (64,), (64,)]  # first conv (AdamW) and its BatchNorm
    c_in = 64
    for c in (64, 128, 256, 512):
        for block in range(2):
            stride_in = c_in if block == 0 else c
            hidden += [(c, 9 * stride_in), (c, 9 * c)]
            adamw += [(c,)] * 4
            if block == 0 and stride_in != c:
                hidden.append((c, stride_in))  # 1x1 shortcut
                adamw += [(c,)] * 2
        c_in = c
    adamw += [(10, 512), (10,)]
    return hidden, adamw


def user_shapes(spec: str) -> tuple[list[Shape], list[Shape]]:
    """(hidden, adamw) of ``module:callable`` as routed by ``muonlab.param_groups``."""
    from .routing import param_groups

    module_name, _, attr = spec.partition(":")
    model = getattr(importlib.import_module(module_name), attr)()
    hidden, adamw = [], []
    for group in param_groups(model):
        for p in group["params"]:
            if group["algorithm"] == "adamw":
                adamw.append(tuple(p.shape))
            elif group.get("layout", "out_in") == "in_out":
                hidden.append((p.shape[1], p.shape[0]))
            else:
                hidden.append((p.shape[0], math.prod(p.shape[1:])))
    return hidden, adamw


def shape_set(name: str, d: int = 768, layers: int | None = None, vocab: int = 0) -> tuple[list[Shape], list[Shape]]:
    """The (hidden, adamw) shapes of a named set; ``layers`` overrides the GPT sets' depth."""
    if name in GPT2:
        width, depth = GPT2[name]
        return gpt_shapes(width, layers or depth, vocab=50257)
    if name == "gpt":
        return gpt_shapes(d, layers or 12, vocab=vocab)
    if name == "few-large":
        return [(2048, 2048), (2048, 2048), (8192, 2048), (2048, 8192)], [(2048,), (2048,)]
    if name == "many-small":
        return [(64, 64)] * 256 + [(128, 64)] * 64, [(64,)] * 256
    if name == "resnet-small":
        return resnet18_cifar_shapes()
    if ":" in name:
        return user_shapes(name)
    raise ValueError(f"shape set {name!r}: expected one of {NAMED} or module:callable")
