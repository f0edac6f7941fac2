"""Routing by structure (plain PyTorch models): tables, tied heads, structural heads, unsure flags, strict mode."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import muonlab
from muonlab.bench.models import CNN, GPT, MLP, build


class TinyViT(nn.Module):
    """ViT-style: patch conv, raw ``cls_token`` / ``pos_embed`` parameters, one block, a head."""

    def __init__(self, d=16, classes=5, head_name="head"):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, d, 4, stride=4)  # 8x8 image -> 4 patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.randn(1, 5, d) * 0.02)
        self.norm1, self.norm2, self.norm = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.head_name = head_name
        self.add_module(head_name, nn.Linear(d, classes))

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (b, 4, d)
        x = torch.cat([self.cls_token.expand(x.size(0), -1, -1), x], 1) + self.pos_embed
        q, k, v = self.qkv(self.norm1(x)).chunk(3, -1)
        x = x + self.proj(torch.softmax(q @ k.transpose(1, 2), -1) @ v)
        x = x + self.fc2(torch.relu(self.fc1(self.norm2(x))))
        return getattr(self, self.head_name)(self.norm(x[:, 0]))


class RawMatrix(nn.Module):
    """A custom linear layer with a bare ``weight`` matrix: the router cannot tell it from a table."""

    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d, d))

    def forward(self, x):
        return x @ self.weight.T


class Conv1D(nn.Module):
    """The duck type of transformers' Conv1D: ``nf`` outputs, weight stored ``(in, out)``."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.zeros(nf))


def _roles(groups):
    return {name: g["role"] for g in groups for name in g["param_names"]}


def _algorithm_of(groups, p):
    return next(g["algorithm"] for g in groups for q in g["params"] if q is p)


def _routing_warnings(fn):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = fn()
    return out, [str(x.message) for x in w if str(x.message).startswith("param_groups")]


def test_vit_class_token_and_positions_use_adamw():
    """ViT's raw cls_token (1,1,D) and pos_embed (1,N,D) go to AdamW, its block matrices are orthogonalized."""
    model = TinyViT()
    groups, warned = _routing_warnings(lambda: muonlab.param_groups(model))
    roles = _roles(groups)
    assert roles["cls_token"] == roles["pos_embed"] == "embedding"
    assert roles["qkv.weight"] == roles["proj.weight"] == roles["fc1.weight"] == roles["fc2.weight"] == "hidden"
    assert roles["patch_embed.weight"] == "first_conv" and roles["head.weight"] == "head"
    assert not warned
    opt = muonlab.Muon(groups, lr=0.02, adamw_lr=1e-3)
    model(torch.randn(2, 3, 8, 8)).logsumexp(-1).mean().backward()
    opt.step()


def test_vit_head_found_by_structure():
    """An unnamed classifier (the last Linear, out_features no hidden width) is the head."""
    roles = _roles(muonlab.param_groups(TinyViT(head_name="fc")))
    assert roles["fc.weight"] == "head" and roles["fc2.weight"] == "hidden"


def test_raw_positional_table_uses_adamw():
    """A raw (N, D) nn.Parameter named as a positional table goes to AdamW without a warning."""
    model = nn.Module()
    model.tok = nn.Embedding(20, 8)
    model.pos_table = nn.Parameter(torch.randn(6, 8))
    model.mix = nn.Linear(8, 8)
    model.out = nn.Linear(8, 20)
    groups, warned = _routing_warnings(lambda: muonlab.param_groups(model))
    assert _roles(groups) == {"tok.weight": "embedding", "pos_table": "embedding", "mix.weight": "hidden",
                              "mix.bias": "vector", "out.weight": "head", "out.bias": "vector"}
    assert not warned


def test_tied_decoder_registered_before_embedding():
    """A BERT-style `decoder` tied to the embedding goes to AdamW even when it is registered first."""
    model = nn.Module()
    model.decoder = nn.Linear(8, 30)
    model.enc = nn.Linear(8, 8)
    model.word_embeddings = nn.Embedding(30, 8)
    model.decoder.weight = model.word_embeddings.weight
    groups = muonlab.param_groups(model)
    assert _algorithm_of(groups, model.word_embeddings.weight) == "adamw"
    assert _roles(groups)["decoder.weight"] == "embedding"  # the canonical name is the first one registered
    assert _roles(groups)["enc.weight"] == "hidden"


def test_head_sharing_memory_with_embedding_is_tied_but_flat_buffer_views_are_not():
    """A separate Parameter over the embedding's memory counts as tied; disjoint views of one buffer do not."""
    model = nn.Module()
    model.emb = nn.Embedding(30, 8)
    model.enc = nn.Linear(8, 8)
    model.proj = nn.Linear(8, 30)
    model.proj.weight = nn.Parameter(model.emb.weight.data)  # same storage, another Parameter object
    roles = _roles(muonlab.param_groups(model))
    assert roles["proj.weight"] == "embedding" and roles["enc.weight"] == "hidden"

    flat = torch.zeros(30 * 8 + 8 * 8)  # one buffer holding both weights, as FSDP1 / fused inits lay them out
    model.emb.weight = nn.Parameter(flat[:240].view(30, 8))
    model.enc.weight = nn.Parameter(flat[240:].view(8, 8))
    model.proj.weight = nn.Parameter(torch.randn(30, 8))
    roles = _roles(muonlab.param_groups(model))
    assert roles["enc.weight"] == "hidden" and roles["proj.weight"] == "head"


def test_duck_typed_conv1d_is_linear_like():
    """A module named Conv1D with `nf` and an (in, out) weight is Linear-like: hidden, or the head to the vocabulary."""
    model = nn.Module()
    model.wte = nn.Embedding(40, 8)
    model.c_fc = Conv1D(32, 8)
    model.c_proj = Conv1D(8, 32)
    model.to_vocab = Conv1D(40, 8)
    groups, warned = _routing_warnings(lambda: muonlab.param_groups(model))
    roles = _roles(groups)
    assert roles["c_fc.weight"] == roles["c_proj.weight"] == "hidden"
    assert roles["to_vocab.weight"] == "head" and roles["to_vocab.bias"] == "vector"
    assert not warned


def test_base_model_without_head_keeps_last_linear_hidden():
    """With embeddings and a last Linear mapping back to the model width, there is no head and no warning."""
    model = nn.Module()
    model.wte = nn.Embedding(50, 16)
    model.up, model.down = nn.Linear(16, 64), nn.Linear(64, 16)
    groups, warned = _routing_warnings(lambda: muonlab.param_groups(model))
    assert _roles(groups)["down.weight"] == "hidden" and "head" not in _roles(groups).values()
    assert not warned


def test_torch_composite_layers_and_nd_norm_gains():
    """MultiheadAttention / LSTM matrices are orthogonalized; a 2-D LayerNorm gain is elementwise (AdamW)."""
    model = nn.Module()
    model.emb = nn.Embedding(30, 16)
    model.layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    model.rnn = nn.LSTM(16, 16)
    model.ln = nn.LayerNorm((4, 16))
    model.lm_head = nn.Linear(16, 30)
    groups, warned = _routing_warnings(lambda: muonlab.param_groups(model))
    roles = _roles(groups)
    assert roles["layer.self_attn.in_proj_weight"] == roles["layer.self_attn.out_proj.weight"] == "hidden"
    assert roles["rnn.weight_ih_l0"] == roles["rnn.weight_hh_l0"] == "hidden"
    assert roles["ln.weight"] == roles["ln.bias"] == "vector"
    assert not warned


def test_unsure_parameters_flagged_in_table_and_warned_once(capsys):
    """Every unsure parameter is marked '?' in the table and all are listed in one warning."""
    model = nn.Module()
    model.emb = nn.Embedding(30, 16)
    model.a, model.b = RawMatrix(16), RawMatrix(16)
    model.experts = nn.Parameter(torch.randn(4, 16, 16))
    model.lm_head = nn.Linear(16, 30)
    with pytest.warns(UserWarning) as record:
        groups = muonlab.param_groups(model, verbose=True)
    messages = [str(w.message) for w in record if str(w.message).startswith("param_groups")]
    assert len(messages) == 1 and all(n in messages[0] for n in ("a.weight", "b.weight", "experts"))
    assert all(_algorithm_of(groups, p) == "adamw" for p in (model.a.weight, model.b.weight, model.experts))
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:] if line.strip()}
    assert all("? " in rows[n] for n in ("a.weight", "b.weight", "experts"))
    assert "? " not in rows["emb.weight"] and "? " not in rows["lm_head.weight"]


def test_strict_raises_on_ambiguous_model():
    """strict=True raises ValueError naming every unsure parameter instead of warning."""
    model = nn.Sequential(nn.Linear(8, 16), RawMatrix(16), nn.Linear(16, 3))
    with pytest.raises(ValueError, match=r"1\.weight"):
        muonlab.param_groups(model, strict=True)
    vocab = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 9000), nn.Linear(9000, 4))
    with pytest.raises(ValueError, match=r"1\.weight.*vocabulary-sized"):
        muonlab.param_groups(vocab, strict=True)


def test_roles_override_settles_unsure_parameters():
    """roles={name: role} decides a parameter outright (no flag); bad roles or names raise ValueError."""
    model = nn.Sequential(nn.Linear(8, 16), RawMatrix(16), nn.Linear(16, 3))
    groups = muonlab.param_groups(model, roles={"1.weight": "hidden"}, strict=True)
    assert _roles(groups)["1.weight"] == "hidden" and _roles(groups)["2.weight"] == "head"
    with pytest.raises(ValueError, match="roles"):
        muonlab.param_groups(model, roles={"1.weight": "orthogonal"})
    with pytest.raises(ValueError, match="no parameter named"):
        muonlab.param_groups(model, roles={"nope.weight": "hidden"})
    with pytest.raises(ValueError, match="cannot be orthogonalized"):
        muonlab.param_groups(model, roles={"0.bias": "hidden"})


def test_module_declared_roles():
    """A custom layer's ``muonlab_roles = {local name: role}`` decides its raw parameters; roles= still wins."""

    class Declared(nn.Module):
        muonlab_roles = {"weight": "hidden"}

        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(16, 16))

    model = nn.Sequential(nn.Linear(8, 16), Declared(), nn.Linear(16, 3))
    groups, warned = _routing_warnings(lambda: muonlab.param_groups(model, strict=True))
    assert not warned and _roles(groups)["1.weight"] == "hidden"
    assert _roles(muonlab.param_groups(model, roles={"1.weight": "embedding"}))["1.weight"] == "embedding"
    Declared.muonlab_roles = {"weight": "orthogonal"}
    with pytest.raises(ValueError, match="roles"):
        muonlab.param_groups(model)
    Declared.muonlab_roles = {"missing": "hidden"}
    with pytest.raises(ValueError, match="no parameter named '1.missing'"):
        muonlab.param_groups(model)


def test_bench_quadratic_task_orthogonalizes_its_matrix():
    """The bench quadratic task's bare matrix is a hidden weight (Muon-family runs must not silently be AdamW runs)."""
    from muonlab.bench.tasks.quadratic import QuadraticModel

    groups = muonlab.param_groups(QuadraticModel(8, 6), strict=True)
    assert [g["algorithm"] for g in groups] == ["orthogonal"]


@pytest.mark.parametrize("factory", [
    lambda: MLP(8, 16, 3),
    lambda: MLP(8, 16, 3, d_out=10),
    lambda: GPT(64, 16, n_layer=2, n_head=2, n_embd=32),
    lambda: GPT(64, 16, n_layer=2, n_head=2, n_embd=32, tie_weights=True),
    lambda: CNN(3, 10, width=8),
], ids=["mlp", "mlp-classes", "gpt", "gpt-tied", "cnn"])
def test_no_warning_on_muonlab_models(factory):
    """muonlab's own MLP, GPT and CNN route without any warning, strict mode included, with the expected head."""
    model = build(factory, seed=0)
    groups, warned = _routing_warnings(lambda: muonlab.param_groups(model, strict=True))
    assert not warned
    roles = _roles(groups)
    head = {"MLP": "layers.2.weight", "GPT": "lm_head.weight", "CNN": "head.weight"}[type(model).__name__]
    if getattr(model, "tie_weights", False):
        assert roles["wte.weight"] == "embedding" and head not in roles
    else:
        assert roles[head] == "head"
    assert all(r == "hidden" for n, r in roles.items() if ".c_" in n)


class _ConventionModel(nn.Module):
    """A model exposing get_input_embeddings / get_output_embeddings (the transformers convention)."""

    def __init__(self):
        super().__init__()
        self.tok = RawMatrix(16)  # a custom table module: a bare matrix, unsure without the convention
        self.proj = nn.Linear(16, 12)  # the output projection, registered before a hidden matrix
        self.mix = nn.Linear(16, 16)

    def get_input_embeddings(self):
        return self.tok

    def get_output_embeddings(self):
        return self.proj


def test_transformers_convention_methods_decide():
    """get_input_embeddings() marks an embedding and get_output_embeddings() the head, whatever their type or place."""
    groups, warned = _routing_warnings(lambda: muonlab.param_groups(_ConventionModel(), strict=True))
    roles = _roles(groups)
    assert roles["tok.weight"] == "embedding" and roles["proj.weight"] == "head" and roles["mix.weight"] == "hidden"
    assert not warned


def test_guessed_heads_are_flagged():
    """A head chosen only because it is the last Linear, or whose width is both vocabulary and hidden, is flagged."""
    mlp = build(lambda: MLP(8, 16, 3, d_out=16), seed=0)  # out 16 is also the hidden width
    groups, warned = _routing_warnings(lambda: muonlab.param_groups(mlp))
    assert _roles(groups)["layers.2.weight"] == "head" and len(warned) == 1 and "layers.2.weight" in warned[0]
    lm = nn.Module()
    lm.wte = nn.Embedding(16, 16)  # vocabulary size == model width
    lm.mix, lm.out = nn.Linear(16, 16), nn.Linear(16, 16)
    groups, warned = _routing_warnings(lambda: muonlab.param_groups(lm))
    assert _roles(groups)["out.weight"] == "head" and len(warned) == 1 and "out.weight" in warned[0]
