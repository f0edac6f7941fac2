"""Routing: every trainable parameter classified and routed exactly once."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import muonlab
from tests.helpers import step


class TinyLM(nn.Module):
    def __init__(self, vocab=50, d=16, tied=True):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.ln = nn.LayerNorm(d)
        self.attn = nn.Linear(d, 3 * d, bias=False)
        self.mlp = nn.Linear(d, 4 * d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        if tied:
            self.lm_head.weight = self.wte.weight


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3)
        self.conv2 = nn.Conv2d(8, 8, 3)
        self.dw = nn.Conv2d(8, 8, 3, groups=8)
        self.fc = nn.Linear(8, 10)


def _roles(groups):
    return {name: g["role"] for g in groups for name in g["param_names"]}


@pytest.mark.parametrize("tied", [True, False])
def test_language_model_roles(tied):
    """Embedding, (tied) head, 1-D and hidden matrices go where the recipe says."""
    roles = _roles(muonlab.param_groups(TinyLM(tied=tied)))
    assert roles["wte.weight"] == "embedding"
    assert roles["attn.weight"] == roles["mlp.weight"] == "hidden"
    assert roles["ln.weight"] == roles["ln.bias"] == roles["mlp.bias"] == "vector"
    if tied:
        assert "lm_head.weight" not in roles  # one tensor, routed once as the embedding
    else:
        assert roles["lm_head.weight"] == "head"


def test_cnn_roles():
    """First conv and depthwise conv use AdamW, later convs are orthogonalized, last Linear is the head."""
    roles = _roles(muonlab.param_groups(TinyCNN()))
    assert roles["conv1.weight"] == "first_conv"
    assert roles["conv2.weight"] == "hidden"
    assert roles["dw.weight"] == "depthwise_conv"
    assert roles["fc.weight"] == "head"


def test_every_parameter_exactly_once_and_frozen_excluded():
    """Each trainable parameter appears in exactly one group; frozen ones in none."""
    model = TinyLM(tied=False)
    model.ln.weight.requires_grad_(False)
    groups = muonlab.param_groups(model)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}


def test_overrides_and_algorithms():
    """lr / weight decay overrides land in the right groups; 1-D params get no weight decay."""
    groups = muonlab.param_groups(TinyLM(), lr=0.01, weight_decay=0.1, adamw_lr=1e-3, adamw_weight_decay=0.05)
    by_role = {g["role"]: g for g in groups}
    assert by_role["hidden"]["algorithm"] == "orthogonal" and by_role["hidden"]["lr"] == 0.01
    assert by_role["embedding"]["lr"] == 1e-3 and by_role["embedding"]["weight_decay"] == 0.05
    assert by_role["vector"]["weight_decay"] == 0.0


def test_dry_run_table(capsys):
    """verbose=True prints one row per parameter with shape, role, algorithm, lr and weight decay."""
    muonlab.param_groups(TinyLM(tied=False), lr=0.02, verbose=True)
    out = capsys.readouterr().out
    assert "attn.weight" in out and "48x16" in out and "orthogonal" in out and "0.02" in out
    assert "lm_head.weight" in out and "head" in out
    assert "parameters orthogonalized" in out


def test_vocab_sized_matrix_warns():
    """A vocabulary-sized matrix routed to the orthogonal group triggers a warning."""
    model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 9000), nn.Linear(9000, 4))
    with pytest.warns(UserWarning, match="vocabulary-sized"):
        muonlab.param_groups(model)


def test_explicit_head_name():
    """head=[...] routes a module with an unusual name to AdamW."""
    model = TinyLM(tied=False)
    model.proj_out = model.lm_head
    del model.lm_head
    roles = _roles(muonlab.param_groups(model, head=["proj_out"]))
    assert roles["proj_out.weight"] == "head"


def test_groups_train_with_every_optimizer():
    """The routed groups are accepted by every registered optimizer."""
    for cls in muonlab.optimizers().values():
        model = TinyLM(tied=False)
        opt = cls(muonlab.param_groups(model))
        x = torch.randint(0, 50, (4, 6))
        loss = model.lm_head(model.mlp(model.wte(x))[..., :16]).logsumexp(-1).mean()
        loss.backward()
        step(opt, loss.detach())


def test_optimizer_describe_shows_effective_lr():
    """opt.describe() lists every parameter with its algorithm, lr and shape-adjusted effective lr."""
    model = TinyLM(tied=False)
    opt = muonlab.Muon(muonlab.param_groups(model), lr=0.02, adjust_lr="rms")
    table = opt.describe()
    row = next(line for line in table.splitlines() if line.startswith("attn.weight"))
    # rms convention: 0.02 * 0.2 * sqrt(max(48, 16)) = 0.0277
    assert "orthogonal" in row and "0.02 " in row and "0.0277" in row
    assert sum(1 for line in table.splitlines()[2:]) == sum(len(g["params"]) for g in opt.param_groups)
