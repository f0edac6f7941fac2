"""Failure probes (muonlab.probes): every registered optimizer passes each, and each fails on a broken optimizer.

The broken variants are small subclasses of the real presets, each broken the one way its probe is
meant to catch (a group skipped, lr read once, momentum dropped, decay twice, SGD for AdamW, layout
ignored, state not saved).
"""

from __future__ import annotations

import json
import sys

import pytest
import torch

import muonlab
from muonlab import stages as S
from muonlab.cli import main
from muonlab.probes import PROBES, ProbeResult, run_probes
from muonlab.probes.report import plain_table, print_results

# ---------------------------------------------------------------------------- broken variants


class SkipsLastGroup(muonlab.Muon):
    """Steps every group but the last."""

    def step(self, closure=None):
        groups = self.param_groups
        self.param_groups = groups[:-1]
        try:
            return super().step(closure)
        finally:
            self.param_groups = groups


class _LrSwap(muonlab.Muon):
    """Steps with the lrs in ``self._frozen`` (when set) instead of the groups' current ones."""

    _frozen = None

    def step(self, closure=None):
        if self._frozen is None:
            return super().step(closure)
        live = [g["lr"] for g in self.param_groups]
        for g, lr in zip(self.param_groups, self._frozen):
            g["lr"] = lr
        try:
            return super().step(closure)
        finally:
            for g, lr in zip(self.param_groups, live):
                g["lr"] = lr


class LrReadAtConstruction(_LrSwap):
    """Reads each group's lr once, in the constructor (before a scheduler sets it)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._frozen = [g["lr"] for g in self.param_groups]


class LrReadAtFirstStep(_LrSwap):
    """Reads each group's lr at its first step and never again."""

    def step(self, closure=None):
        if self._frozen is None:
            self._frozen = [g["lr"] for g in self.param_groups]
        return super().step(closure)


def _fixed_beta(stack):
    """Momentum with beta 0.95 whatever the group says."""
    group = stack.group
    stack.group = dict(group, momentum=0.95)
    try:
        S.nesterov(stack)
    finally:
        stack.group = group


class NoMomentumStage(muonlab.Muon):
    chain = tuple(s for s in muonlab.Muon.chain if s is not S.nesterov)


class IgnoresMomentumCoefficient(muonlab.Muon):
    chain = tuple(_fixed_beta if s is S.nesterov else s for s in muonlab.Muon.chain)


def _adam_without_first_moment(stack):
    group = stack.group
    stack.group = dict(group, betas=(0.0, group["betas"][1]))
    try:
        S.adam(stack)
    finally:
        stack.group = group


class AdamWithoutMomentum(muonlab.AdamW):
    adamw_chain = (S.decay_weights, _adam_without_first_moment)


def _square_decay(stack):
    stack.decay = stack.decay * stack.decay


def _undo_decay(stack):
    stack.decay = 1.0


class MuonDecayTwice(muonlab.Muon):
    chain = muonlab.Muon.chain + (_square_decay,)


def _decay_with_adjusted_lr(stack):
    stack.decay = 1 - stack.step_size * stack.group["weight_decay"]  # lr * s(m, n): not the documented lr


class MuonDecayWithAdjustedLr(muonlab.Muon):
    chain = muonlab.Muon.chain + (_decay_with_adjusted_lr,)


class MuonNoDecay(muonlab.Muon):
    chain = tuple(s for s in muonlab.Muon.chain if s is not S.decay_weights)


class NAMODecayTwice(muonlab.NAMO):
    chain = muonlab.NAMO.chain + (_square_decay,)


class NAMONoDecay(muonlab.NAMO):
    chain = muonlab.NAMO.chain + (_undo_decay,)


class AdamWDecayTwice(muonlab.AdamW):
    adamw_chain = (S.decay_weights, _square_decay, S.adam)


class AdamWPartIsSGD(muonlab.Muon):
    adamw_chain = (S.decay_weights,)


class DropsLayout(muonlab.Muon):
    """Forgets a group's ``layout`` when the group is added."""

    def add_param_group(self, param_group):
        super().add_param_group({k: v for k, v in param_group.items() if k != "layout"})


class IgnoresLayout(muonlab.Muon):
    """Keeps ``layout`` in the groups but steps as if every weight were stored ``(out, in)``."""

    def step(self, closure=None):
        saved = [g.pop("layout", None) for g in self.param_groups]
        try:
            return super().step(closure)
        finally:
            for g, layout in zip(self.param_groups, saved):
                if layout is not None:
                    g["layout"] = layout


class StateDictDropsMomentum(muonlab.Muon):
    def state_dict(self):
        sd = super().state_dict()
        sd["state"] = {i: {k: v for k, v in st.items() if k != "momentum"} for i, st in sd["state"].items()}
        return sd


class LoadKeepsNoState(muonlab.NAMO):
    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self.state.clear()


BROKEN = [
    ("groups", SkipsLastGroup, {}, "did not move"),
    ("scheduler", LrReadAtConstruction, {}, "from the start"),
    ("scheduler", LrReadAtFirstStep, {}, "did not reach the group"),
    ("momentum", NoMomentumStage, {}, "momentum is not applied"),
    ("momentum", IgnoresMomentumCoefficient, {}, "momentum coefficient is not what is applied"),
    ("momentum", AdamWithoutMomentum, {}, "momentum is not applied"),
    ("decay", MuonDecayTwice, {"lr": 0.02}, "expected 1 - lr*wd"),
    ("decay", MuonNoDecay, {}, "did not shrink"),
    ("decay", MuonDecayWithAdjustedLr, {}, "expected 1 - lr*wd"),
    ("decay", NAMODecayTwice, {"lr": 0.05}, "not linear in weight_decay"),
    ("decay", NAMONoDecay, {"lr": 0.05}, "did not shrink"),
    ("decay", AdamWDecayTwice, {}, "expected 1 - lr*wd"),
    ("adam", AdamWPartIsSGD, {}, "SGD's is lr*|g|"),
    ("routing", DropsLayout, {}, "layout='out_in'"),
    ("routing", IgnoresLayout, {}, "twin's move transposed"),
    ("resume", StateDictDropsMomentum, {}, "differs from the uninterrupted run"),
    ("resume", LoadKeepsNoState, {"lr": 0.05}, "differs from the uninterrupted run"),
]


# ---------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name,probe", [(i.name, p) for i in muonlab.optimizer_infos() for p in PROBES])
def test_every_registered_optimizer_passes_every_probe(name, probe):
    """Each registered optimizer passes each probe for every one of its sample hyperparameter sets."""
    (result,) = run_probes([name], [probe])
    assert result.passed, result.reason


@pytest.mark.parametrize("probe,cls,kwargs,expected", BROKEN, ids=[f"{p}-{c.__name__}" for p, c, _, _ in BROKEN])
def test_probe_fails_on_its_broken_variant(probe, cls, kwargs, expected):
    """A probe reports a failure, with the expected reason, on an optimizer broken the way it targets."""
    reason = PROBES[probe](cls, kwargs)
    assert reason is not None and expected in reason, reason


def test_routing_probe_fails_on_a_router_that_routes_by_shape(monkeypatch):
    """A router that orthogonalizes every matrix (the tied head included) fails the routing probe."""

    def by_shape(model, **_):
        params = list(model.parameters())
        return [{"params": [p for p in params if p.dim() >= 2]},
                {"params": [p for p in params if p.dim() < 2], "algorithm": "adamw"}]

    monkeypatch.setattr(muonlab.routing, "param_groups", by_shape)
    reason = PROBES["routing"](muonlab.Muon, {})
    assert reason is not None and "tied to the embedding" in reason


def test_run_probes_reports_a_broken_optimizer_and_names_the_sample_set():
    """run_probes accepts OptimizerInfo entries and names the failing sample kwargs in the reason."""
    info = muonlab.OptimizerInfo("broken", MuonDecayTwice, ({"lr": 0.02, "weight_decay": 0.0},))
    results = run_probes([info, "adamw"], ["groups", "decay"])
    assert [(r.optimizer, r.probe, r.passed) for r in results] == [
        ("broken", "groups", True), ("broken", "decay", False), ("adamw", "groups", True), ("adamw", "decay", True)]
    assert results[1].reason.startswith("sample_kwargs[0] {'lr': 0.02, 'weight_decay': 0.0}: ")


def test_unknown_names_raise():
    """Unknown optimizer or probe names raise ValueError naming them."""
    with pytest.raises(ValueError, match="nope"):
        run_probes(["nope"])
    with pytest.raises(ValueError, match="nope"):
        run_probes(["muon"], ["nope"])


def test_probes_leave_the_global_rng_alone():
    """Running the probes does not advance torch's global random generator."""
    before = torch.get_rng_state()
    run_probes(["adamw"], ["routing", "resume"])
    assert torch.equal(torch.get_rng_state(), before)


def test_cli_json_and_exit_status(capsys):
    """`muonlab probes --optimizers adamw --json` prints the results as JSON and exits 0 when all pass."""
    assert main(["probes", "--optimizers", "adamw", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["passed"] and out["optimizers"] == ["adamw"] and out["probes"] == list(PROBES)
    assert len(out["results"]) == len(PROBES) and all(r["passed"] for r in out["results"])


def test_cli_exits_1_on_a_failure_and_2_on_an_unknown_name(monkeypatch, capsys):
    """A failed probe gives exit status 1 with its reason printed; an unknown optimizer gives 2."""
    fake = [ProbeResult("muon", "groups", True), ProbeResult("muon", "decay", False, "shrank twice")]
    monkeypatch.setattr("muonlab.probes.run_probes", lambda names=None: fake)
    assert main(["probes"]) == 1
    out = capsys.readouterr().out
    assert "muon / decay: shrank twice" in out and "1/2 passed" in out
    monkeypatch.undo()
    assert main(["probes", "--optimizers", "nope"]) == 2
    assert "unknown optimizer" in capsys.readouterr().err


def test_plain_table_without_rich(monkeypatch, capsys):
    """Without rich the grid is printed as plain text: passes and failures marked, each failure's reason listed."""
    results = [ProbeResult("muon", "groups", True), ProbeResult("muon", "decay", False, "why")]
    monkeypatch.setitem(sys.modules, "rich.console", None)  # makes `from rich.console import ...` fail
    print_results(results)
    text = capsys.readouterr().out
    assert text.strip() == plain_table(results)
    header, rule, row = text.splitlines()[:3]
    assert header.split() == ["optimizer", "groups", "decay"] and set(rule) <= {"-", " "}
    assert row.split() == ["muon", "✓", "✗"] and "muon / decay: why" in text
