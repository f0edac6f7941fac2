"""No host sync in ``step()``: a static check on CPU for every registered optimizer and sample config.

On a GPU, ``Tensor.item``, ``bool(t)``, ``float(t)``, ``int(t)``, ``t.tolist()``, ``t.cpu()`` and
``t.numpy()`` each wait for the device. During ``step()`` (the first one, which creates the state,
included) every one of them is patched to raise, so a call anywhere in the step fails this test on any
machine. (A C++ kernel reading a CPU tensor is not a host sync and is not seen here; on CUDA the
sync-debug tests cover what runs on the device.)
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import muonlab

CASES = [
    pytest.param(info.cls, kwargs, id=f"{info.name}-{i}")
    for info in muonlab.optimizer_infos()
    for i, kwargs in enumerate(info.sample_kwargs)
]
SYNCING = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


class HostSync(AssertionError):
    pass


class _NoScalarReads(TorchDispatchMode):
    """Raises on ``aten._local_scalar_dense``, the op behind every read of a tensor's value into a host scalar,
    also when a torch kernel does it internally (``_foreach_add_(tensors, <0-D tensor>)`` on CPU did)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            raise HostSync(f"{func} (a tensor read into a host scalar) inside step()")
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def no_host_sync():
    """Make every syncing Tensor method, and any scalar read by a kernel, raise ``HostSync`` inside the block."""
    saved = {name: getattr(torch.Tensor, name) for name in SYNCING}

    def forbid(name):
        def raiser(self, *args, **kwargs):
            raise HostSync(f"Tensor.{name} called inside step()")
        return raiser

    try:
        for name in SYNCING:
            setattr(torch.Tensor, name, forbid(name))
        with _NoScalarReads():
            yield
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)


def _problem(seed: int):
    g = torch.Generator().manual_seed(seed)
    shapes = [(12, 8), (12, 8), (6, 2, 3, 3), (2, 5, 9), (40, 64)]
    mats = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    vecs = [torch.nn.Parameter(torch.randn(7, generator=g)), torch.nn.Parameter(torch.randn(70000, generator=g))]
    groups = [{"params": mats}, {"params": vecs, "algorithm": "adamw"}]
    return mats + vecs, groups


def test_the_patch_catches_a_sync():
    """The patched methods do raise (the check can fail)."""
    t = torch.ones(())
    with no_host_sync():
        for call in (t.item, lambda: bool(t), lambda: float(t), t.tolist, t.cpu):
            with pytest.raises(HostSync):
                call()
        with pytest.raises(HostSync):  # a read inside a kernel (the dispatch-level check)
            torch.ops.aten._local_scalar_dense(t)
    assert t.item() == 1.0


@pytest.mark.parametrize("nonfinite", ["skip", "propagate"])
@pytest.mark.parametrize("cls,kwargs", CASES)
def test_step_never_syncs(cls, kwargs, nonfinite):
    """Three steps (the last with a NaN gradient under 'skip') call no syncing Tensor method."""
    params, groups = _problem(0)
    if cls is muonlab.AdamW:
        groups = [{"params": params}]
    opt = cls(groups, nonfinite=nonfinite, **kwargs)
    g = torch.Generator().manual_seed(1)
    for t in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        if t == 2 and nonfinite == "skip":
            params[0].grad[0, 0] = float("nan")
        loss = {"loss": torch.tensor(1.0)} if getattr(cls, "needs_loss", False) else {}  # NGNM reads it, on the device
        with no_host_sync():  # the first step (lazy state creation) included
            opt.step(**loss)
    if nonfinite == "skip":
        assert opt.skipped_steps == 1
