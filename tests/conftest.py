import pytest
import torch

# One intra-op thread per test process: `make test` runs two xdist workers on two cores, and
# oversubscribed BLAS threads make tiny-matrix tests many times slower.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
