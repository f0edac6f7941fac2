"""muonlab.diagnostics.self_check: passes on healthy fp32 models, flags a wrong second derivative.

The finite difference is taken in fp64 whenever the model runs in it, so fp32 rounding of the loss
(about 1e-7 · |L|, divided by ε²) no longer swamps vᵀHv; the cases below are the ones from issue 10
(a tiny fp32 MLP and muonlab's own GPT reported fd_rel_err 43 and 4060).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from muonlab import diagnostics as dg
from muonlab.bench.models import GPT, build
from muonlab.diagnostics._params import cast_floating


def mse(model: nn.Module, batch) -> torch.Tensor:
    return (model(batch[0]) - batch[1]).pow(2).mean()


def lm_loss(model: nn.Module, batch) -> torch.Tensor:
    logits = model(batch[0])
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[1].reshape(-1))


def fp32_mlp(norm: bool = False) -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    layers = [nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4)]
    if norm:  # eval-mode BatchNorm reads fp32 running-stat buffers
        layers.insert(1, nn.BatchNorm1d(16))
    return nn.Sequential(*layers), (torch.randn(32, 8), torch.randn(32, 4))


class DetachedTanh(torch.autograd.Function):
    """tanh whose backward is right but detaches the saved output: its double backward drops tanh''."""

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return grad * (1 - y.detach() ** 2)


class Readout(nn.Module):
    """``mean(W₂ act(W₁ x))``: much of its curvature is the activation's second derivative."""

    def __init__(self, act) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.l1, self.l2, self.act = nn.Linear(8, 16), nn.Linear(16, 1), act
        with torch.no_grad():
            self.l2.weight.mul_(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(self.act(self.l1(x)))


def test_fp32_mlp_passes():
    """A tiny fp32 MLP with fp32 inputs: fd_rel_err well under 1e-2, evaluated in fp64."""
    model, batch = fp32_mlp()
    check = dg.self_check(model, mse, batch)
    assert check["fd_bits"] == 64 and check["fd_ok"] == 1.0
    assert check["fd_rel_err"] < 1e-4 and check["symmetry_rel_err"] < 1e-3
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the model is not cast


def test_fp32_muonlab_gpt_passes():
    """muonlab's tiny fp32 GPT (SDPA, tied head): fd_rel_err well under 1e-2, symmetry small."""
    model = build(lambda: GPT(32, 8, 2, 2, 16, tie_weights=True), seed=0)
    g = torch.Generator().manual_seed(1)
    batch = tuple(torch.randint(0, 32, (4, 8), generator=g) for _ in range(2))
    for seed in (0, 1):
        check = dg.self_check(model, lm_loss, batch, seed=seed)
        assert check["fd_bits"] == 64 and check["fd_ok"] == 1.0
        assert check["fd_rel_err"] < 1e-4 and check["symmetry_rel_err"] < 1e-3


def test_fp32_transformers_gpt2_passes():
    """A tiny fp32 transformers GPT-2 (Conv1D layers) with a plain cross-entropy passes in fp64."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=16,
                                  bos_token_id=0, eos_token_id=0, pad_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg)
    ids = torch.randint(0, 100, (4, 16), generator=torch.Generator().manual_seed(1))

    def next_token_loss(m: nn.Module, batch) -> torch.Tensor:
        # Not ``labels=``: transformers' loss casts the logits with ``.float()``, which would cap
        # the difference at fp32 (fd_bits 32).
        logits = m(input_ids=batch[0]).logits[:, :-1]
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[0][:, 1:].reshape(-1))

    check = dg.self_check(model, next_token_loss, (ids,))
    assert check["fd_bits"] == 64 and check["fd_ok"] == 1.0
    assert check["fd_rel_err"] < 1e-4 and check["symmetry_rel_err"] < 1e-3


@pytest.mark.parametrize("norm", [False, True], ids=["mlp", "batchnorm"])
def test_float64_on_fp32_model_and_inputs(norm):
    """dtype=float64 on an fp32 model with fp32 inputs (and fp32 buffers) runs, to fp64 accuracy."""
    model, batch = fp32_mlp(norm)
    model.eval()
    check = dg.self_check(model, mse, batch, dtype=torch.float64)
    assert check["symmetry_rel_err"] < 1e-10 and check["fd_rel_err"] < 1e-6
    hv = dg.hvp(model, mse, batch, [torch.ones_like(p) for p in model.parameters()], dtype=torch.float64)
    assert all(t.dtype == torch.float64 for t in hv)
    assert batch[0].dtype == torch.float32 and all(p.dtype == torch.float32 for p in model.parameters())


def test_cast_floating_keeps_integer_tensors_and_structure():
    """Floating tensors are cast through tuples, lists and dicts; token ids and masks are kept."""
    ids, mask, x = torch.arange(3), torch.ones(3, dtype=torch.bool), torch.zeros(3)
    out = cast_floating({"ids": ids, "inputs": [x, (mask, x)], "n": 3}, torch.float64)
    assert out["ids"] is ids and out["inputs"][1][0] is mask and out["n"] == 3
    assert out["inputs"][0].dtype == out["inputs"][1][1].dtype == torch.float64


@pytest.mark.filterwarnings("ignore:forward-over-reverse HVP failed")
@pytest.mark.parametrize("fp32_loss", [False, True], ids=["fp64-difference", "fp32-loss"])
def test_wrong_second_derivative_is_flagged(fp32_loss):
    """An op whose double backward drops its curvature fails the check; its healthy twin passes."""
    batch = (2 * torch.randn(32, 8, generator=torch.Generator().manual_seed(0)),)
    loss = (lambda m, b: m(b[0]).mean().float()) if fp32_loss else (lambda m, b: m(b[0]).mean())
    healthy = dg.self_check(Readout(torch.tanh), loss, batch, seed=1)
    broken = dg.self_check(Readout(DetachedTanh.apply), loss, batch, seed=1)
    assert healthy["fd_bits"] == broken["fd_bits"] == (32 if fp32_loss else 64)
    assert healthy["fd_ok"] == 1.0 and healthy["fd_rel_err"] < 1e-2
    assert broken["fd_ok"] == 0.0 and broken["fd_rel_err"] > 1.0 > 10 * broken["fd_floor"]


def test_fp32_only_loss_reports_its_rounding_floor():
    """A loss_fn that casts to fp32 caps the difference at fp32; the reported floor covers the gap."""
    model = build(lambda: GPT(32, 8, 2, 2, 16), seed=0)
    g = torch.Generator().manual_seed(1)
    batch = tuple(torch.randint(0, 32, (4, 8), generator=g) for _ in range(2))
    check = dg.self_check(model, lambda m, b: lm_loss(m, b).float(), batch)
    assert check["fd_bits"] == 32 and check["fd_ok"] == 1.0
    assert check["fd_floor"] > 1e-4 and check["fd_rel_err"] <= 1e-2 + check["fd_floor"]


class NoFloat64(nn.Module):
    """Rejects fp64 inputs, as a device without fp64 (MPS) or an fp32-only custom kernel would."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float64:
            raise TypeError("float64 is not supported here")
        return x


def test_falls_back_to_compute_dtype_without_fp64():
    """A model that cannot run in fp64 is differenced in fp32, and says so (fd_bits, fd_floor)."""
    model, batch = fp32_mlp()
    model.insert(0, NoFloat64())
    check = dg.self_check(model, mse, batch)
    assert check["fd_bits"] == 32 and check["fd_ok"] == 1.0 and check["fd_floor"] > 1e-6


def test_explicit_eps_is_used_and_validated():
    """A given eps is the step reported; eps <= 0 raises a ValueError naming eps."""
    model, batch = fp32_mlp()
    assert dg.self_check(model, mse, batch, eps=1e-2)["fd_eps"] == 1e-2
    with pytest.raises(ValueError, match="eps"):
        dg.self_check(model, mse, batch, eps=0.0)
