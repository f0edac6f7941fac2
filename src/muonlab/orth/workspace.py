"""Step-scoped scratch memory that survives between steps, for the large temporaries of a CPU step.

On CPUs a fresh large tensor costs page faults: glibc hands big blocks back to the OS when they are
freed (``mmap`` / heap trimming), so a step that allocates the same temporaries every time faults
them in again every time. On the 2-core EPYC of docs/BENCHMARKS.md that is ~1.5 ms per 4 MB and up
to ~17% of a ``muonlab.Muon`` step on GPT-like stacks (the stock per-matrix loop, with smaller
temporaries, pays less). CUDA's caching allocator already keeps freed blocks, so the workspace is
used on CPU only.

A :class:`Workspace` holds flat buffers. Inside ``with ws.session():`` each :func:`empty` call
returns a view of a buffer no other call of the same session holds -- so within a session every
tensor is as distinct as a fresh allocation, and nothing aliases -- and the buffers go back to the
workspace when the session ends. The next session (the next bucket, the next step) reuses them, so
their pages stay mapped. Outside a session, or under ``torch.compile`` (whose generated code plans
its own buffers), :func:`empty` is ``torch.empty``.

The rule that keeps this safe: a tensor from :func:`empty` must not outlive its session (no state,
nothing returned to the user). ``muonlab`` opens a session around one bucket's chain of stages in
the local mode and uses it for the gradient stack, the Nesterov mix and the orthogonalizer's
buffers; the update they produce is written into the parameters before the session closes.

Memory: the workspace converges to the set of temporaries the largest bucket needs (buffers are
reused across buckets and steps, smallest fit first; a request that fits nothing replaces the largest
free buffer): for Muon on GPT-like stacks about 5 bucket-sized and 5 Gram-sized buffers, ~2x the
hidden matrices' size (docs/BENCHMARKS.md); see ``ChainOptimizer.workspace_bytes``.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

_CURRENT: contextvars.ContextVar[Workspace | None] = contextvars.ContextVar("muonlab_workspace", default=None)


class _Block:
    """A flat uint8 buffer and the typed views of it handed out so far, kept for the next request.

    Steps repeat their requests, so the same shape and dtype come back every step: the view made
    the first time is returned again (no slicing and viewing ops, ~5 dispatches per request).
    """

    __slots__ = ("data", "nbytes", "views")

    def __init__(self, nbytes: int) -> None:
        self.data = torch.empty(nbytes, dtype=torch.uint8)
        self.nbytes = nbytes  # a plain int: the pool compares sizes on every request
        self.views: dict[tuple[tuple[int, ...], torch.dtype], Tensor] = {}

    def view(self, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        key = (shape, dtype)
        t = self.views.get(key)
        if t is None:
            n = math.prod(shape) * dtype.itemsize
            # 64-byte alignment: buffers start aligned (torch's CPU allocator) and are used from offset 0.
            t = self.views[key] = self.data[:n].view(dtype).view(shape)
        return t

    def parts(self, shapes: tuple[tuple[int, ...], ...], dtype: torch.dtype) -> tuple[Tensor, list[Tensor]]:
        """A flat view and, end to end inside it, one view per shape (kept, as :meth:`view`'s are)."""
        key = ("parts", shapes, dtype)
        t = self.views.get(key)
        if t is None:
            sizes = [math.prod(s) for s in shapes]
            flat = self.view((sum(sizes),), dtype)
            views, offset = [], 0
            for shape, size in zip(shapes, sizes):
                views.append(flat[offset : offset + size].view(shape))
                offset += size
            t = self.views[key] = (flat, views)
        return t


class Workspace:
    """A pool of flat CPU buffers handed out by :func:`empty` inside :meth:`session`."""

    def __init__(self) -> None:
        self._free: list[_Block] = []  # buffers not held by the open session
        self._held: list[_Block] = []

    @property
    def nbytes(self) -> int:
        """Bytes the workspace keeps between steps."""
        return sum(b.nbytes for b in self._free) + sum(b.nbytes for b in self._held)

    @contextlib.contextmanager
    def session(self) -> Iterator[Workspace]:
        """Within the block, :func:`empty` draws from this workspace; everything drawn comes back at its end."""
        token = _CURRENT.set(self)
        try:
            yield self
        finally:
            _CURRENT.reset(token)
            self._free.extend(self._held)
            self._held.clear()

    def take(self, nbytes: int, key: tuple | None = None) -> _Block:
        """A buffer of at least ``nbytes`` not held by the session: the smallest free one that fits, else a new one.

        Among the smallest, one that already holds a view for ``key`` (shape, dtype) is preferred, so
        that a step's requests find their views again whatever order the buffers came back in.
        """
        # One plain loop (a step makes dozens of requests; this is Python overhead on every one).
        best, rank = -1, (0, False)
        for i, b in enumerate(self._free):
            if b.nbytes >= nbytes and (best < 0 or (b.nbytes, key not in b.views) < rank):
                best, rank = i, (b.nbytes, key not in b.views)
        if best >= 0:
            buf = self._free.pop(best)
        else:
            # Nothing free is large enough: the new buffer replaces the largest free one (too small),
            # so the workspace converges to what the largest bucket needs, not to the sum over buckets.
            if self._free:
                self._free.pop(max(range(len(self._free)), key=lambda i: self._free[i].nbytes))
            buf = _Block(nbytes)
        self._held.append(buf)
        return buf


def empty(shape: Sequence[int], dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """A contiguous uninitialised tensor: from the open session's workspace on CPU, else ``torch.empty``."""
    if torch.compiler.is_compiling():  # first: Dynamo cannot trace ContextVar.get
        return torch.empty(tuple(shape), dtype=dtype, device=device)
    ws = _CURRENT.get()
    device = torch.device(device)
    if ws is None or device.type != "cpu":
        return torch.empty(tuple(shape), dtype=dtype, device=device)
    shape = tuple(shape)
    return ws.take(max(math.prod(shape) * dtype.itemsize, 1), (shape, dtype)).view(shape, dtype)


def empty_parts(shapes: Sequence[Sequence[int]], dtype: torch.dtype, device: torch.device | str) -> tuple[Tensor, list[Tensor]]:
    """A flat uninitialised tensor and views of it shaped like ``shapes``, laid end to end.

    For packing many small tensors into one (``torch._foreach_copy_(views, tensors)``): from the
    open session's workspace on CPU, where a repeated request returns the same views (no slicing
    ops, which cost more than the copies for hundreds of small tensors), else fresh.
    """
    shapes = tuple(s if isinstance(s, tuple) else tuple(s) for s in shapes)  # torch.Size is a tuple: kept as it is
    ws = None if torch.compiler.is_compiling() else _CURRENT.get()
    if ws is not None and torch.device(device).type == "cpu":
        total = sum(map(math.prod, shapes))
        return ws.take(max(total * dtype.itemsize, 1), ("parts", shapes, dtype)).parts(shapes, dtype)
    flat = torch.empty(sum(math.prod(s) for s in shapes), dtype=dtype, device=device)
    views, offset = [], 0
    for shape in shapes:
        size = math.prod(shape)
        views.append(flat[offset : offset + size].view(shape))
        offset += size
    return flat, views


def empty_like(x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """:func:`empty` with ``x``'s shape, device and (unless given) dtype.

    Keeps a transposed layout (``x.mT`` contiguous, e.g. the wide view of a tall stack), as
    ``torch.empty_like`` would, so kernels see the same strides as with a fresh tensor; any other
    layout comes back contiguous.
    """
    dtype = dtype or x.dtype
    if x.dim() >= 2 and not x.is_contiguous() and x.mT.is_contiguous():
        return empty(x.mT.shape, dtype, x.device).mT
    return empty(x.shape, dtype, x.device)


def out_like(x: Tensor, dtype: torch.dtype | None = None) -> Tensor | None:
    """An ``out=`` tensor like ``x`` (:func:`empty_like`, optionally in another dtype), or None under ``torch.compile``.

    ``torch.op(..., out=None)`` is the functional form, which is what a compiled graph wants: out=
    into a strided tensor breaks the graph, and the compiler plans its own buffers anyway.
    """
    return None if torch.compiler.is_compiling() else empty_like(x, dtype)
