"""Distributed parity on CPU gloo: every mode equals one process fed the averaged gradients.

Each test spawns one process group and runs many checks inside it (a spawn costs seconds); the
bodies are in ``tests/distributed_cases.py``. fp64 with the exact polar factor, tolerance 1e-12.
"""

from __future__ import annotations

import pytest

from muonlab.distributed.plan import assign_owners, chunk_length, ns_flops
from tests import distributed_cases as C


def test_chunks_follow_fsdp2_layout():
    """Rows per rank follow torch.chunk: 34 on 4 ranks is 9, 9, 9, 7; 3 on 4 leaves one rank empty."""
    assert [chunk_length(34, 4, r) for r in range(4)] == [9, 9, 9, 7]
    assert [chunk_length(3, 4, r) for r in range(4)] == [1, 1, 1, 0]
    assert [chunk_length(5, 4, r) for r in range(4)] == [2, 2, 1, 0]


def test_owners_cover_every_matrix_once_and_balance_flops():
    """Owner counts sum to each stack's size, at most ceil(N/W) per rank; leftovers go to the least-loaded ranks."""
    big, mid, small = ns_flops(64, 64, 5), ns_flops(16, 16, 5), ns_flops(8, 8, 5)
    stacks = [(3, mid), (1, big), (1, big), (1, small)]
    counts = assign_owners(stacks, 4)
    assert [sum(c) for c in counts] == [3, 1, 1, 1]
    assert all(max(c) <= 1 for c in counts)  # ceil(N/W) = 1: equal all_gather blocks, bounded owner memory
    loads = sorted(sum(c[r] * f for c, (_, f) in zip(counts, stacks)) for r in range(4))
    # The big matrices on two ranks, two of the three 16x16 on the idle ranks, the third (it must go
    # somewhere) on a big one, the 8x8 on the lightest: the best possible under the cap.
    assert loads == sorted([big + mid, big, mid + small, mid])
    assert assign_owners([(10, mid)], 4) == [[3, 3, 2, 2]]


def test_ns_flops_formula():
    """2 T k^2 (2K + k) with k = min(m, n), K = max(m, n)."""
    assert ns_flops(10, 30, 5) == 2 * 5 * 100 * (60 + 10) == ns_flops(30, 10, 5)


@pytest.mark.distributed
@pytest.mark.parametrize("world", [2, 3])
def test_replicated_equals_one_process(world, tmp_path):
    """DDP + process_group: exact for every optimizer, state bitwise replicated, work split, one all_gather per stack."""
    C.spawn(C.replicated, world, str(tmp_path))


@pytest.mark.distributed
@pytest.mark.parametrize("world", [2, 4])
def test_sharded_equals_one_process(world, tmp_path):
    """FSDP2 (uneven, empty and column shards, batch-sharded experts, a missing gradient): exact; collectives as designed."""
    C.spawn(C._sequence, world, str(tmp_path), (C.sharded, C.sharded_nonfinite))


@pytest.mark.distributed
def test_hsdp_zero_bf16_and_errors(tmp_path):
    """HSDP on 2 x 2 is exact; ZeRO wrapping every optimizer is exact; bf16 NS agrees; bad setups raise fast."""
    C.spawn(C.hsdp, 4, str(tmp_path))
    C.spawn(C._sequence, 2, str(tmp_path), (C.zero, C.replicated_bf16, C.negatives))


@pytest.mark.distributed
def test_dcp_resume_and_reshard(tmp_path):
    """DCP: save at step 2 and resume == 4 uninterrupted steps; a W=2 checkpoint loads at W=4."""
    C.spawn(C.dcp_save, 2, str(tmp_path), str(tmp_path / "ckpt"))
    C.spawn(C.dcp_reshard, 4, str(tmp_path), str(tmp_path / "ckpt"), 2)
