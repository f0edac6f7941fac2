"""Routing on real transformers models (tiny configs built from config objects, no downloads)."""

from __future__ import annotations

import warnings

import pytest
from torch import nn

import muonlab

transformers = pytest.importorskip("transformers")

# ids inside the tiny vocabularies keep transformers' config validation quiet
_IDS = dict(bos_token_id=0, eos_token_id=0, pad_token_id=0)


def _gpt2(**kw):
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=16, **_IDS, **kw)
    return transformers.GPT2LMHeadModel(cfg)


def _bert(**kw):
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=16, pad_token_id=0, **kw)
    return transformers.BertForMaskedLM(cfg)


def _route(model):
    """(groups, the routing warnings) of param_groups(model)."""
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        groups = muonlab.param_groups(model)
    return groups, [str(x.message) for x in w if str(x.message).startswith("param_groups")]


def _algorithm_of(groups, p):
    (algorithm,) = [g["algorithm"] for g in groups for q in g["params"] if q is p]  # routed exactly once
    return algorithm


def _roles(groups):
    return {name: g["role"] for g in groups for name in g["param_names"]}


@pytest.mark.parametrize("tied", [True, False])
def test_gpt2_embeddings_and_head_adamw_conv1d_orthogonal(tied):
    """GPT-2: wte, wpe and lm_head use AdamW; every Conv1D (c_attn, c_proj, c_fc) weight is orthogonalized."""
    model = _gpt2(tie_word_embeddings=tied)
    groups, warned = _route(model)
    t = model.transformer
    for p in (t.wte.weight, t.wpe.weight, model.lm_head.weight):
        assert _algorithm_of(groups, p) == "adamw"
    conv1d = [(n, m) for n, m in model.named_modules() if type(m).__name__ == "Conv1D"]
    assert {n.rsplit(".", 1)[-1] for n, _ in conv1d} == {"c_attn", "c_proj", "c_fc"} and len(conv1d) == 8
    assert all(_algorithm_of(groups, m.weight) == "orthogonal" for _, m in conv1d)
    assert all(_algorithm_of(groups, m.bias) == "adamw" for _, m in conv1d)
    assert _roles(groups).get("lm_head.weight") == (None if tied else "head")
    assert not warned


def test_gpt2_base_model_has_no_head_and_no_warning():
    """GPT2Model (no LM head): its last Conv1D maps back to the model width and stays a hidden matrix."""
    model = transformers.GPT2Model(transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100,
                                                           n_positions=16, **_IDS))
    groups, warned = _route(model)
    assert "head" not in _roles(groups).values() and _roles(groups)["h.1.mlp.c_proj.weight"] == "hidden"
    assert not warned


@pytest.mark.parametrize("tied", [True, False])
def test_bert_masked_lm_decoder_uses_adamw(tied):
    """BertForMaskedLM: the (tied or untied) `decoder` projection to the vocabulary uses AdamW."""
    model = _bert(tie_word_embeddings=tied)
    decoder = model.cls.predictions.decoder
    assert (decoder.weight is model.bert.embeddings.word_embeddings.weight) == tied
    groups, warned = _route(model)
    assert _algorithm_of(groups, decoder.weight) == "adamw"
    assert _roles(groups)["cls.predictions.transform.dense.weight"] == "hidden"
    assert all(_algorithm_of(groups, m.weight) == "orthogonal" for m in model.bert.encoder.modules()
               if isinstance(m, nn.Linear))
    assert not warned


def test_hf_vit_class_token_and_positions_use_adamw():
    """transformers' ViT: raw cls_token and position_embeddings use AdamW, the classifier is the head."""
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                 image_size=16, patch_size=4, num_labels=5)
    model = transformers.ViTForImageClassification(cfg)
    groups, warned = _route(model)
    emb = model.vit.embeddings
    assert _algorithm_of(groups, emb.cls_token) == _algorithm_of(groups, emb.position_embeddings) == "adamw"
    assert _roles(groups)["classifier.weight"] == "head"
    assert not warned
