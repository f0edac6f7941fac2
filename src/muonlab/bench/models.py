"""Small models for the benchmark tasks: a GPT, an MLP and a CNN, in plain PyTorch.

Every model is built on the meta device and then initialized from an explicit
``torch.Generator`` (``init_weights``), so construction never touches the global RNG and the same
seed gives bitwise-identical parameters. Names follow the routing conventions: token embedding
``wte`` (``nn.Embedding``), LM head ``lm_head`` (``nn.Linear``), first conv ``conv1``, classifier
``head``.

References:
    Radford et al., "Language Models are Unsupervised Multitask Learners" (GPT-2: pre-LN blocks,
    N(0, 0.02) init, residual projections scaled by 1/sqrt(2 n_layer)); Karpathy, nanoGPT
    ``model.py`` (the same architecture in plain PyTorch; no code copied).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ATTN_IMPLS", "CausalSelfAttention", "GPT", "MLP", "CNN", "build"]

ATTN_IMPLS = ("sdpa", "math")


def build(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Construct ``factory()`` on the meta device, materialize on CPU, and init from ``seed``."""
    with torch.device("meta"):
        model = factory()
    model = model.to_empty(device="cpu")
    if hasattr(model, "tie"):  # to_empty gives every module its own tensor: restore sharing
        model.tie()
    model.init_weights(torch.Generator().manual_seed(seed))  # type: ignore[operator]
    return model


def _normal(p: torch.Tensor, std: float, g: torch.Generator) -> None:
    nn.init.normal_(p, 0.0, std, generator=g)


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention with separate ``c_q``, ``c_k``, ``c_v`` and ``c_proj`` matrices.

    ``attn_impl="sdpa"`` calls ``F.scaled_dot_product_attention``; ``"math"`` spells out
    ``softmax(Q Kᵀ / sqrt(d) + causal mask) V`` in plain ops so double backward and
    forward-over-reverse work (fused SDPA kernels lack second derivatives, pytorch#116350).
    Separate Q/K/V matrices let each be orthogonalized and probed on its own.
    """

    def __init__(self, n_embd: int, n_head: int, bias: bool = False, attn_impl: str = "sdpa") -> None:
        super().__init__()
        self.n_head, self.attn_impl = n_head, attn_impl
        self.c_q = nn.Linear(n_embd, n_embd, bias=bias)
        self.c_k = nn.Linear(n_embd, n_embd, bias=bias)
        self.c_v = nn.Linear(n_embd, n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bsz, t, c = x.shape
        hs = c // self.n_head
        q, k, v = (lin(x).view(bsz, t, self.n_head, hs).transpose(1, 2) for lin in (self.c_q, self.c_k, self.c_v))
        if self.attn_impl == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif self.attn_impl == "math":
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (b, h, t, t)
            mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
            y = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v
        else:
            raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {self.attn_impl!r}")
        return self.c_proj(y.transpose(1, 2).reshape(bsz, t, c))


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))`` (GELU, 4x width)."""

    def __init__(self, n_embd: int, n_head: int, bias: bool, attn_impl: str) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, bias, attn_impl)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(n_embd, 4 * n_embd, bias=bias))
        self.mlp.add_module("act", nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(4 * n_embd, n_embd, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """A small causal transformer LM (GPT-2 layout, pre-LN, learned positions).

    Args:
        vocab_size, block_size, n_layer, n_head, n_embd: the usual sizes.
        bias: biases in linears and LayerNorms (off by default).
        tie_weights: share ``lm_head.weight`` with ``wte.weight``.
        attn_impl: ``"sdpa"`` (fast) or ``"math"`` (explicit softmax; second-order friendly).
    """

    def __init__(
        self, vocab_size: int, block_size: int, n_layer: int = 2, n_head: int = 4, n_embd: int = 128,
        *, bias: bool = False, tie_weights: bool = False, attn_impl: str = "sdpa",
    ) -> None:
        super().__init__()
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}")
        if n_embd % n_head:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        self.block_size, self.n_layer = block_size, n_layer
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.h = nn.ModuleList(Block(n_embd, n_head, bias, attn_impl) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.tie_weights = tie_weights
        self.tie()

    def tie(self) -> None:
        """Share ``lm_head.weight`` with ``wte.weight`` when ``tie_weights`` is set."""
        if self.tie_weights:
            self.lm_head.weight = self.wte.weight

    @property
    def attn_impl(self) -> str:
        """Attention path of every block; assign to switch all of them."""
        return self.h[0].attn.attn_impl if len(self.h) else "sdpa"

    @attn_impl.setter
    def attn_impl(self, value: str) -> None:
        if value not in ATTN_IMPLS:
            raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {value!r}")
        for block in self.h:
            block.attn.attn_impl = value

    def init_weights(self, g: torch.Generator) -> None:
        """GPT-2 init from ``g``: N(0, 0.02), residual projections N(0, 0.02/sqrt(2 n_layer))."""
        for name, p in self.named_parameters():  # tied weights are visited once
            if name.endswith("c_proj.weight"):
                _normal(p.data, 0.02 / math.sqrt(2 * max(1, self.n_layer)), g)
            elif p.dim() >= 2:
                _normal(p.data, 0.02, g)
            elif "ln_" in name and name.endswith("weight"):  # LayerNorm gains
                p.data.fill_(1.0)
            else:
                p.data.zero_()

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, t, vocab)`` for token ids ``(batch, t)``."""
        t = idx.size(1)
        if t > self.block_size:
            raise ValueError(f"sequence length {t} exceeds block_size {self.block_size}")
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


class MLP(nn.Module):
    """``d_in -> width -> ... -> d_out`` with tanh (smooth targets favour smooth activations).

    Layers are ``layers.0 ... layers.{depth-1}``; the first is the input matrix, the last the
    output head. Init: N(0, 1/fan_in) weights (LeCun), zero biases.
    """

    def __init__(self, d_in: int, width: int, depth: int, d_out: int = 1) -> None:
        super().__init__()
        dims = [d_in] + [width] * (depth - 1) + [d_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def init_weights(self, g: torch.Generator) -> None:
        """LeCun-normal weights from ``g``, zero biases."""
        for layer in self.layers:
            _normal(layer.weight.data, 1.0 / math.sqrt(layer.in_features), g)
            layer.bias.data.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = torch.tanh(layer(x))
        return self.layers[-1](x)


class CNN(nn.Module):
    """Small VGG-style classifier: ``conv1`` (stem) -> [conv, ReLU, maxpool] x 2 -> GAP -> ``head``.

    Works for any input size >= 4 (8x8 digits, 32x32 CIFAR-10); no BatchNorm, so train and eval
    modes agree and no running statistics enter the optimizer comparison.
    """

    def __init__(self, in_channels: int, n_classes: int, width: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.conv3 = nn.Conv2d(2 * width, 4 * width, 3, padding=1)
        self.head = nn.Linear(4 * width, n_classes)

    def init_weights(self, g: torch.Generator) -> None:
        """He-normal convs (ReLU), N(0, 1/fan_in) head, zero biases, all from ``g``."""
        for conv in (self.conv1, self.conv2, self.conv3):
            _normal(conv.weight.data, math.sqrt(2.0 / conv.weight[0].numel()), g)
            conv.bias.data.zero_()
        _normal(self.head.weight.data, 1.0 / math.sqrt(self.head.in_features), g)
        self.head.bias.data.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.max_pool2d(F.relu(self.conv3(x)), 2)
        return self.head(x.mean((2, 3)))
