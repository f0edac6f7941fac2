"""Optimizer step time inside a training loop: ``python -m muonlab perf --train`` (or ``python -m muonlab.perf_train``).

    python -m muonlab perf --train [--d 256] [--layers 4] [--heads 4] [--vocab 512] [--seq 64] [--batch 8]
                                   [--rounds 40] [--warmup 3] [--optimizers muon,namo,namo-d,adago]
                                   [--device cpu] [--threads N]

``muonlab.perf`` times ``step()`` alone, on gradients that stay the same between steps. In training a
step follows a forward and a backward pass, which leave other data in the caches (and allocator) than a
previous step does, so the step and the ratios between optimizers can differ (docs/BENCHMARKS.md). Here
every optimizer trains its own copy of the same small GPT (:class:`muonlab.bench.models.GPT`, routed by
:func:`muonlab.param_groups`) on the same random tokens. A round runs forward, backward and a timed
``step()`` for each optimizer in turn, in an order that rotates every round.

Reported per optimizer: the median step time, the median forward + backward time of its model, the
step's share of the training step, and the step time paired against the first optimizer
(:func:`muonlab.perf.paired_ratio`: median of per-round ratios with a 95% interval).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F

import muonlab
from muonlab.bench.models import GPT
from muonlab.bench.overrides import ConfigError
from muonlab.perf import _sync, paired_ratio


def run(
    optimizers: list[str], *, d: int = 256, layers: int = 4, heads: int = 4, vocab: int = 512, seq: int = 64,
    batch: int = 8, rounds: int = 40, warmup: int = 3, device: str = "cpu",
) -> dict[str, Any]:
    """Train one GPT per optimizer for ``warmup + rounds`` interleaved steps; returns times per optimizer (ms)."""
    known = muonlab.optimizers()
    unknown = [n for n in optimizers if n not in known]
    if unknown or not optimizers:
        raise ConfigError(f"--optimizers: unknown {unknown or optimizers!r}; registered: {', '.join(known)}")
    for name, value in dict(d=d, layers=layers, heads=heads, vocab=vocab, seq=seq, batch=batch, rounds=rounds).items():
        if value < 1:
            raise ConfigError(f"--{name} must be >= 1, got {value}")
    if warmup < 0:
        raise ConfigError(f"--warmup must be >= 0, got {warmup}")
    if d % heads:
        raise ConfigError(f"--d ({d}) must be divisible by --heads ({heads})")
    models, opts = {}, {}
    for name in optimizers:
        torch.manual_seed(0)  # the same initial weights for every optimizer
        models[name] = GPT(vocab, seq, n_layer=layers, n_head=heads, n_embd=d).to(device)
        opts[name] = known[name](muonlab.param_groups(models[name]))
    tokens = torch.Generator().manual_seed(1)
    step_ms: dict[str, list[float]] = {n: [] for n in optimizers}
    fb_ms: dict[str, list[float]] = {n: [] for n in optimizers}
    for r in range(warmup + rounds):
        x = torch.randint(0, vocab, (batch, seq), generator=tokens).to(device)
        for name in optimizers[r % len(optimizers):] + optimizers[: r % len(optimizers)]:
            model, opt = models[name], opts[name]
            _sync(device)
            t0 = time.perf_counter()
            loss = F.cross_entropy(model(x).flatten(0, 1), x.flatten())
            loss.backward()
            _sync(device)
            t1 = time.perf_counter()
            opt.step(loss=loss.detach()) if getattr(opt, "needs_loss", False) else opt.step()
            _sync(device)
            t2 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            if r >= warmup:
                fb_ms[name].append((t1 - t0) * 1e3)
                step_ms[name].append((t2 - t1) * 1e3)
    base = optimizers[0]
    rows = {
        n: dict(step_ms=statistics.median(step_ms[n]), fb_ms=statistics.median(fb_ms[n]),
                share=statistics.median(s / (s + f) for s, f in zip(step_ms[n], fb_ms[n])),
                vs_first=paired_ratio(step_ms[n], step_ms[base]))
        for n in optimizers
    }
    config = dict(d=d, layers=layers, heads=heads, vocab=vocab, seq=seq, batch=batch, rounds=rounds, warmup=warmup,
                  device=device, threads=torch.get_num_threads(), torch=torch.__version__, load=os.getloadavg())
    return dict(config=config, base=base, rows=rows)


def report(res: dict[str, Any]) -> str:
    """A markdown table of :func:`run`'s result, with the configuration above it."""
    c = res["config"]
    lines = [
        f"# GPT d = {c['d']} x {c['layers']} layers ({c['heads']} heads, vocab {c['vocab']}), batch {c['batch']} x "
        f"{c['seq']} tokens; {c['device']}, {c['threads']} threads, torch {c['torch']}; median of {c['rounds']} "
        f"rounds after {c['warmup']} warm-up; load {', '.join(f'{x:.1f}' for x in c['load'])}",
        "",
        f"| optimizer | step ms | forward + backward ms | step share | step vs {res['base']} (paired, 95% CI) |",
        "|---|---|---|---|---|",
    ]
    for name, r in res["rows"].items():
        ratio, lo, hi = r["vs_first"]
        lines.append(f"| {name} | {r['step_ms']:.2f} | {r['fb_ms']:.2f} | {r['share']:.0%} | "
                     f"{ratio:.3f}x ({lo:.3f}-{hi:.3f}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None, parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser,
         prog: str | None = None) -> None:
    ap = parser_class(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--optimizers", default="muon,namo,namo-d,adago", help="registry names; the first is the base")
    ap.add_argument("--d", type=int, default=256, help="model width (default 256)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--seq", type=int, default=64, help="tokens per sequence")
    ap.add_argument("--batch", type=int, default=8, help="sequences per step")
    ap.add_argument("--rounds", type=int, default=40, help="timed rounds (one step of every optimizer each)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    res = run(
        [s.strip() for s in args.optimizers.split(",") if s.strip()], d=args.d, layers=args.layers, heads=args.heads,
        vocab=args.vocab, seq=args.seq, batch=args.batch, rounds=args.rounds, warmup=args.warmup, device=args.device,
    )
    print(report(res))


if __name__ == "__main__":
    main()
