"""Step-time benchmark: muonlab optimizers vs ``torch.optim.Muon`` side by side in one process.

    python -m muonlab.perf [--device cuda] [--d 768] [--layers 12] [--steps 20]

The parameter set is the hidden matrices of a GPT-2-style stack (per layer: qkv ``3d x d``, attention
projection ``d x d``, MLP ``4d x d`` and ``d x 4d``). Every optimizer sees the same gradients; the
figure is the median wall time of ``step()`` (synchronized on GPUs), and ratios are taken against
``torch.optim.Muon`` measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from . import optim


def gpt_matrices(d: int, layers: int, device: str, dtype: torch.dtype) -> list[torch.Tensor]:
    """Hidden matrices of a GPT-2-style model of width ``d``."""
    shapes = [(3 * d, d), (d, d), (4 * d, d), (d, 4 * d)] * layers
    g = torch.Generator().manual_seed(0)
    params = []
    for s in shapes:
        p = torch.randn(*s, generator=g).mul_(0.02).to(device=device, dtype=dtype).requires_grad_()
        p.grad = torch.randn(*s, generator=g).to(device=device, dtype=dtype)
        params.append(p)
    return params


def syncs_in_step(make: Callable[[list[torch.Tensor]], torch.optim.Optimizer], params: list[torch.Tensor]) -> str:
    """Run two steps under ``torch.cuda.set_sync_debug_mode("error")``: "none" or the error."""
    if not params[0].is_cuda:
        return "-"
    opt = make(params)
    opt.step()  # lazy state creation is allowed to allocate
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        opt.step()
        return "none"
    except RuntimeError as err:
        return str(err).splitlines()[0][:60]
    finally:
        torch.cuda.set_sync_debug_mode("default")


def time_steps(make: Callable[[list[torch.Tensor]], torch.optim.Optimizer], params: list[torch.Tensor], steps: int) -> float:
    """Median milliseconds per ``step()`` after two warm-up steps."""
    opt = make(params)
    sync = torch.cuda.synchronize if params[0].is_cuda else (lambda: None)
    times = []
    for i in range(steps + 2):
        sync()
        t0 = time.perf_counter()
        opt.step()
        sync()
        if i >= 2:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def candidates() -> dict[str, Callable[[list[torch.Tensor]], torch.optim.Optimizer]]:
    """Name -> optimizer factory; all Muon variants use 5 Jordan steps and the spectral lr rule."""
    out: dict[str, Callable] = {}
    if hasattr(torch.optim, "Muon"):
        out["torch.optim.Muon (bf16 NS)"] = lambda ps: torch.optim.Muon(ps, lr=0.02, weight_decay=0.0)
    out["muonlab.Muon ns_dtype=bfloat16"] = lambda ps: optim.Muon([{"params": ps}], ns_dtype="bfloat16")
    out["muonlab.Muon ns_dtype=float32"] = lambda ps: optim.Muon([{"params": ps}], ns_dtype="float32")
    for name, cls in optim.optimizers().items():
        if name not in ("muon", "adamw"):
            out[f"muonlab.{cls.__name__} (auto)"] = lambda ps, cls=cls: cls([{"params": ps}])
    out["muonlab.AdamW"] = lambda ps: optim.AdamW(ps)
    out["torch.optim.AdamW (foreach)"] = lambda ps: torch.optim.AdamW(ps, foreach=True)
    return out


def check_args(args: argparse.Namespace) -> None:
    """Reject bad options before any work (``ConfigError``: one line and exit 2 under ``muonlab perf``)."""
    from muonlab.bench.overrides import ConfigError
    from muonlab.bench.validate import check_device

    for key in ("d", "layers", "steps"):
        if getattr(args, key) < 1:
            raise ConfigError(f"--{key} must be an integer >= 1, got {getattr(args, key)}")
    check_device(args.device, key="--device")
    names = list(candidates())
    for part in filter(None, args.only.split(",")):
        if not any(part in n for n in names):
            raise ConfigError(f"--only {part!r} matches no candidate (candidates: {'; '.join(names)})")


def main(argv: list[str] | None = None, parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser,
         prog: str | None = None) -> None:
    ap = parser_class(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--only", default="", help="comma-separated substrings of candidate names")
    args = ap.parse_args(argv)
    check_args(args)
    params = gpt_matrices(args.d, args.layers, args.device, torch.float32)
    n = sum(p.numel() for p in params)
    dev = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"# {len(params)} matrices, {n / 1e6:.1f}M parameters, d={args.d}, layers={args.layers}, {dev}, torch {torch.__version__}")
    results, syncs = {}, {}

    def fresh() -> list[torch.Tensor]:
        out = [p.detach().clone().requires_grad_() for p in params]
        for f, p in zip(out, params):
            f.grad = p.grad
        return out

    for name, make in candidates().items():
        if args.only and not any(s in name for s in args.only.split(",")):
            continue
        results[name] = time_steps(make, fresh(), args.steps)
        syncs[name] = syncs_in_step(make, fresh())
    base = results.get("torch.optim.Muon (bf16 NS)")
    print("| optimizer | ms / step | vs torch.optim.Muon | host syncs in step() |\n|---|---|---|---|")
    for name, ms in results.items():
        ratio = f"{ms / base:.2f}x" if base else "-"
        print(f"| {name} | {ms:.2f} | {ratio} | {syncs[name]} |")


if __name__ == "__main__":
    main()
