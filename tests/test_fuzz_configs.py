"""Configuration fuzzing (issue 10): random hyperparameters for every registered optimizer.

Property: constructing an optimizer (or adding a param group) with random hyperparameters either
succeeds, and then a few steps on a small problem leave every parameter and state tensor finite,
or raises ``ValueError`` whose message names the argument (the keyword, or the group key it maps
to). Any other exception, or a NaN/Inf after an accepted configuration, is a bug.

The keyword arguments and their defaults are read from each class's ``__init__`` signature, so a
new optimizer or argument is fuzzed without touching this file. Values mix valid ones (around the
defaults and the documented choices), boundary values, wrong types and unknown strings.

The examples are derandomized (the same on every run, so CI does not flake); for a deeper,
random search set ``MUONLAB_FUZZ_EXAMPLES``, e.g. ``MUONLAB_FUZZ_EXAMPLES=2000 pytest tests/test_fuzz_configs.py``.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import re
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import muonlab
from tests.helpers import step
from muonlab import orth
from muonlab.optim.shell import ALGORITHMS, NONFINITE
from muonlab.optim.validate import LAYOUTS
from muonlab.stages import ADJUST_LR
from muonlab.stages import namo as namo_stages
from muonlab.stages import normuon as normuon_stages
from muonlab.stages import trasmuon as trasmuon_stages

INFOS = {info.name: info for info in muonlab.optimizer_infos()}
_DEEP = os.environ.get("MUONLAB_FUZZ_EXAMPLES")


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=int(_DEEP) if _DEEP else examples,
        deadline=None,
        derandomize=not _DEEP,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# ---------------------------------------------------------------------------- the arguments
def keyword_arguments(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword arguments of ``cls`` (following ``**kwargs`` up the MRO), minus params and process_group."""
    out: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        forwards = False
        for name, p in inspect.signature(vars(klass)["__init__"]).parameters.items():
            if p.kind is p.VAR_KEYWORD:
                forwards = True
            elif name not in ("self", "params", "process_group") and p.kind is not p.VAR_POSITIONAL:
                out.setdefault(name, p)
        if not forwards:
            break
    return out


def kind_of(annotation: Any, default: Any) -> str:
    """``"float"``, ``"int"``, ``"bool"``, ``"pair"`` or ``"choice"`` (strings, dtypes, callables)."""
    text = str(annotation)
    if "tuple" in text or isinstance(default, tuple):
        return "pair"
    if re.search(r"\bbool\b", text) or isinstance(default, bool):
        return "bool"
    if re.search(r"\bfloat\b", text) or isinstance(default, float):
        return "float"
    if re.search(r"\bint\b", text) or isinstance(default, int):
        return "int"
    return "choice"


def _unit_orth(X: torch.Tensor) -> torch.Tensor:
    """A user orthogonalizer taking only ``X`` (the registry wraps it)."""
    return orth.svd_polar(X)


#: documented values of the enum-like arguments (an unknown name falls back to its default)
CHOICES: dict[str, list[Any]] = {
    "variant": sorted(set(namo_stages.VARIANTS) | set(normuon_stages.VARIANTS)),
    "adjust_lr": list(ADJUST_LR),
    "momentum_form": ["ema", "sum"],
    "ns_dtype": ["auto", "bfloat16", "float16", "float32", "float64", torch.float32, torch.bfloat16],
    "orthogonalizer": [*orth.available(), _unit_orth],
    "nonfinite": list(NONFINITE),
    "conv_shape": list(namo_stages.CONV_SHAPES),
    "col_gate_use": list(trasmuon_stages.ENERGY_SOURCES),
    "layout": list(LAYOUTS),
    "algorithm": list(ALGORITHMS),
}

NAN, INF = math.nan, math.inf
#: values of the wrong type for any argument
WRONG_TYPES = st.sampled_from([
    None, "0.1", "True", "", [], [0.5], (), {"a": 1}, 1 + 2j, b"x", object(), torch.tensor([0.1, 0.2]),
    torch.tensor(NAN), torch.tensor(0.5), torch.tensor(True),
])
BOUNDARY_FLOATS = st.sampled_from([
    0.0, -0.0, 1.0, -1.0, NAN, INF, -INF, 1e30, 1e300, 1e-30, 5e-324, 1 - 1e-16, 0.9999999, 1e10, 1e11,
    1.7976931348623157e308, 2, 0, 10**30, True, False,
])
BOUNDARY_INTS = st.sampled_from([-1, 0, 1, 2, 100, 101, 10**9, 2**63, 10**30, 5.0, 2.5, NAN, INF, "5", True, False])
UNKNOWN_STRINGS = st.sampled_from(["", "bogus", "OFFICIAL", "Ema", "auto ", "none-", "svd2", "float8", "int8"])
WRONG_DTYPES = st.sampled_from([torch.int64, torch.bool, torch.complex64, torch.uint8, torch.float8_e4m3fn])


def near(default: Any) -> st.SearchStrategy:
    """Valid-looking floats around ``default`` (a log-uniform factor of 1/10 .. 10, or [0, 1) for 0)."""
    if not isinstance(default, (int, float)) or isinstance(default, bool) or default == 0:
        return st.floats(0.0, 0.999)
    return st.floats(-1.0, 1.0).map(lambda e: default * 10.0**e)


def values(name: str, kind: str, default: Any) -> st.SearchStrategy:
    """Everything worth trying for one argument."""
    if kind == "float":
        return st.one_of(st.just(default), near(default), BOUNDARY_FLOATS, WRONG_TYPES)
    if kind == "int":
        return st.one_of(st.just(default), st.integers(0, 8), BOUNDARY_INTS, WRONG_TYPES)
    if kind == "bool":
        return st.one_of(st.just(default), st.booleans(), st.sampled_from([0, 1, 1.0, "True", "false"]), WRONG_TYPES)
    if kind == "pair":
        unit = st.floats(0.0, 0.999)
        return st.one_of(
            st.just(default), st.tuples(unit, unit), st.lists(unit, min_size=2, max_size=2),
            st.tuples(BOUNDARY_FLOATS, BOUNDARY_FLOATS), st.tuples(unit, WRONG_TYPES),
            st.sampled_from([(0.9,), (0.9, 0.95, 0.99), "ab", 0.9, (True, False), ("0.9", "0.95"), {0.9, 0.95}]),
            WRONG_TYPES,
        )
    options = CHOICES.get(name, [default])
    return st.one_of(
        st.just(default), st.sampled_from(options), UNKNOWN_STRINGS, WRONG_DTYPES,
        st.sampled_from([0, 1, 0.5, NAN, True, False]), WRONG_TYPES,
    )


@functools.cache
def argument_values(cls: type) -> dict[str, st.SearchStrategy]:
    """keyword -> strategy, for every keyword argument of ``cls``."""
    return {
        name: values(name, kind_of(p.annotation, p.default), p.default)
        for name, p in keyword_arguments(cls).items()
    }


@functools.cache
def group_values(cls: type) -> tuple[dict[str, st.SearchStrategy], dict[str, st.SearchStrategy]]:
    """(orthogonal group key -> strategy, AdamW group key -> strategy) for ``cls``'s groups."""
    kwargs = keyword_arguments(cls)
    probe = cls([{"params": [torch.zeros(2, 2, requires_grad=True)]}])
    orth_keys: dict[str, st.SearchStrategy] = {}
    if cls.default_algorithm == "orthogonal":
        for key, default in probe.defaults.items():
            p = kwargs.get(key)
            orth_keys[key] = values(key, kind_of(p.annotation if p else None, default), default)
        orth_keys["layout"] = values("layout", "choice", "out_in")
        orth_keys["algorithm"] = values("algorithm", "choice", "orthogonal")
    adamw_keys = {}
    for key, default in probe._adamw_defaults.items():
        p = kwargs.get(key if cls.default_algorithm == "adamw" else f"adamw_{key}")
        adamw_keys[key] = values(key, kind_of(p.annotation if p else None, default), default)
    return orth_keys, adamw_keys


# ---------------------------------------------------------------------------- former gaps
# Three holes the fuzzing found outside the validators (now closed): each keeps a regression test.
GAP_BETAS = (
    "presets.adamw_defaults calls tuple(betas) before any check: a non-iterable betas / adamw_betas raises "
    "TypeError, a set is silently ordered, and the message shows the converted value "
    "([] as (), '0.1' as ('0', '.', '1'))"
)
GAP_ADAMW_DECAY = (
    "ChainOptimizer.validate_group does not check lr * weight_decay <= 1 for AdamW groups "
    "(validate.decoupled_decay exists; the shell does not call it)"
)

GAP_EPS_ZERO = (
    "eps=0 with a zero gradient (an unused layer, a zero row) gives 0/0 = NaN in every AdamW part and in NorMuon, "
    "AdaMuon and TrasMuon: their stages divide by sqrt(v) + eps without the 0/0 guard of NAMO and AdaGO "
    "(stages.namo.ratio), and ChainOptimizer.validate_group accepts eps=0 for AdamW groups (and an eps "
    "below 1e-45, 0 in fp32)"
)
#: presets whose orthogonal stages divided by ``sqrt(v) + eps`` unguarded (GAP_EPS_ZERO; now guarded)
UNGUARDED_EPS = ("normuon", "adamuon", "trasmuon")


def _fp32(x: Any) -> float:
    return float(torch.tensor(float(x), dtype=torch.float32))


def accepted_gap(opt: torch.optim.Optimizer) -> bool:
    """GAP_ADAMW_DECAY or GAP_EPS_ZERO: an accepted group that one of them lets through."""
    for g in opt.param_groups:
        if g["algorithm"] == "adamw" and float(g["lr"]) * float(g["weight_decay"]) > 1:
            return True
        if g["algorithm"] == "adamw" and _fp32(g["eps"]) == 0:  # 5e-324 too; the presets guard their 0 / 0
            return True
    return False


@pytest.mark.parametrize("value", [None, 0.9, {0.9, 0.95}, "0.1"], ids=["None", "float", "set", "str"])
def test_known_gap_betas_not_a_sequence_is_named(value):
    """betas that are not a sequence (None, a float, an unordered set, a string) raise ValueError showing them."""
    with pytest.raises(ValueError, match=re.escape(f"betas={value!r}")):
        muonlab.AdamW([torch.zeros(3, requires_grad=True)], betas=value)


def test_known_gap_adamw_group_negative_decay_factor_rejected():
    """An AdamW group with lr * weight_decay > 1 (a negative decay factor) raises ValueError naming both."""
    with pytest.raises(ValueError, match="weight_decay"):
        muonlab.Muon([{"params": [torch.zeros(3, 3, requires_grad=True)]}], adamw_lr=10.0, adamw_weight_decay=1.0)


@pytest.mark.parametrize("name", ["adamw", *UNGUARDED_EPS])
def test_known_gap_eps_zero_with_zero_gradient_stays_finite(name):
    """eps=0 is rejected, or a first step with an all-zero gradient leaves the parameters finite."""
    P = problem()
    try:
        opt = INFOS[name].cls(plain_groups(P), eps=0.0, **({} if name == "adamw" else {"adamw_eps": 0.0}))
    except ValueError:
        return
    for p in P.values():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert all(torch.isfinite(p).all() for p in P.values())


# ---------------------------------------------------------------------------- the property
def problem() -> dict[str, torch.Tensor]:
    """A 2-D weight, a conv weight, a 3-D stack (for batch_3d) and a bias."""
    shapes = {"W": (6, 4), "C": (4, 2, 3, 3), "E": (2, 3, 5), "b": (5,)}
    return {k: torch.randn(*s).requires_grad_() for k, s in shapes.items()}


def plain_groups(P: dict[str, torch.Tensor], orth_over=None, adamw_over=None) -> list[dict[str, Any]]:
    return [
        {"params": [P["W"], P["C"], P["E"]], **(orth_over or {})},
        {"params": [P["b"]], "algorithm": "adamw", **(adamw_over or {})},
    ]


def names_argument(message: str, names: set[str]) -> bool:
    """Whether ``message`` mentions one of ``names`` as a whole word (``lr`` does not match ``adamw_lr``)."""
    return any(re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", message) for n in names)


def aliases(key: str) -> set[str]:
    """A keyword and the group key it maps to (``adamw_lr`` -> ``lr``)."""
    return {key, key.removeprefix("adamw_")}


def gradients(P: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """Three steps: all zero (an unused layer), random, random with zero columns and a zero first row."""
    g = torch.Generator().manual_seed(1)
    zero = {k: torch.zeros(p.shape) for k, p in P.items()}
    steps = [zero, {k: torch.randn(p.shape, generator=g) for k, p in P.items()}]
    sparse = {k: torch.randn(p.shape, generator=g) for k, p in P.items()}
    for G in sparse.values():
        G.view(G.shape[0], -1)[..., ::2] = 0
        G[0] = 0
    return [*steps, sparse]


def steps_stay_finite(opt: torch.optim.Optimizer, P: dict[str, torch.Tensor]) -> None:
    for grads in gradients(P):
        for k, p in P.items():
            p.grad = grads[k]
        step(opt)
    for name, p in P.items():
        assert torch.isfinite(p).all(), f"parameter {name} is not finite"
    for p, state in opt.state.items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                assert torch.isfinite(value).all(), f"state {key!r} of a {tuple(p.shape)} parameter is not finite"


def construct_or_reject(build, names: set[str], P: dict[str, torch.Tensor], value: Any = None) -> None:
    """``build()`` either returns an optimizer that steps finitely or raises ValueError naming one of ``names``.

    With ``value`` (a single fuzzed argument) the message must show the value too.
    """
    try:
        opt = build()
    except ValueError as err:
        message = str(err)
        assert names_argument(message, names), f"ValueError does not name any of {sorted(names)}: {message}"
        if value is not None:
            assert repr(value)[:4] in message, f"ValueError does not show the value {value!r}: {message}"
        return
    assert not accepted_gap(opt)  # the former gaps stay closed
    steps_stay_finite(opt, P)


OPTIMIZERS = pytest.mark.parametrize("name", list(INFOS))


@OPTIMIZERS
@fuzz_settings(25)
@given(data=st.data())
def test_one_random_keyword_steps_finite_or_is_named(name, data):
    """One random keyword (the others default) is accepted and steps finitely, or a ValueError names it."""
    cls = INFOS[name].cls
    strategies = argument_values(cls)
    key = data.draw(st.sampled_from(sorted(strategies)), label="key")
    value = data.draw(strategies[key], label="value")
    P = problem()
    construct_or_reject(lambda: cls(plain_groups(P), **{key: value}), aliases(key), P, value)


@OPTIMIZERS
@fuzz_settings(25)
@given(data=st.data())
def test_random_keyword_dicts_step_finite_or_are_named(name, data):
    """A random dict of keywords (on top of a sample config) steps finitely, or a ValueError names one of them."""
    info = INFOS[name]
    strategies = argument_values(info.cls)
    base = data.draw(st.sampled_from(info.sample_kwargs), label="sample")
    keys = data.draw(st.lists(st.sampled_from(sorted(strategies)), min_size=1, max_size=6, unique=True), label="keys")
    kwargs = dict(base, **{k: data.draw(strategies[k], label=k) for k in keys})
    P = problem()
    construct_or_reject(lambda: info.cls(plain_groups(P), **kwargs), set().union(*map(aliases, keys)), P)


@OPTIMIZERS
@fuzz_settings(25)
@given(data=st.data())
def test_random_group_overrides_step_finite_or_are_named(name, data):
    """Random values inside the param-group dicts (constructor groups) step finitely, or a ValueError names the key."""
    cls = INFOS[name].cls
    orth_keys, adamw_keys = group_values(cls)

    def draw(strategies: dict[str, st.SearchStrategy], label: str) -> dict[str, Any]:
        keys = data.draw(st.lists(st.sampled_from(sorted(strategies)), max_size=3, unique=True), label=label) \
            if strategies else []
        return {k: data.draw(strategies[k], label=f"{label}.{k}") for k in keys}

    orth_over, adamw_over = draw(orth_keys, "orthogonal"), draw(adamw_keys, "adamw")
    P = problem()
    names = set(orth_over) | set(adamw_over)
    construct_or_reject(lambda: cls(plain_groups(P, orth_over, adamw_over)), names, P)


@OPTIMIZERS
@fuzz_settings(25)
@given(data=st.data())
def test_add_param_group_random_value_steps_finite_or_is_named_and_changes_nothing(name, data):
    """add_param_group with one random value steps finitely, or raises ValueError naming it and keeps the groups."""
    cls = INFOS[name].cls
    orth_keys, adamw_keys = group_values(cls)
    adamw = cls.default_algorithm == "adamw" or data.draw(st.booleans(), label="adamw group")
    strategies = adamw_keys if adamw else orth_keys
    key = data.draw(st.sampled_from(sorted(strategies)), label="key")
    value = data.draw(strategies[key], label="value")
    P = problem()
    extra = (torch.randn(3) if adamw else torch.randn(3, 7)).requires_grad_()
    opt = cls(plain_groups(P))
    before = [dict(g) for g in opt.param_groups]
    group = {"params": [extra], key: value, **({"algorithm": "adamw"} if adamw and key != "algorithm" else {})}
    try:
        opt.add_param_group(group)
    except ValueError as err:
        assert names_argument(str(err), {key}), f"ValueError does not name {key!r}: {err}"
        assert repr(value)[:4] in str(err), f"ValueError does not show the value {value!r}: {err}"
        assert [dict(g) for g in opt.param_groups] == before, "a rejected group changed the optimizer"
        return
    assert not accepted_gap(opt)  # the former gaps stay closed
    steps_stay_finite(opt, dict(P, extra=extra))


# ---------------------------------------------------------------------------- regressions
#: (optimizer, keyword, value) that the fuzzing found accepted in silence or failing with another
#: exception type (what happened before the fix in the comment); each is now a ValueError at
#: construction naming the argument and the value.
FOUND = [
    ("muon", "lr", "0.1"),  # a string: float("0.1") accepted it, and the step converted it again
    ("trasmuon", "energy_k", "0.1"),  # a string: TypeError in the gate comparison at the first step
    ("muon", "weight_decay", True),  # a bool: accepted as 1.0
    ("muon", "lr", torch.tensor(True)),  # a bool tensor: accepted as 1.0
    ("adamw", "eps", 10**30),  # an int beyond fp32: OverflowError at the first step
    ("adamw", "lr", 1e30),  # finite, accepted: every parameter Inf/NaN within 3 steps
    ("trasmuon", "lr", 1e30),  # lr^2 of the gate average overflows: NaN in params and trasmuon.sf_* state
    ("muon", "adamw_weight_decay", 1e300),  # Inf once in fp32: the bias becomes non-finite
    ("adago", "v0", 1.7976931348623157e308),  # v0**2: OverflowError at the first step
    ("adamw", "betas", (1 - 1e-16, 1 - 1e-16)),  # 1.0 in fp32: bias correction 1 - beta^t = 0, Inf
    ("muon", "ns_dtype", torch.int64),  # accepted; ValueError from the kernel at the first step
    ("namo", "ns_dtype", torch.float8_e4m3fn),  # accepted; RuntimeError at the first step
    ("namo", "ns_dtype", {"a": 1}),  # TypeError (unhashable) at construction
    ("muon", "ns_steps", 10**9),  # accepted; the first step runs for hours
    ("trasmuon", "warmup_steps", 10**30),  # accepted; OverflowError against the fp32 step counters
]


@pytest.mark.parametrize("name,key,value", FOUND, ids=[f"{n}-{k}" for n, k, _ in FOUND])
def test_found_configurations_rejected_at_construction(name, key, value):
    """Each configuration the fuzzing caught raises ValueError at construction, naming the argument and value."""
    with pytest.raises(ValueError) as err:
        INFOS[name].cls(plain_groups(problem()), **{key: value})
    assert names_argument(str(err.value), aliases(key)) and repr(value)[:4] in str(err.value)


def test_negative_decay_factor_rejected():
    """lr * weight_decay > 1 is rejected for every orthogonal preset (NAMO official: weight_decay > 1), naming both.

    With only the magnitude cap, Muon(lr=1e10, weight_decay=1e10) was accepted and overflowed within 3 steps.
    """
    for info in INFOS.values():
        if info.cls.default_algorithm != "orthogonal" or info.name in ("namo", "namo-d"):
            continue
        with pytest.raises(ValueError, match=r"lr=2\.0, weight_decay=1\.0"):
            info.cls(plain_groups(problem()), lr=2.0, weight_decay=1.0)
    with pytest.raises(ValueError, match=r"lr=2\.0, weight_decay=1\.0"):
        muonlab.NAMO(plain_groups(problem()), variant="paper", lr=2.0, weight_decay=1.0)
    with pytest.raises(ValueError, match=r"weight_decay=1\.5"):  # decay 1 - wd min(alpha, 1), any alpha
        muonlab.NAMO(plain_groups(problem()), weight_decay=1.5)
    muonlab.NAMOD(plain_groups(problem()), weight_decay=1.5)  # NAMO-D floors its decay factor at 0
