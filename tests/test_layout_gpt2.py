"""transformers' GPT-2 (Conv1D weights stored (in, out)) gets exactly the updates of its nn.Linear twin."""

from __future__ import annotations

import pytest
import torch

import muonlab
from tests.helpers import step, with_svd

transformers = pytest.importorskip("transformers")

OPTIMIZERS = [info for info in muonlab.optimizer_infos() if info.cls.default_algorithm != "adamw"]


def _gpt2_and_linear_twin() -> tuple[torch.nn.Module, torch.nn.Module]:
    """A tiny fp64 GPT-2 and a copy whose every Conv1D is an nn.Linear holding W^T (same function)."""
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=40, n_positions=8,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(cfg).double()
    twin = transformers.GPT2LMHeadModel(cfg).double()
    twin.load_state_dict(model.state_dict())
    for name, module in list(twin.named_modules()):
        if type(module).__name__ == "Conv1D":
            w = module.weight  # (in, out)
            lin = torch.nn.Linear(w.shape[0], w.shape[1], dtype=torch.float64)
            with torch.no_grad():
                lin.weight.copy_(w.t())
                lin.bias.copy_(module.bias)
            parent = twin.get_submodule(name.rpartition(".")[0])
            setattr(parent, name.rpartition(".")[2], lin)
    return model, twin


@pytest.mark.parametrize("info", OPTIMIZERS, ids=[i.name for i in OPTIMIZERS])
def test_conv1d_steps_as_its_linear_twin(info):
    """Routing marks Conv1D layout='in_out'; after 3 steps every Conv1D weight equals its Linear twin's W^T (fp64)."""
    model, twin = _gpt2_and_linear_twin()
    groups_c, groups_l = muonlab.param_groups(model), muonlab.param_groups(twin)
    assert any(g.get("layout") == "in_out" for g in groups_c) and not any("layout" in g for g in groups_l)
    kw = with_svd(info.cls, info.sample_kwargs[0])
    opts = [info.cls(groups_c, **kw), info.cls(groups_l, **kw)]
    ids = torch.randint(0, 40, (4, 8), generator=torch.Generator().manual_seed(1))
    for _ in range(3):
        for m, opt in zip((model, twin), opts):
            opt.zero_grad()
            # Our own fp64 loss: transformers' labels= loss casts the logits to fp32.
            logits = m(ids).logits
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids.reshape(-1))
            loss.backward()
            step(opt, loss.detach())
    conv = {n: m.weight for n, m in model.named_modules() if type(m).__name__ == "Conv1D"}
    lin = dict(twin.named_modules())
    assert len(conv) == 8
    for name, w in conv.items():
        torch.testing.assert_close(w.detach().t(), lin[name].weight.detach(), rtol=0, atol=1e-10)
