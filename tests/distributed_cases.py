"""Bodies of the distributed tests: each function runs inside one spawned rank (gloo, CPU).

The oracle of every parity check is the same optimizer in local mode on an unsharded copy of the
model, fed the average of all ranks' gradients (what DDP and FSDP2 average), in fp64 with the
exact-polar orthogonalizer. Helpers here build that model, its per-rank losses and the oracle.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import muonlab

# (34, 20): uneven over 4 ranks (9, 9, 9, 7); (3, 5): empty shards at W = 4 (1, 1, 1, 0);
# (16, 16) x 3: a stack whose count does not divide W; (8, 40): one wide matrix.
SHAPES = [(34, 20), (34, 20), (20, 34), (16, 16), (16, 16), (16, 16), (8, 40), (3, 5)]
COLS = (12, 8)  # sharded by columns under FSDP2 (Shard(1): even division over 2 and 4)
EXPERTS = (3, 6, 4)  # batch_3d: 3 matrices 6 x 4, sharded over the matrices (2, 1) / (1, 1, 1, 0)
CONV1D = (5, 12)  # stored (in, out), layout="in_out": FSDP2's Shard(0) splits the columns of W^T, unevenly
ORTHOGONAL = ["muon", "muon-ef", "namo", "namo-d", "adago", "trasmuon", "normuon", "adamuon", "sfnormuon"]
TOL = 1e-12


class Net(torch.nn.Module):
    """Hidden matrices, a column-sharded matrix, a 3-D expert stack, an unused matrix and a bias."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        P = lambda *s: torch.nn.Parameter(torch.randn(*s, generator=g, dtype=torch.float64))  # noqa: E731
        self.ws = torch.nn.ParameterList([P(*s) for s in SHAPES])
        self.cols = P(*COLS)
        self.experts = P(*EXPERTS)
        self.c1d = P(*CONV1D)
        self.unused = P(6, 5)  # never in the loss: no gradient on any rank
        self.bias = P(7)

    def used(self) -> list[torch.nn.Parameter]:
        return [*self.ws, self.cols, self.experts, self.c1d, self.bias]

    def forward(self, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        total = torch.zeros((), dtype=torch.float64)
        for w in self.used():
            target = torch.randn(w.shape, generator=g, dtype=torch.float64)
            weight = torch.rand(w.shape, generator=g, dtype=torch.float64)
            total = total + (weight * (w - target) ** 2).sum() + 0.01 * w.sum() ** 2
        return total


def groups(model: Net) -> list[dict]:
    return [
        {"params": [*model.ws, model.cols, model.unused]},
        {"params": [model.experts], "batch_3d": True},
        {"params": [model.c1d], "layout": "in_out"},
        {"params": [model.bias], "algorithm": "adamw"},
    ]


def make(name: str, params, **kw):
    if name != "adamw":
        kw.setdefault("orthogonalizer", "svd")
    return muonlab.optimizers()[name](params, **kw)


def oracle(name: str, worlds: list[int], kw: dict | None = None, hook: Callable | None = None) -> list[torch.Tensor]:
    """Parameters after ``len(worlds)`` local steps; step ``t`` averages ``worlds[t]`` ranks' losses.

    ``hook(t, model)`` may edit the averaged gradients (e.g. zero a rank's rows) before the step.
    A parameter without a gradient gets a zero one: in the distributed modes every parameter
    takes part every step.
    """
    model = Net()
    opt = make(name, groups(model), **(kw or {}))
    for t, W in enumerate(worlds):
        opt.zero_grad()
        (sum(model(1000 * t + r) for r in range(W)) / W).backward()
        for p in model.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if hook:
            hook(t, model)
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


def max_err(got: list[torch.Tensor], ref: list[torch.Tensor]) -> float:
    return max((a - b).abs().max().item() for a, b in zip(got, ref))


def comm_counts(fn: Callable[[], None]) -> dict[str, int]:
    """Collectives issued by ``fn()`` as seen by ``CommDebugMode``: {"all_to_all": 2, ...}."""
    from torch.distributed.tensor.debug import CommDebugMode

    with CommDebugMode() as mode:
        fn()
    out: dict[str, int] = {}
    for op, count in mode.get_comm_counts().items():
        name = str(op)
        kind = "all_to_all" if "alltoall" in name else "all_gather" if "allgather" in name else (
            "all_reduce" if "allreduce" in name else name)
        out[kind] = out.get(kind, 0) + count
    return out


def state_vector(opt) -> torch.Tensor:
    """Every local state tensor of ``opt`` flattened into one fp64 vector (stable order)."""
    parts = []
    for group in opt.param_groups:
        for p in group["params"]:
            for key in sorted(opt.state[p]):
                v = opt.state[p][key]
                v = v.to_local() if hasattr(v, "to_local") else v
                parts.append(v.detach().reshape(-1).to(torch.float64))
    return torch.cat(parts)


# ----------------------------------------------------------------------------- harness
def _entry(rank: int, world: int, path: str, fn: Callable, args: tuple) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{path}", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60)
    )
    try:
        fn(rank, world, *args)
        dist.barrier()  # a file store needs every rank here before teardown
    finally:
        dist.destroy_process_group()


def spawn(fn: Callable, world: int, tmp: str, *args) -> None:
    """Run ``fn(rank, world, *args)`` on ``world`` gloo ranks; a failure in any rank is raised here."""
    mp.spawn(_entry, args=(world, os.path.join(tmp, f"rdzv-{fn.__name__}-{world}"), fn, args), nprocs=world)


# ----------------------------------------------------------------------------- replicated (DDP)
_ORTHOGONALIZED = [0]
_NORMS_GIVEN = [0]  # matrices that came with a known Frobenius norm (NAMO, NAMO-D)


def counting_svd(X: torch.Tensor, steps: int = 5, dtype: torch.dtype | None = None, *, norm=None) -> torch.Tensor:
    """The exact polar factor, counting how many matrices this process orthogonalized.

    A norm handed over by the stages must be the Frobenius norm of exactly these matrices (the
    owner's slice of the stack's global norms).
    """
    del steps, dtype
    _ORTHOGONALIZED[0] += X.shape[0]
    if norm is not None:
        want = torch.linalg.vector_norm(X, dim=(-2, -1))
        assert norm.shape == want.shape and torch.allclose(norm, want, rtol=1e-12, atol=0), (norm, want)
        _NORMS_GIVEN[0] += X.shape[0]
    return muonlab.orth.svd_polar(X)


def _norms_given_somewhere(name: str) -> None:
    """NAMO and NAMO-D hand their norm of the momentum to the orthogonalizer on some rank; the rest never."""
    seen = torch.tensor([_NORMS_GIVEN[0]])
    dist.all_reduce(seen)
    assert (int(seen) > 0) == (name in ("namo", "namo-d")), f"{name}: {int(seen)} matrices came with a norm"
    _NORMS_GIVEN[0] = 0


def replicated(rank: int, world: int) -> None:
    from torch.nn.parallel import DistributedDataParallel as DDP

    total = len(SHAPES) + 3 + EXPERTS[0]  # matrices per step: hidden, cols, unused, conv1d, 3 experts
    for name in ORTHOGONAL + ["adamw"]:
        model = Net()
        ddp = DDP(model, find_unused_parameters=True)
        opt = make(name, groups(model), process_group=dist.group.WORLD,
                   **({} if name == "adamw" else {"orthogonalizer": counting_svd}))
        counts = {}
        for t in range(3):
            opt.zero_grad()
            ddp(1000 * t + rank).backward()
            _ORTHOGONALIZED[0] = 0
            counts = comm_counts(opt.step)
        ref = oracle(name, [world] * 3)
        err = max_err([p.detach() for p in model.parameters()], ref)
        assert err <= TOL, f"{name} replicated W={world}: max |dw| = {err:.3g}"
        # Replicated state is bitwise identical on every rank.
        vec = state_vector(opt)
        gathered = [torch.empty_like(vec) for _ in range(world)]
        dist.all_gather(gathered, vec)
        assert all(torch.equal(vec, v) for v in gathered), f"{name}: replicated state differs across ranks"
        if name == "adamw":
            assert counts == {}, counts
            continue
        assert "replicated" in opt.describe()
        _norms_given_somewhere(name)
        # The work is split: every matrix orthogonalized once, on one rank; no rank does it all.
        mine = torch.tensor([_ORTHOGONALIZED[0]])
        shares = [torch.zeros_like(mine) for _ in range(world)]
        dist.all_gather(shares, mine)
        shares = [int(s) for s in shares]
        assert sum(shares) == total and max(shares) < total, f"{name}: orthogonalized per rank {shares}"
        # One all_gather per stack (7 matrix shapes in the first group, experts, conv1d), nothing else.
        assert counts == {"all_gather": 9}, f"{name}: collectives per step {counts}"


def replicated_bf16(rank: int, world: int) -> None:
    """bf16 Newton–Schulz on fp32 weights: the distributed path agrees with the local one to bf16 noise."""
    g = torch.Generator().manual_seed(1)
    shapes = [(34, 20), (16, 16), (16, 16), (16, 16)]
    grads = [torch.randn(*s, generator=g) for s in shapes]
    results = []
    for group in (dist.group.WORLD, None):
        params = [torch.zeros(*s, requires_grad=True) for s in shapes]
        opt = muonlab.Muon([{"params": params}], ns_dtype="bfloat16", process_group=group)
        for p, G in zip(params, grads):
            p.grad = G.clone()
        opt.step()
        results.append(torch.cat([p.detach().reshape(-1) for p in params]))
    rel = ((results[0] - results[1]).norm() / results[1].norm()).item()
    assert rel <= 1e-2, f"bf16 replicated vs local: relative error {rel:.3g}"


# ----------------------------------------------------------------------------- sharded (FSDP2)
# all_reduce calls per step: (per row-sharded stack, per column-sharded stack), all_gather per
# column-sharded stack (TrasMuon's median of column energies).
ALL_REDUCES = {
    "muon": (0, 0, 0), "muon-ef": (2, 2, 0), "namo": (1, 1, 0), "namo-d": (1, 1, 0), "adago": (1, 1, 0),
    "trasmuon": (2, 2, 1), "normuon": (1, 2, 0), "adamuon": (1, 1, 0), "sfnormuon": (1, 2, 0),
}
ROW_STACKS, COL_STACKS = 6, 2  # (34,20) (20,34) (16,16) (8,40) (3,5) (6,5); (12,8) and the conv1d (12,5)


def fsdp_model(mesh) -> Net:
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import Shard

    model = Net()
    fully_shard(model, mesh=mesh, shard_placement_fn=lambda p: Shard(1) if p is model.cols else None)
    return model


def sharded(rank: int, world: int) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor

    mesh = init_device_mesh("cpu", (world,))
    rows = -(-SHAPES[1][0] // world)  # FSDP2 chunk of the (34, 20) matrix

    # Rank 1 gets no gradient for ws[1] at step 2 (only then: rows that are zero at every step
    # make the row normalizers divide ~1e-17 by eps, which no oracle reproduces to 1e-12).
    def drop_rank1(t: int, model: Net) -> None:  # the oracle of "no gradient on rank 1"
        if t == 1:
            model.ws[1].grad[rows : 2 * rows] = 0

    for name in ORTHOGONAL + ["adamw"]:
        model = fsdp_model(mesh)
        opt = make(name, groups(model), **({} if name == "adamw" else {"orthogonalizer": counting_svd}))
        counts = {}
        for t in range(3):
            opt.zero_grad()
            model(1000 * t + rank).backward()
            if rank == 1 and t == 1:
                model.ws[1].grad = None  # this rank got no gradient: it must still take part
            counts = comm_counts(opt.step)
        ref = oracle(name, [world] * 3, hook=drop_rank1)
        err = max_err([p.full_tensor().detach() for p in model.parameters()], ref)
        assert err <= TOL, f"{name} sharded W={world}: max |dw| = {err:.3g}"
        if name == "muon":
            table = opt.describe()
            assert all(f"sharded {kind}" in table for kind in ("rows", "cols", "batch", "elementwise")), table
        state = opt.state[model.ws[0]]
        key = "exp_avg" if name == "adamw" else "momentum"
        assert isinstance(state[key], DTensor) and state[key].placements == model.ws[0].placements
        if name == "adamw":
            assert counts == {"all_reduce": 1}, counts  # the finite flag only
            continue
        _norms_given_somewhere(name)
        r, c, g = ALL_REDUCES[name]
        # + 1 all_reduce per step: the ranks agree whether every gradient is finite (nonfinite="skip")
        want = {"all_to_all": 2 * (ROW_STACKS + COL_STACKS), "all_reduce": r * ROW_STACKS + c * COL_STACKS + 1}
        if g:
            want["all_gather"] = g * COL_STACKS
        want = {k: v for k, v in want.items() if v}
        assert counts == want, f"{name}: collectives per step {counts}, expected {want}"


def sharded_nonfinite(rank: int, world: int) -> None:
    """A NaN in one rank's shard makes every rank skip the step: nothing changes anywhere."""
    from torch.distributed.device_mesh import init_device_mesh

    model = fsdp_model(init_device_mesh("cpu", (world,)))
    opt = make("namo", groups(model))
    model(rank).backward()
    opt.step()
    before = [p.to_local().clone() for p in model.parameters()]
    opt.zero_grad()
    model(7 + rank).backward()
    if rank == world - 1:
        model.ws[0].grad.to_local().view(-1)[0] = float("nan")
    opt.step()
    assert all(torch.equal(p.to_local(), q) for p, q in zip(model.parameters(), before))
    assert opt.skipped_steps == 1


def hsdp(rank: int, world: int) -> None:
    """HSDP on a 2 x 2 mesh (replicate, shard): exact, and a mismatched process_group is refused."""
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (2, world // 2), mesh_dim_names=("replicate", "shard"))
    for name in ("namo", "normuon"):
        model = fsdp_model(mesh)
        opt = make(name, groups(model))
        for t in range(2):
            opt.zero_grad()
            model(1000 * t + rank).backward()
            opt.step()
        err = max_err([p.full_tensor().detach() for p in model.parameters()], oracle(name, [world] * 2))
        assert err <= TOL, f"{name} HSDP: max |dw| = {err:.3g}"
    model = fsdp_model(mesh)
    try:
        make("muon", groups(model), process_group=dist.group.WORLD)
    except ValueError as e:
        assert "does not match the shard mesh" in str(e), e
    else:
        raise AssertionError("a process_group that is not the shard mesh was accepted")
    try:
        make("muon", groups(model), process_group=mesh)
    except ValueError as e:
        assert "2-D DeviceMesh" in str(e), e
    else:
        raise AssertionError("a 2-D mesh as process_group was accepted")


# ----------------------------------------------------------------------------- ZeRO
def zero(rank: int, world: int) -> None:
    """ZeroRedundancyOptimizer(optimizer_class=<muonlab optimizer>): whole matrices per owner, exact."""
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel as DDP

    for name in ORTHOGONAL + ["adamw"]:
        model = Net()
        ddp = DDP(model, find_unused_parameters=True)
        cls = muonlab.optimizers()[name]
        kw = {} if name == "adamw" else {"orthogonalizer": "svd"}
        opt = ZeroRedundancyOptimizer(groups(model), optimizer_class=cls, **kw)
        for t in range(3):
            opt.zero_grad()
            ddp(1000 * t + rank).backward()
            for p in model.parameters():  # as in the other modes: no gradient = a zero gradient
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            opt.step()
        err = max_err([p.detach() for p in model.parameters()], oracle(name, [world] * 3))
        assert err <= TOL, f"{name} ZeRO W={world}: max |dw| = {err:.3g}"
        owned = sum(len(g["params"]) for g in opt.optim.param_groups)
        assert 0 < owned < len(list(model.parameters())), f"{name}: rank {rank} owns {owned} parameters"
    # ZeRO copies its keyword arguments into every group: an AdamW group would get the orthogonal lr.
    model = Net()
    _raises(lambda: ZeroRedundancyOptimizer(groups(model), optimizer_class=muonlab.NAMO, lr=0.02, adamw_lr=3e-3),
            ValueError, "copied the optimizer's keyword arguments")


# ----------------------------------------------------------------------------- DCP
DCP_OPTIMIZERS = ("namo-d", "trasmuon", "normuon")  # vector, row and scalar state; every state layout


def _train(model: Net, opt, steps: range, rank: int) -> None:
    for t in steps:
        opt.zero_grad()
        model(1000 * t + rank).backward()
        opt.step()


def dcp_save(rank: int, world: int, root: str) -> None:
    """Save after 2 steps, restore into fresh objects, 2 more steps == 4 uninterrupted steps."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (world,))
    for name in DCP_OPTIMIZERS:
        model = fsdp_model(mesh)
        opt = make(name, groups(model))
        _train(model, opt, range(2), rank)
        msd, osd = get_state_dict(model, opt)
        keys = sorted(k for state in osd["state"].values() for k in state)
        everyone = [None] * world
        dist.all_gather_object(everyone, keys)
        assert all(k == keys for k in everyone), "optimizer state keys differ across ranks"
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=os.path.join(root, name))

        model2 = fsdp_model(mesh)
        opt2 = make(name, groups(model2))
        msd2, osd2 = get_state_dict(model2, opt2)
        dcp.load({"model": msd2, "optim": osd2}, checkpoint_id=os.path.join(root, name))
        set_state_dict(model2, opt2, model_state_dict=msd2, optim_state_dict=osd2)
        _train(model2, opt2, range(2, 4), rank)
        err = max_err([p.full_tensor().detach() for p in model2.parameters()], oracle(name, [world] * 4))
        assert err <= TOL, f"{name} DCP resume W={world}: max |dw| = {err:.3g}"


def dcp_reshard(rank: int, world: int, root: str, saved_world: int) -> None:
    """Load the checkpoint saved at ``saved_world`` ranks on ``world`` ranks: the same trajectory."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (world,))
    for name in DCP_OPTIMIZERS:
        model = fsdp_model(mesh)
        opt = make(name, groups(model))
        msd, osd = get_state_dict(model, opt)
        dcp.load({"model": msd, "optim": osd}, checkpoint_id=os.path.join(root, name))
        set_state_dict(model, opt, model_state_dict=msd, optim_state_dict=osd)
        _train(model, opt, range(2, 4), rank)
        ref = oracle(name, [saved_world] * 2 + [world] * 2)
        err = max_err([p.full_tensor().detach() for p in model.parameters()], ref)
        assert err <= TOL, f"{name} DCP W={saved_world} -> W={world}: max |dw| = {err:.3g}"


# ----------------------------------------------------------------------------- errors
def _raises(fn: Callable[[], object], exc: type, text: str) -> None:
    try:
        fn()
    except exc as e:
        assert text in str(e), f"expected {text!r} in {e!r}"
    else:
        raise AssertionError(f"no {exc.__name__} ({text!r})")


def negatives(rank: int, world: int) -> None:
    """Unsupported layouts and inconsistent setups fail at construction, on every rank, without a hang."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh2d = init_device_mesh("cpu", (world, 1))
    w = distribute_tensor(torch.randn(8, 6, dtype=torch.float64), mesh2d, [Shard(0), Shard(1)])
    _raises(lambda: muonlab.Muon([torch.nn.Parameter(w)]), NotImplementedError, "sharded on 2 mesh dims")
    mesh = init_device_mesh("cpu", (world,))
    conv = torch.nn.Parameter(distribute_tensor(torch.randn(4, 4, 3, 3, dtype=torch.float64), mesh, [Shard(2)]))
    _raises(lambda: muonlab.Muon([conv]), NotImplementedError, "sharded on dim 2")
    plain = torch.nn.Parameter(torch.randn(4, 4))
    dt = torch.nn.Parameter(distribute_tensor(torch.randn(4, 4), mesh, [Shard(0)]))
    _raises(lambda: muonlab.Muon([{"params": [plain, dt]}]), ValueError, "mixes DTensor and plain")
    # Replicated mode needs the same parameters on every rank (ZeRO shares, pipeline stages do not).
    params = [torch.nn.Parameter(torch.randn(4, 4)) for _ in range(1 + rank)]
    _raises(lambda: muonlab.Muon([{"params": params}], process_group=dist.group.WORLD), ValueError,
            "ranks hold different parameters")
    # Plain tensors without a group are never distributed: local mode, no collectives.
    p = torch.nn.Parameter(torch.randn(6, 4))
    p.grad = torch.randn(6, 4)
    opt = muonlab.Muon([{"params": [p]}])
    assert comm_counts(opt.step) == {}


def _sequence(rank: int, world: int, fns: tuple) -> None:
    """Several case bodies in one process group (a spawn costs seconds)."""
    for fn in fns:
        fn(rank, world)
