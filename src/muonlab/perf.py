"""Step-time benchmark: muonlab optimizers vs the stock ones, side by side in one process.

    python -m muonlab perf [--set gpt2-small|gpt2-medium|gpt2-large|gpt|few-large|many-small|resnet-small|MODULE:CALLABLE]
                           [--d 768 --layers 12 --vocab 0] [--steps 10] [--warmup 2] [--only A,B] [--json PATH]

Every optimizer gets its own fp32 copy of the set's parameters (``muonlab.perf_sets``) with the same
fixed gradients (pre-filled, never recomputed), and only ``step()`` is timed: all candidates take
turns step by step (round-robin, so machine load hits every one alike), synchronized on GPUs. Muon
variants orthogonalize the hidden matrices and run AdamW on the rest. Reported per optimizer:

* median ms per step and its ratio to ``torch.optim.AdamW`` (foreach), to ``torch.optim.Muon`` +
  AdamW (torch's Muon hard-codes bf16 Newton–Schulz) and to the best stock baseline on this machine:
  the faster of that pair and the same algorithm with fp32 Newton–Schulz (what to use where bf16
  matmuls are emulated, e.g. CPUs without AVX512-BF16/AMX);
* the ratio to ``muonlab.Muon`` paired round by round (median of the per-round ratios, with a 95%
  interval): the figure the adaptive presets' targets are stated in, robust to load that drifts;
* the Newton–Schulz share of the step and its achieved throughput against a GEMM of the dominant
  NS shape in the same dtype, measured in the same run (from extra, instrumented steps that time
  every orthogonalizer call);
* optimizer-state memory (bytes held in ``opt.state``; on CUDA also the peak allocated during a step).

``--only`` takes comma-separated substrings of the candidate names, so ``AdamW`` also selects
``torch.optim.Muon + AdamW (bf16 NS)``. Where bf16 matmuls are emulated that row takes ~50x an fp32 step
and disturbs the timing of every other row, and the run warns about it; name the rows instead, e.g.
``--only "torch.optim.AdamW,fp32 NS,muonlab."``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

from . import optim
from . import orth as O
from .perf_sets import NAMED, gpt_shapes, shape_set
from .stages.orthogonalize import as_dtype, auto_schedule, native_bf16


def gpt_matrices(d: int, layers: int, device: str, dtype: torch.dtype) -> list[torch.Tensor]:
    """Hidden matrices of a GPT-2-style model of width ``d``, with gradients (the ``gpt`` set's hidden part)."""
    return tensors(gpt_shapes(d, layers)[0], device, dtype, seed=0)


def tensors(shapes: list[tuple[int, ...]], device: str, dtype: torch.dtype, seed: int) -> list[torch.Tensor]:
    """Parameters of the given shapes with fixed random ``.grad``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in shapes:
        p = torch.randn(*s, generator=g).mul_(0.02).to(device=device, dtype=dtype).requires_grad_()
        p.grad = torch.randn(*s, generator=g).to(device=device, dtype=dtype)
        out.append(p)
    return out


#: how a stock Muon step's NS function is wrapped (identity; NSTimer swaps in a timer)
_NS_WRAP: list[Callable[[Callable], Callable]] = [lambda fn: fn]


class Stepper:
    """Several optimizers stepped as one (stock Muon + AdamW), optionally with torch's NS in another dtype."""

    def __init__(self, opts: list[Any], ns_dtype: torch.dtype | None = None):
        self.opts, self.ns_dtype = opts, ns_dtype

    def step(self) -> None:
        import torch.optim._muon as tm

        saved = tm._zeropower_via_newtonschulz
        base = saved if self.ns_dtype is None else (
            lambda G, abc, steps, eps: stock_ns(G, abc, steps, eps, self.ns_dtype))
        tm._zeropower_via_newtonschulz = _NS_WRAP[0](base)
        try:
            for o in self.opts:
                o.step()
        finally:
            tm._zeropower_via_newtonschulz = saved

    @property
    def state(self) -> dict:
        return {k: v for o in self.opts for k, v in o.state.items()}


def stock_ns(G: torch.Tensor, abc: tuple[float, float, float], steps: int, eps: float, dtype: torch.dtype) -> torch.Tensor:
    """torch.optim.Muon's Newton–Schulz (Frobenius normalization, Jordan quintic, one matrix) in ``dtype``."""
    a, b, c = abc
    X = G.to(dtype)
    if G.size(0) > G.size(1):
        X = X.T
    X = X / X.norm().clamp(min=eps)
    for _ in range(steps):
        A = X @ X.T
        X = torch.addmm(X, torch.addmm(A, A, A, beta=b, alpha=c), X, beta=a)
    return X.T if G.size(0) > G.size(1) else X


def candidates(compiled: bool = False) -> dict[str, Callable[[list[torch.Tensor], list[torch.Tensor]], Any]]:
    """Name -> factory ``(hidden, adamw) -> object with .step() and .state``; Muon variants at their defaults.

    ``compiled``: add ``muonlab.Muon`` with ``opt.compile()`` (inductor; compiles during the warm-up rounds,
    which therefore must be >= 2: the first step is eager, the second traces).
    """
    out: dict[str, Callable] = {"torch.optim.AdamW (foreach)": lambda h, a: torch.optim.AdamW(h + a, foreach=True)}
    if hasattr(torch.optim, "Muon"):
        out["torch.optim.Muon + AdamW (bf16 NS)"] = lambda h, a: Stepper(
            [torch.optim.Muon(h, lr=0.02), torch.optim.AdamW(a, foreach=True)] if a else [torch.optim.Muon(h, lr=0.02)])
        out["torch.optim.Muon + AdamW, fp32 NS"] = lambda h, a: Stepper(
            [torch.optim.Muon(h, lr=0.02), torch.optim.AdamW(a, foreach=True)] if a else [torch.optim.Muon(h, lr=0.02)],
            ns_dtype=torch.float32)
    groups = lambda h, a: [{"params": h}] + ([{"params": a, "algorithm": "adamw"}] if a else [])  # noqa: E731
    for name, cls in optim.optimizers().items():
        if getattr(cls, "default_algorithm", "orthogonal") != "adamw":  # AdamW (and its configurations) below
            out[f"muonlab.{cls.__name__}"] = lambda h, a, cls=cls: cls(groups(h, a))
    # the default ("auto": Jordan's polynomial, Gram form per shape) against its plain-NS form and You's schedule
    out["muonlab.Muon orthogonalizer=newton_schulz"] = lambda h, a: optim.Muon(
        groups(h, a), orthogonalizer="newton_schulz")
    out["muonlab.Muon orthogonalizer=auto_you"] = lambda h, a: optim.Muon(groups(h, a), orthogonalizer="auto_you")
    # the cost of the default non-finite gate (snapshots and restores of the state): the same steps without it
    for cls in (optim.Muon, optim.NAMO, optim.AdaMuon):
        out[f"muonlab.{cls.__name__} nonfinite=propagate"] = lambda h, a, cls=cls: cls(groups(h, a), nonfinite="propagate")
    if compiled:
        out["muonlab.Muon .compile()"] = lambda h, a: optim.Muon(groups(h, a)).compile()
    out["muonlab.AdamW"] = lambda h, a: optim.AdamW(h + a)
    return out


def _step(opt: Any) -> None:
    if getattr(opt, "needs_loss", False):
        opt.step(loss=torch.ones((), device=next(iter(opt.state)).device if opt.state else "cpu"))
    else:
        opt.step()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class NSTimer:
    """Within the block, every orthogonalizer call (muonlab's registry, stock Muon's NS) is timed and its FLOPs counted."""

    def __init__(self, device: str):
        self.device, self.ms, self.flops = device, 0.0, 0.0
        self.by_shape: dict[tuple[int, int, int, torch.dtype], float] = {}  # FLOPs per (batch, m, n, dtype)

    def _record(self, X: torch.Tensor, t0: float, flops_one: float, dtype: torch.dtype | None) -> None:
        _sync(self.device)
        self.ms += (time.perf_counter() - t0) * 1e3
        m, n = X.shape[-2:]
        batch = X.numel() // max(1, m * n)
        f = flops_one * batch
        self.flops += f
        key = (batch, m, n, dtype or X.dtype)
        self.by_shape[key] = self.by_shape.get(key, 0.0) + f

    def _muonlab(self, spec: Any, fn: Callable) -> Callable:
        name = spec.lower().replace("-", "_") if isinstance(spec, str) else ""
        schedule = auto_schedule(name)

        def count(m: int, n: int, steps: int, dtype: torch.dtype) -> float:  # SVD: counted as NS
            if schedule is not None:
                return O.choose(m, n, steps, dtype, schedule).flops
            return (O.auto.gram_flops if name == "gram_newton_schulz" else O.auto.ns_flops)(m, n, steps)

        def run(X: torch.Tensor, steps: int, dtype: torch.dtype | None = None) -> torch.Tensor:
            _sync(self.device)
            t0 = time.perf_counter()
            Y = fn(X, steps, dtype)
            self._record(X, t0, count(X.shape[-2], X.shape[-1], steps, dtype or X.dtype), dtype)
            return Y
        return run

    def _stock(self, fn: Callable) -> Callable:
        def run(G: torch.Tensor, abc: Any, steps: int, eps: float) -> torch.Tensor:
            _sync(self.device)
            t0 = time.perf_counter()
            Y = fn(G, abc, steps, eps)
            self._record(G, t0, O.auto.ns_flops(G.shape[-2], G.shape[-1], steps), Y.dtype)
            return Y
        return run

    def __enter__(self) -> NSTimer:
        self._resolve = resolve = O.resolve
        O.resolve = lambda spec: self._muonlab(spec, resolve(spec))
        _NS_WRAP[0] = self._stock
        return self

    def __exit__(self, *exc: Any) -> None:
        O.resolve = self._resolve
        _NS_WRAP[0] = lambda fn: fn


def gemm_gflops(batch: int, shape: tuple[int, int], dtype: torch.dtype, device: str, reps: int = 5) -> float:
    """Throughput of the batched ``X X^T`` of ``batch`` wide ``shape`` matrices in ``dtype`` (median of ``reps``)."""
    k, K = min(shape), max(shape)
    X = torch.randn(batch, k, K, device=device).to(dtype)
    torch.bmm(X, X.mT)
    times = []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        torch.bmm(X, X.mT)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return batch * 2 * k * k * K / statistics.median(times) / 1e9


def state_bytes(opt: Any) -> int:
    """Bytes of the distinct storages behind the tensors in ``opt.state``."""
    seen: dict[int, int] = {}
    for st in opt.state.values():
        for v in st.values():
            if isinstance(v, torch.Tensor):
                seen[v.untyped_storage().data_ptr()] = v.untyped_storage().nbytes()
    return sum(seen.values())


def run(name_set: str, hidden: list, adamw: list, device: str, steps: int, warmup: int, only: str,
        ns_steps: int = 2, compiled: bool = False) -> dict[str, Any]:
    """Time every selected candidate on the set; returns the report as a dict (see :func:`report`)."""
    hp, ap = tensors(hidden, device, torch.float32, 0), tensors(adamw, device, torch.float32, 1)
    chosen = {k: f for k, f in candidates(compiled).items() if not only or any(s in k for s in only.split(","))}
    emulated = [k for k in chosen if "(bf16 NS)" in k] if not native_bf16(device.split(":")[0]) else []
    if emulated:
        # Seen on the AVX2 EPYC of docs/BENCHMARKS.md: --only "AdamW" picked this row too, and its ~9 s steps
        # widened every other row's paired interval several-fold.
        warnings.warn(
            f"perf: {emulated[0]!r} is selected and this {device} has no native bf16 matmul (emulated, ~50x slower "
            "than fp32): its steps dominate the run and disturb the other rows' timings. Its fp32 twin ('fp32 NS') "
            "is the best stock baseline here; name the rows in --only to leave it out (e.g. "
            "'torch.optim.AdamW,fp32 NS,muonlab.').", stacklevel=2,
        )

    def fresh(ps: list[torch.Tensor]) -> list[torch.Tensor]:
        out = [p.detach().clone().requires_grad_() for p in ps]
        for f, p in zip(out, ps):
            f.grad = p.grad  # shared, read-only: no optimizer writes into a gradient
        return out

    opts, errors = {}, {}
    for name, make in chosen.items():
        try:
            opts[name] = make(fresh(hp), fresh(ap))
        except (ValueError, RuntimeError, TypeError) as err:  # e.g. a stock optimizer refusing a shape
            errors[name] = str(err).splitlines()[0][:80]
    times: dict[str, list[float]] = {k: [] for k in opts}
    names = list(opts)
    for r in range(warmup + steps):  # round-robin: one step of each optimizer per round
        # The order rotates every round, so no optimizer always runs right after the same one: on
        # CPUs the allocator state (freed blocks, pages returned to the OS) one step leaves changes
        # the next one's page faults, by up to ~10% of a step on the EPYC of docs/BENCHMARKS.md.
        for name in names[r % len(names):] + names[: r % len(names)]:
            opt = opts[name]
            _sync(device)
            t0 = time.perf_counter()
            _step(opt)
            _sync(device)
            if r >= warmup:
                times[name].append((time.perf_counter() - t0) * 1e3)
    rows = {}
    gemm_cache: dict[tuple, float] = {}
    for name, opt in opts.items():
        share, achieved, vs_gemm, total = [], 0.0, None, 0.0
        # A compiled step holds its orthogonalizer inside the graph: the timer cannot see it (no NS share).
        instrumented = 0 if getattr(opt, "_compile_kwargs", None) is not None else ns_steps
        with NSTimer(device) as nt:
            for _ in range(instrumented):
                before = nt.ms
                _sync(device)
                t0 = time.perf_counter()
                _step(opt)
                _sync(device)
                total = (time.perf_counter() - t0) * 1e3
                share.append((nt.ms - before) / total)
        if nt.flops:
            achieved = nt.flops / (nt.ms / 1e3) / 1e9
            key = max(nt.by_shape, key=nt.by_shape.get)  # the stack that carries most NS FLOPs
            if key not in gemm_cache:
                gemm_cache[key] = gemm_gflops(key[0], key[1:3], key[3], device)
            vs_gemm = achieved / gemm_cache[key]
        peak = None
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            _step(opt)
            peak = (torch.cuda.max_memory_allocated() - base) / 1e6
        rows[name] = dict(
            ms=statistics.median(times[name]), ns_share=statistics.median(share) if nt.flops else None,
            ns_gflops=achieved if nt.flops else None, ns_vs_gemm=vs_gemm, state_mb=state_bytes(opt) / 1e6,
            step_peak_mb=peak,
            vs_muon=paired_ratio(times[name], times[PAIRED_BASE]) if PAIRED_BASE in times and steps else None,
        )
    return dict(
        set=name_set, device=device, steps=steps, warmup=warmup, hidden=len(hidden), adamw=len(adamw),
        params_m=(sum(p.numel() for p in hp) + sum(p.numel() for p in ap)) / 1e6, machine=machine(device),
        rows=ratios(rows), errors=errors,
    )


#: the reference of the paired column: the targets of the adaptive presets are ratios to it
PAIRED_BASE = "muonlab.Muon"


def paired_ratio(times: list[float], base: list[float]) -> tuple[float, float, float]:
    """Median over rounds of ``times[r] / base[r]`` and a distribution-free 95% interval for it.

    Both ran in the same round, a few steps apart, so machine load that drifts over the run cancels
    in the ratio, which a ratio of two medians does not do. The interval is the order statistics of
    ranks ``floor(n/2 - 0.98 sqrt(n))`` and ``ceil(1 + n/2 + 0.98 sqrt(n))`` (1-based) of the sorted
    ratios, the binomial interval of a median (Conover, *Practical Nonparametric Statistics*, 3rd
    ed., §3.2), clipped to the sample.
    """
    if len(times) != len(base) or not times:
        raise ValueError(f"paired_ratio: need equally many rounds, got {len(times)} and {len(base)}")
    r = sorted(t / b for t, b in zip(times, base))
    n = len(r)
    half = 0.98 * math.sqrt(n)
    lo, hi = max(0, math.floor(n / 2 - half) - 1), min(n - 1, math.ceil(1 + n / 2 + half) - 1)
    return statistics.median(r), r[lo], r[hi]


def ratios(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Add ``vs_adamw``, ``vs_stock_muon`` and ``vs_best_stock`` (None where the baseline did not run)."""
    adamw = rows.get("torch.optim.AdamW (foreach)", {}).get("ms")
    stock = rows.get("torch.optim.Muon + AdamW (bf16 NS)", {}).get("ms")
    stocks = [rows[k]["ms"] for k in rows if k.startswith("torch.optim.Muon")]
    best = min(stocks) if stocks else None
    for r in rows.values():
        r["vs_adamw"] = r["ms"] / adamw if adamw else None
        r["vs_stock_muon"] = r["ms"] / stock if stock else None
        r["vs_best_stock"] = r["ms"] / best if best else None
    return rows


def machine(device: str) -> dict[str, Any]:
    """What the figures depend on: device, CPU capability, native bf16, threads, versions, commit."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=False).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return dict(
        device=torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        cpu_capability=torch.backends.cpu.get_cpu_capability(), native_bf16=native_bf16(device.split(":")[0]),
        ns_dtype_auto=str(as_dtype("auto", torch.device(device))).removeprefix("torch."),
        threads=torch.get_num_threads(), torch=torch.__version__, commit=commit,
    )


def report(res: dict[str, Any]) -> str:
    """Markdown: a header line and one row per optimizer."""
    m = res["machine"]
    head = (f"# set {res['set']}: {res['hidden']} hidden matrices + {res['adamw']} AdamW tensors, "
            f"{res['params_m']:.1f}M parameters; {m['device']} ({m['cpu_capability']}, native bf16: "
            f"{m['native_bf16']}, ns_dtype auto = {m['ns_dtype_auto']}), {m['threads']} threads, torch {m['torch']}, "
            f"commit {m['commit']}; median of {res['steps']} round-robin steps after {res['warmup']} warm-up")
    f = lambda v, fmt: "-" if v is None else fmt.format(v)  # noqa: E731
    lines = [head, "",
             f"| optimizer | ms / step | vs torch AdamW | vs torch Muon + AdamW | vs best stock | vs {PAIRED_BASE} "
             "(paired, 95% CI) | NS share | NS GFLOP/s | NS vs GEMM | state MB | step peak MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in res["rows"].items():
        paired = "-" if r.get("vs_muon") is None else "{:.3f}x ({:.3f}-{:.3f})".format(*r["vs_muon"])
        lines.append(
            f"| {name} | {r['ms']:.2f} | {f(r['vs_adamw'], '{:.2f}x')} | {f(r['vs_stock_muon'], '{:.2f}x')} | "
            f"{f(r['vs_best_stock'], '{:.2f}x')} | {paired} | {f(r['ns_share'], '{:.0%}')} | {f(r['ns_gflops'], '{:.1f}')} | "
            f"{f(r['ns_vs_gemm'], '{:.0%}')} | {r['state_mb']:.1f} | {f(r['step_peak_mb'], '{:.1f}')} |")
    for name, err in res["errors"].items():
        lines.append(f"| {name} | failed: {err} | | | | | | | | | |")
    return "\n".join(lines)


def check_args(args: argparse.Namespace) -> None:
    """Reject bad options before any work (``ConfigError``: one line and exit 2 under ``muonlab perf``)."""
    from muonlab.bench.overrides import ConfigError
    from muonlab.bench.validate import check_device

    for key in ("d", "steps"):
        if getattr(args, key) < 1:
            raise ConfigError(f"--{key} must be an integer >= 1, got {getattr(args, key)}")
    if args.layers is not None and args.layers < 1:
        raise ConfigError(f"--layers must be an integer >= 1, got {args.layers}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be an integer >= 1, got {args.threads}")
    if args.warmup < 0 or args.vocab < 0:
        raise ConfigError(f"--warmup and --vocab must be integers >= 0, got {args.warmup}, {args.vocab}")
    if args.set not in NAMED and ":" not in args.set:
        raise ConfigError(f"--set {args.set!r}: expected one of {', '.join(NAMED)} or module:callable")
    check_device(args.device, key="--device")
    if args.compile and args.warmup < 2:
        raise ConfigError(f"--compile needs --warmup >= 2 (step 1 eager, step 2 compiles), got {args.warmup}")
    names = list(candidates(args.compile))
    for part in filter(None, args.only.split(",")):
        if not any(part in n for n in names):
            raise ConfigError(f"--only {part!r} matches no candidate (candidates: {'; '.join(names)})")


def main(argv: list[str] | None = None, parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser,
         prog: str | None = None) -> None:
    ap = parser_class(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--set", default="gpt", help=f"shape set: {', '.join(NAMED)} or module:callable (default gpt)")
    ap.add_argument("--d", type=int, default=768, help="width of the 'gpt' set (default 768)")
    ap.add_argument("--layers", type=int, default=None, help="depth of the GPT sets (default: the set's; gpt: 12)")
    ap.add_argument("--vocab", type=int, default=0, help="vocabulary of the 'gpt' set's embeddings (default 0: none)")
    ap.add_argument("--steps", type=int, default=10, help="timed round-robin rounds (default 10)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    ap.add_argument("--only", default="", help="comma-separated substrings of candidate names")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--compile", action="store_true",
                    help="also time muonlab.Muon with opt.compile() (inductor; compiles in the warm-up)")
    args = ap.parse_args(argv)
    check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    hidden, adamw = shape_set(args.set, d=args.d, layers=args.layers, vocab=args.vocab)
    res = run(args.set, hidden, adamw, args.device, args.steps, args.warmup, args.only, compiled=args.compile)
    print(report(res))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
