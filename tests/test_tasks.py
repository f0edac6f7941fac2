"""Tests for muonlab.bench.tasks: registry/validation, determinism, a few training steps, GPT attention paths."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from muonlab.bench.models import GPT, build
from muonlab.bench.tasks import TASKS, make_task, task_keys

SMALL_GPT = dict(n_layer=1, n_embd=32, n_head=2, block_size=16, batch_size=4, eval_batches=2)


def _fake_cifar(root, n=20):
    root.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, n).tolist()}
        with open(root / name, "wb") as f:
            pickle.dump(d, f)
    return root


def _shards(root, vocab=100):
    root.mkdir()
    rng = np.random.default_rng(0)
    rng.integers(0, vocab, 5000, dtype=np.uint16).tofile(root / "train.bin")
    rng.integers(0, vocab, 1000, dtype=np.uint16).tofile(root / "val.bin")
    return root


def _configs(tmp_path):
    """One small config per task and data source."""
    text = tmp_path / "corpus.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 300)
    return {
        "gpt-zipf": ("gpt", dict(SMALL_GPT, train_tokens=20_000, val_tokens=2_000, vocab=128)),
        "gpt-text": ("gpt", dict(SMALL_GPT, data="text", path=str(text))),
        "gpt-tokens": ("gpt", dict(SMALL_GPT, data="tokens", path=str(_shards(tmp_path / "tok")))),
        "regression": ("regression", dict(n_train=512, n_val=256, width=32, batch_size=64)),
        "image-digits": ("image", dict(width=8, batch_size=32)),
        "image-cifar": ("image", dict(width=4, batch_size=8, path=str(_fake_cifar(tmp_path / "cifar")))),
        "quadratic": ("quadratic", dict(d1=8, d2=6)),
    }


CASES = ["gpt-zipf", "gpt-text", "gpt-tokens", "regression", "image-digits", "image-cifar", "quadratic"]


@pytest.mark.parametrize("case", CASES)
def test_task_trains_and_evaluates(case, tmp_path):
    """Each task builds, takes a few AdamW steps, and evaluate() returns a finite, lower val_loss."""
    name, cfg = _configs(tmp_path)[case]
    task = make_task(name, **cfg)
    assert task.name == name and math.isfinite(task.target) and task.steps >= 1
    torch.manual_seed(0)  # the task must not depend on this
    model = task.make_model(0)
    before = task.evaluate(model)["val_loss"]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batches = task.train_batches(0)
    for _ in range(8):
        loss = task.loss(model, next(batches))
        opt.zero_grad()
        loss.backward()
        opt.step()
    metrics = task.evaluate(model)
    assert math.isfinite(metrics["val_loss"]) and metrics["val_loss"] < before
    if name == "image":
        assert 0.0 <= metrics["val_acc"] <= 1.0


@pytest.mark.parametrize("case", CASES)
def test_task_deterministic_for_seed(case, tmp_path):
    """Same seed: bitwise-identical init and batch stream; the global RNG is never touched."""
    name, cfg = _configs(tmp_path)[case]
    task = make_task(name, **cfg)
    state = torch.get_rng_state()
    m1, m2 = task.make_model(3), task.make_model(3)
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)
    b1, b2 = task.train_batches(7), task.train_batches(7)
    for _ in range(3):
        x1, x2 = next(b1), next(b2)
        if x1 is not None:
            assert all(torch.equal(a, b) for a, b in zip(x1, x2))
    assert torch.equal(state, torch.get_rng_state())
    if name != "quadratic":  # the quadratic always starts at W = 0 and has no data
        m3 = task.make_model(4)
        assert any(not torch.equal(p1, p3) for p1, p3 in zip(m1.parameters(), m3.parameters()))
        x3 = next(task.train_batches(8))
        assert not torch.equal(next(task.train_batches(7))[0], x3[0])


def test_default_configs_construct():
    """Every registered task builds with its defaults (data loads lazily, paths checked eagerly)."""
    for name in TASKS:
        task = make_task(name)
        assert task.target > 0 and task.steps > 0 and "target" in task_keys(name)


@pytest.mark.parametrize(
    "name, cfg, key",
    [
        ("nope", {}, "nope"),
        ("gpt", {"n_layers": 2}, "n_layers"),
        ("gpt", {"data": "imagenet"}, "data"),
        ("gpt", {"data": "text", "path": "/no/such/corpus"}, "/no/such/corpus"),
        ("gpt", {"data": "tokens", "path": "/no/such/shards"}, "/no/such/shards"),
        ("gpt", {"data": "tokens"}, "path"),
        ("gpt", {"n_embd": 30, "n_head": 4}, "n_embd"),
        ("gpt", {"attn_impl": "flash"}, "attn_impl"),
        ("gpt", {"exponent": -1.0}, "exponent"),
        ("gpt", {"batch_size": 0}, "batch_size"),
        ("gpt", {"val_tokens": 10}, "val_tokens"),
        ("regression", {"depth": 1}, "depth"),
        ("regression", {"lr": 0.1}, "lr"),
        ("image", {"path": "/no/such/cifar"}, "/no/such/cifar"),
        ("image", {"val_fraction": 1.5}, "val_fraction"),
        ("quadratic", {"rho": 0.5}, "rho"),
        ("quadratic", {"d1": 0}, "d1"),
    ],
)
def test_bad_config_raises_naming_key(name, cfg, key):
    """Unknown task/key, bad values and missing paths fail at construction, naming the culprit."""
    with pytest.raises(ValueError, match=key.replace("/", "/")):
        make_task(name, **cfg)


def test_missing_cifar_file_named(tmp_path):
    """A CIFAR folder lacking a batch file names that file."""
    root = _fake_cifar(tmp_path / "c")
    (root / "data_batch_3").unlink()
    with pytest.raises(ValueError, match="data_batch_3"):
        make_task("image", path=str(root))


def test_gpt_math_attention_equals_sdpa():
    """The explicit softmax(QK^T)V path matches SDPA to 1e-5 in fp32 (outputs and gradients)."""
    model = build(lambda: GPT(50, 16, n_layer=2, n_head=4, n_embd=32), 0)
    idx = torch.randint(0, 50, (3, 16), generator=torch.Generator().manual_seed(0))
    out_sdpa = model(idx)
    g_sdpa = torch.autograd.grad(out_sdpa.square().mean(), list(model.parameters()))
    model.attn_impl = "math"
    assert all(b.attn.attn_impl == "math" for b in model.h)
    out_math = model(idx)
    g_math = torch.autograd.grad(out_math.square().mean(), list(model.parameters()))
    torch.testing.assert_close(out_math, out_sdpa, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_math, g_sdpa):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_gpt_math_attention_double_backward():
    """attn_impl='math' supports Hessian-vector products (double backward)."""
    model = build(lambda: GPT(20, 8, n_layer=1, n_head=2, n_embd=16, attn_impl="math"), 1)
    idx = torch.randint(0, 20, (2, 8), generator=torch.Generator().manual_seed(0))
    params = list(model.parameters())
    loss = torch.nn.functional.cross_entropy(model(idx).view(-1, 20), idx.view(-1))
    grads = torch.autograd.grad(loss, params, create_graph=True)
    hv = torch.autograd.grad(sum((g * torch.ones_like(g)).sum() for g in grads), params)
    assert all(torch.isfinite(h).all() for h in hv)


def test_gpt_naming_and_tying():
    """Routing names: wte is nn.Embedding, lm_head an nn.Linear; tying shares one tensor."""
    task = make_task("gpt", **dict(SMALL_GPT, train_tokens=5_000, val_tokens=1_000, vocab=64, tie_weights=True))
    model = task.make_model(0)
    assert isinstance(model.wte, torch.nn.Embedding) and isinstance(model.lm_head, torch.nn.Linear)
    assert model.lm_head.weight is model.wte.weight
    assert all(p.dim() >= 2 or "ln" in n for n, p in model.named_parameters())  # no biases by default


def test_image_first_conv_named():
    """The CNN's first conv is `conv1` and the classifier `head`."""
    model = make_task("image", width=4).make_model(0)
    assert isinstance(model.conv1, torch.nn.Conv2d) and isinstance(model.head, torch.nn.Linear)


def test_quadratic_task_matches_problem():
    """val_loss at W = 0 is the problem's constant; the loss is the problem's loss."""
    task = make_task("quadratic", d1=6, d2=6)
    model = task.make_model(0)
    assert task.evaluate(model)["val_loss"] == pytest.approx(task.problem.const, rel=1e-5)
    with torch.no_grad():
        model.weight.copy_(task.problem.optimum())
    assert abs(task.evaluate(model)["val_loss"]) < 1e-4
