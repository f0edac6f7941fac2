"""The CPU workspace (muonlab.orth.workspace): distinct buffers within a session, reuse across sessions,
nothing drawn outside one, the same results as fresh allocations, and memory that stops growing."""

from __future__ import annotations

import copy

import torch

import muonlab
from muonlab.orth import auto_orthogonalize, gram_newton_schulz, newton_schulz, workspace
from muonlab.orth.workspace import Workspace


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def test_buffers_are_distinct_within_a_session_and_reused_after():
    ws = Workspace()
    with ws.session():
        a = workspace.empty((4, 8), torch.float32, "cpu")
        b = workspace.empty((4, 8), torch.float32, "cpu")
        c = workspace.empty((2, 3), torch.float64, "cpu")
        ptrs = {_storage(a), _storage(b), _storage(c)}
        assert len(ptrs) == 3  # nothing aliases inside a session
        a.fill_(1.0), b.fill_(2.0)
        assert torch.equal(a, torch.ones(4, 8)) and torch.equal(b, torch.full((4, 8), 2.0))
    held = ws.nbytes
    assert held >= 2 * 4 * 8 * 4 + 2 * 3 * 8
    with ws.session():
        again = {_storage(workspace.empty((4, 8), torch.float32, "cpu")) for _ in range(2)}
        smaller = workspace.empty((5,), torch.float32, "cpu")  # largest-fit reuse of the float64 buffer
    assert again <= ptrs and _storage(smaller) in ptrs and ws.nbytes == held


def test_a_repeated_request_gets_the_same_view_back_and_it_stays_usable():
    """Steps repeat their requests: the view made for a (shape, dtype) is reused (no new slicing ops),
    and writes through it land in the buffer it views, whichever request came before."""
    ws = Workspace()
    with ws.session():
        first = workspace.empty((4, 8), torch.float32, "cpu")
    with ws.session():
        other = workspace.empty((3, 5), torch.float64, "cpu")  # the same buffer, another typed view
        other.fill_(7.0)
    with ws.session():
        again = workspace.empty((4, 8), torch.float32, "cpu")
        again.fill_(3.0)
        assert again is first and _storage(again) == _storage(other)
        assert torch.equal(first, torch.full((4, 8), 3.0))


def test_packed_parts_lie_end_to_end_and_come_back_the_same():
    """empty_parts: one view per shape, consecutive inside one flat buffer; a repeated request in a later session
    returns the same views (no slicing ops), and outside a session the parts are fresh."""
    shapes = [(3, 4), (5,), (2, 1, 3)]
    ws = Workspace()
    with ws.session():
        flat, parts = workspace.empty_parts(shapes, torch.float32, "cpu")
        torch._foreach_copy_(parts, [torch.full(s, float(i)) for i, s in enumerate(shapes)])
        assert [tuple(p.shape) for p in parts] == shapes and flat.numel() == 12 + 5 + 6
        assert torch.equal(flat, torch.cat([torch.full((12,), 0.0), torch.full((5,), 1.0), torch.full((6,), 2.0)]))
    with ws.session():
        flat2, parts2 = workspace.empty_parts(shapes, torch.float32, "cpu")
        assert flat2 is flat and all(a is b for a, b in zip(parts, parts2))
    fresh, fresh_parts = workspace.empty_parts(shapes, torch.float32, "cpu")
    assert _storage(fresh) != _storage(flat) and [tuple(p.shape) for p in fresh_parts] == shapes


def test_outside_a_session_it_is_torch_empty():
    ws = Workspace()
    with ws.session():
        inside = workspace.empty((3, 3), torch.float32, "cpu")
    outside = workspace.empty((3, 3), torch.float32, "cpu")
    assert _storage(outside) != _storage(inside) and ws.nbytes == 9 * 4
    # empty_like keeps a transposed layout, as torch.empty_like does
    x = torch.randn(5, 7).mT
    with ws.session():
        y = workspace.empty_like(x)
    assert y.shape == x.shape and y.stride() == x.stride()


def test_orthogonalizers_in_a_session_equal_fresh_allocations_and_do_not_escape_outside():
    g = torch.Generator().manual_seed(0)
    for shape in [(3, 16, 16), (2, 24, 8), (2, 8, 40)]:
        X = torch.randn(shape, generator=g)
        fresh = [newton_schulz(X), gram_newton_schulz(X), auto_orthogonalize(X)]
        ws = Workspace()
        with ws.session():
            pooled = [newton_schulz(X), gram_newton_schulz(X), auto_orthogonalize(X)]
            pooled = [p.clone() for p in pooled]  # what a caller may keep must be copied out
        assert all(torch.equal(a, b) for a, b in zip(fresh, pooled))
        assert ws.nbytes > 0
        # without a session the results are ordinary tensors, never workspace views
        out = newton_schulz(X)
        held = {_storage(b.data) for b in ws._free}
        assert _storage(out) not in held


def test_an_optimizer_step_uses_a_bounded_workspace_and_equals_fresh_allocations():
    """Muon's workspace stops growing within the first step and holds what the largest bucket needs; the
    trajectory equals a run with the workspace off (every temporary a fresh tensor, the same kernels)."""
    def run(enabled: bool):
        g = torch.Generator().manual_seed(1)
        mats = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in [(24, 8), (24, 8), (16, 16), (8, 40)]]
        opt = muonlab.Muon([{"params": mats}])
        opt.cpu_workspace = enabled
        sizes = []
        for _ in range(5):
            for p in mats:
                p.grad = torch.randn(p.shape, generator=g)
            opt.step()
            sizes.append(opt.workspace_bytes)
        return [p.detach().clone() for p in mats], sizes, opt

    pooled, sizes, opt = run(True)
    fresh, none, _ = run(False)
    assert all(torch.equal(a, b) for a, b in zip(pooled, fresh))
    assert sizes[0] > 0 and sizes == [sizes[0]] * 5 and set(none) == {0}
    # bounded by one bucket's temporaries: here under twelve copies of the largest bucket (2 x 24 x 8 fp32; the
    # fp64 copy of a small stack's normalization counts twice)
    assert sizes[0] <= 12 * 2 * 24 * 8 * 4
    twin = copy.deepcopy(opt)  # the setting is copied, the buffers are not
    assert twin.cpu_workspace and twin.workspace_bytes == 0
    opt.cpu_workspace = False
    assert copy.deepcopy(opt).cpu_workspace is False and opt.workspace_bytes == 0
