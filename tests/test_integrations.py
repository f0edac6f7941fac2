"""muonlab inside the frameworks people train with: torch.compile, torch.amp, Lightning, accelerate.

Each integration trains, checkpoints and resumes, and the resumed trajectory must equal an
uninterrupted run. Everything runs on CPU in a deterministic order (fixed data, no shuffling, one
thread), so the comparisons are exact (``torch.equal``) unless a test says why not.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch._dynamo
from torch import nn
from torch._dynamo.utils import counters

import muonlab


def _mlp(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4)).to(dtype)


def _batches(n: int, dtype: torch.dtype = torch.float32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 8, generator=g).to(dtype), torch.randn(16, 4, generator=g).to(dtype)) for _ in range(n)]


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


# ---------------------------------------------------------------------------- torch.compile
def _compile_run(cls, steps: int, compiled: bool, backend: str, warmup: int = 3):
    """Train an MLP with a per-step LR schedule; return the losses, the params and the graphs added after warm-up."""
    model = _mlp()
    opt = cls(muonlab.param_groups(model, head=["4"]), lr=0.02)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1.0 + 0.3 * s))  # a new lr every step
    step = torch.compile(opt.step, backend=backend) if compiled else opt.step
    fwd = torch.compile(model, backend=backend) if compiled else model
    losses, graphs = [], 0
    for i, (x, y) in enumerate(_batches(steps)):
        if compiled and i == warmup:
            graphs = counters["stats"]["unique_graphs"]
        opt.zero_grad()
        loss = nn.functional.mse_loss(fwd(x), y)
        loss.backward()
        with torch._dynamo.config.patch(error_on_recompile=compiled and i >= warmup):  # a recompile raises
            step()
        sched.step()
        losses.append(loss.detach())
    return torch.stack(losses), _params(model), counters["stats"]["unique_graphs"] - graphs if compiled else 0


@pytest.fixture
def fresh_dynamo():
    """A clean Dynamo cache and counters; hitting the recompile limit raises instead of falling back to eager."""
    torch._dynamo.reset()
    counters.clear()
    # torch 2.13's FX graph cache can return a graph whose guards name another function's
    # arguments (KeyError: 'params' on a warm cache); compile afresh.
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True), torch._inductor.config.patch(fx_graph_cache=False):
        yield
    torch._dynamo.reset()


def test_compiled_hyperparameter_is_a_graph_input(fresh_dynamo):
    """Stack.hp under torch.compile (aot_eager): a new lr at every call, three stack shapes, no recompile after warm-up.

    The fast check of the cause: ``torch.full((), float(lr))`` was specialized by AOTAutograd (a
    guard on the lr's value), so an LR scheduler recompiled every hyperparameter read per step.
    """
    from muonlab.stages import Stack

    def scaled(G, group):
        stack = Stack(grad=G, update=G, group=group, step=None, param_states=[{}], counts=[1], squeeze=[True])
        return stack.hp("lr") * stack.update

    f = torch.compile(scaled, backend="aot_eager")
    g = torch.Generator().manual_seed(0)
    stacks = [torch.randn(1, 8, 6, generator=g), torch.randn(1, 4, 8, generator=g), torch.randn(1, 6, generator=g)]
    for i in range(8):
        group = {"lr": 0.02 / (1.0 + 0.3 * i)}
        for G in stacks:
            with torch._dynamo.config.patch(error_on_recompile=i >= 3):  # after warm-up a recompile raises
                out = f(G, group)
            assert torch.equal(out, scaled(G, group))


@pytest.mark.slow
def test_compiled_step_with_scheduler_does_not_recompile(fresh_dynamo):
    """torch.compile(opt.step), lr new at every step: no recompilation after 3 warm-up steps, eager's results."""
    g = torch.Generator().manual_seed(0)
    shapes = [(8, 6), (4, 8), (6,)]  # two matrix shapes (stacks) and an AdamW vector
    grads = [[torch.randn(*s, generator=g) for s in shapes] for _ in range(12)]
    runs = []
    for compiled in (True, False):
        ps = [nn.Parameter(torch.ones(*s)) for s in shapes]
        opt = muonlab.Muon([{"params": ps[:2]}, {"params": ps[2:], "algorithm": "adamw"}], lr=0.02, adamw_lr=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1.0 + 0.3 * s))
        # aot_eager: AOTAutograd is where a Python-float lr was specialized (guarded by value) and
        # recompiled every step until recompile_limit; inductor's code generation adds only time here.
        step = torch.compile(opt.step, backend="aot_eager") if compiled else opt.step
        for i, gs in enumerate(grads):
            for p, gr in zip(ps, gs):
                p.grad = gr.clone()
            if compiled and i == 3:
                graphs = counters["stats"]["unique_graphs"]
            with torch._dynamo.config.patch(error_on_recompile=compiled and i >= 3):  # a recompile now raises
                step()
            sched.step()
        runs.append([p.detach().clone() for p in ps])
    assert counters["stats"]["unique_graphs"] == graphs
    for a, e in zip(*runs):  # the traced graph runs the same fp32 kernels, up to decompositions
        torch.testing.assert_close(a, e, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("cls", [muonlab.Muon, muonlab.NAMO, muonlab.AdaMuon], ids=lambda c: c.name)
def test_compiled_model_and_step_match_eager(cls, fresh_dynamo):
    """Inductor-compiled model and opt.step (per-step lr): no recompiles after warm-up, eager to fp32 tolerance."""
    losses_c, params_c, new_graphs = _compile_run(cls, 12, compiled=True, backend="inductor")
    losses_e, params_e, _ = _compile_run(cls, 12, compiled=False, backend="inductor")
    assert new_graphs == 0
    # Inductor fuses and reorders fp32 arithmetic (e.g. the Newton-Schulz polynomial), so the
    # results agree to fp32 rounding accumulated over 12 steps, not bitwise.
    torch.testing.assert_close(losses_c, losses_e, rtol=1e-4, atol=1e-5)
    for a, b in zip(params_c, params_e):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------- torch.amp
def _amp_train(model, opt, scaler, batches):
    """CPU autocast (bf16) forward, GradScaler backward / unscale / step / update; the losses."""
    losses = []
    for x, y in batches:
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.mse_loss(model(x).float(), y)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)  # true gradients, e.g. for clipping, before the step
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        scaler.step(opt)
        scaler.update()
        losses.append(loss.detach())
    return torch.stack(losses)


def _amp_setup():
    model = _mlp()
    opt = muonlab.NAMO(muonlab.param_groups(model, head=["4"]), lr=0.02)
    return model, opt, torch.amp.GradScaler("cpu", init_scale=2.0**10)


def test_amp_autocast_gradscaler_resume_equals_uninterrupted():
    """bf16 autocast + GradScaler: 6 steps, state dicts saved and loaded into fresh objects, 4 more == 10 straight."""
    batches = _batches(10)
    model, opt, scaler = _amp_setup()
    straight = _amp_train(model, opt, scaler, batches)
    final = _params(model)

    model, opt, scaler = _amp_setup()
    first = _amp_train(model, opt, scaler, batches[:6])
    saved = {k: copy.deepcopy(o.state_dict()) for k, o in (("model", model), ("opt", opt), ("scaler", scaler))}
    model, opt, scaler = _amp_setup()
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    scaler.load_state_dict(saved["scaler"])
    second = _amp_train(model, opt, scaler, batches[6:])
    assert torch.equal(torch.cat([first, second]), straight)
    for a, b in zip(_params(model), final):
        assert torch.equal(a, b)


def test_gradscaler_skips_step_on_inf_gradient():
    """An inf gradient: scaler.step does not call the optimizer (params and state unchanged), update() halves the scale."""
    model, opt, scaler = _amp_setup()
    _amp_train(model, opt, scaler, _batches(2))  # state exists
    before_p = _params(model)
    before_s = copy.deepcopy(opt.state_dict()["state"])
    scale = scaler.get_scale()
    x, y = _batches(1)[0]
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nn.functional.mse_loss(model(x).float(), y)
    scaler.scale(loss).backward()
    next(model.parameters()).grad[0, 0] = float("inf")
    scaler.unscale_(opt)
    scaler.step(opt)  # found inf in the unscaled gradients: does not call opt.step()
    scaler.update()
    assert scaler.get_scale() == scale * 0.5
    assert opt.skipped_steps == 0  # the scaler skipped it, not muonlab's own non-finite gate
    for a, b in zip(_params(model), before_p):
        assert torch.equal(a, b)
    after_s = opt.state_dict()["state"]
    for i, st in before_s.items():
        for k, v in st.items():
            assert torch.equal(after_s[i][k], v), (i, k)


# ---------------------------------------------------------------------------- PyTorch Lightning
def _lightning_module():
    pl = pytest.importorskip("pytorch_lightning")

    class Regressor(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _mlp(torch.float64)
            self.losses: list[torch.Tensor] = []

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = nn.functional.mse_loss(self.net(x), y)
            self.losses.append(loss.detach())
            return loss

        def configure_optimizers(self):
            opt = muonlab.NAMO(muonlab.param_groups(self.net, head=["4"]), lr=0.02, weight_decay=0.1)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.02, total_steps=12, cycle_momentum=False)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return pl, Regressor


def _loader(dtype=torch.float64):
    from torch.utils.data import DataLoader, TensorDataset

    x, y = (torch.cat(t) for t in zip(*_batches(4, dtype)))
    return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=False)  # 4 steps per epoch


def _trainer(pl, epochs: int):
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, deterministic=True)


def test_lightning_checkpoint_resume_equals_uninterrupted(tmp_path):
    """configure_optimizers returns NAMO + a per-step OneCycleLR; 2 epochs, checkpoint, resume for 1 == 3 straight (fp64)."""
    pl, Regressor = _lightning_module()
    straight = Regressor()
    _trainer(pl, 3).fit(straight, _loader())

    first = Regressor()
    trainer = _trainer(pl, 2)
    trainer.fit(first, _loader())
    trainer.save_checkpoint(tmp_path / "ckpt.ckpt")
    resumed = Regressor()
    trainer = _trainer(pl, 3)
    trainer.fit(resumed, _loader(), ckpt_path=tmp_path / "ckpt.ckpt")
    opt = trainer.optimizers[0]
    assert isinstance(opt, muonlab.NAMO) and trainer.global_step == 12
    # Same data, same fp64 ops, state and scheduler restored: bitwise the same trajectory.
    assert len(straight.losses) == 12 and torch.equal(torch.stack(first.losses + resumed.losses), torch.stack(straight.losses))
    for a, b in zip(resumed.parameters(), straight.parameters()):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------- accelerate
def _accelerate_run(tmp_path, epochs: list[int], save_after: int | None = None, load: bool = False):
    """Train ``epochs`` (epoch indices) under Accelerator(cpu=True); save_state after epoch ``save_after``."""
    accelerate = pytest.importorskip("accelerate")
    accelerate.state.AcceleratorState._reset_state(reset_partial_state=True)  # a fresh Accelerator per run
    acc = accelerate.Accelerator(cpu=True)
    model = _mlp(torch.float64)
    opt = muonlab.Muon(muonlab.param_groups(model, head=["4"]), lr=0.02, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1.0 + 0.1 * s))
    model, opt, loader, sched = acc.prepare(model, opt, _loader(), sched)
    if load:
        acc.load_state(str(tmp_path / "state"))
    losses = []
    for epoch in epochs:
        for x, y in loader:
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            acc.backward(loss)
            opt.step()
            sched.step()
            losses.append(loss.detach())
        if epoch == save_after:
            acc.save_state(str(tmp_path / "state"))
    return losses, _params(acc.unwrap_model(model)), acc


def test_accelerate_save_load_state_resume_equals_uninterrupted(tmp_path):
    """Accelerator(cpu=True).prepare(model, Muon, loader, scheduler): save_state after 2 epochs, load_state, 1 more == 3 straight."""
    straight, final, _ = _accelerate_run(tmp_path / "a", [0, 1, 2])
    first, _, _ = _accelerate_run(tmp_path, [0, 1], save_after=1)
    second, resumed, acc = _accelerate_run(tmp_path, [2], load=True)
    assert len(straight) == 12
    assert torch.equal(torch.stack(first + second), torch.stack(straight))  # fp64, fixed order: bitwise
    for a, b in zip(resumed, final):
        assert torch.equal(a, b)
