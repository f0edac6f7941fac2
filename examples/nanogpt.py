"""A nanoGPT-style character LM trained with a muonlab optimizer on text that ships with Python.

    python examples/nanogpt.py                      # 300 steps of a 2-layer, 128-wide model
    python examples/nanogpt.py --optimizer namo --steps 1000 --width 256
    python examples/nanogpt.py --tiny               # a few steps at toy size (what the tests run)

Everything a user writes is here: the model (a small pre-norm causal transformer in the style of
Karpathy's nanoGPT), the data (bytes of the Python standard library's own sources, split into
train / val by ``muonlab.data.text_splits``), the optimizer, and the schedule:

* ``muonlab.param_groups(model)`` routes the hidden matrices (attention and MLP weights) to the
  orthogonalized update and the embedding, the output head, norms and biases to AdamW, all in one
  ``torch.optim.Optimizer`` (it prints the routing table with ``verbose=True``);
* a linear warm-up then cosine decay, as a ``LambdaLR`` over every group (orthogonal and AdamW
  alike, each keeping its own base lr).

References:
    Karpathy, nanoGPT, https://github.com/karpathy/nanoGPT (model and training loop shape);
    Jordan et al., Muon, https://kellerjordan.github.io/posts/muon/ (hidden matrices only).
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

import muonlab
from muonlab.data import text_splits


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width, bias=False), nn.GELU(), nn.Linear(4 * width, width, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.heads, C // self.heads).transpose(1, 3).unbind(2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, heads, T, C/heads)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab: int, width: int, depth: int, heads: int, context: int):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab, width)
        self.pos_emb = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.ln_f = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))  # (B, T, vocab)


def batch(data: torch.Tensor, batch_size: int, context: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows: inputs and next-byte targets, each (batch_size, context)."""
    starts = torch.randint(len(data) - context - 1, (batch_size,), generator=gen)
    windows = torch.stack([data[s : s + context + 1] for s in starts.tolist()])
    return windows[:, :-1], windows[:, 1:]


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """lr multiplier: linear warm-up, then cosine decay to 10% of the base lr."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def evaluate(model: nn.Module, data: torch.Tensor, args: argparse.Namespace) -> float:
    model.eval()
    gen = torch.Generator().manual_seed(1234)  # the same validation windows every time
    losses = []
    for _ in range(args.eval_batches):
        x, y = batch(data, args.batch_size, args.context, gen)
        losses.append(F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item())
    model.train()
    return sum(losses) / len(losses)


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--optimizer", default="muon", choices=sorted(muonlab.optimizers()))
    p.add_argument("--lr", type=float, default=0.02, help="lr of the orthogonalized hidden matrices")
    p.add_argument("--adamw-lr", type=float, default=3e-3, help="lr of embeddings, head, norms")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="toy size, a few steps (smoke test)")
    args = p.parse_args(argv)
    if args.tiny:
        args.steps, args.warmup, args.width, args.depth, args.heads = 6, 2, 32, 1, 2
        args.context, args.batch_size, args.eval_batches = 16, 4, 2

    torch.manual_seed(args.seed)
    train, val = text_splits(max_bytes=200_000 if args.tiny else 4_000_000)  # byte ids of the stdlib's .py files
    model = GPT(256, args.width, args.depth, args.heads, args.context)
    groups = muonlab.param_groups(model, verbose=True)  # hidden matrices -> orthogonal, the rest -> AdamW
    opt = muonlab.optimizers()[args.optimizer](groups, lr=args.lr, adamw_lr=args.adamw_lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, args.steps, args.warmup))

    gen = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    for step in range(args.steps):
        x, y = batch(train, args.batch_size, args.context, gen)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lr_factor = sched.get_last_lr()[0] / args.lr  # the multiplier this step used
        sched.step()
        if step % max(1, args.steps // 10) == 0 or step == args.steps - 1:
            print(f"step {step:5d}  train loss {loss.item():.4f}  lr x{lr_factor:.3f}")
    val_loss = evaluate(model, val, args)
    print(f"{args.optimizer}: val loss {val_loss:.4f} ({val_loss / math.log(2):.3f} bits/byte) "
          f"after {args.steps} steps in {time.perf_counter() - start:.1f} s")
    return val_loss


if __name__ == "__main__":
    main()
