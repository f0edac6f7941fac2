"""``muonlab bench``: side-by-side optimizer comparisons done honestly.

Same task, same step budget and schedule for every optimizer; an lr sweep for every optimizer (AdamW
included); the best lr rerun with several seeds; mean ± std, steps and time to a target loss; a
``report.md`` with plots. Start with ``python -m muonlab bench demo`` or, from Python::

    from muonlab.bench import load_config, run_experiment
    result = run_experiment(load_config("demo", ["steps=100"], quick=True), out="runs")
    print(result.report_path)

Layout: :mod:`.config` (TOML -> dataclasses, ``--set``, ``--quick``), :mod:`.validate` (checks before
training), :mod:`.schedule`, :mod:`.runner` (one run -> JSONL), :mod:`.callbacks` (per-step hooks,
``UpdateStats``), :mod:`.sweep` (sweep / select / seeds), :mod:`.parallel` (``--nproc``: DDP ranks),
:mod:`.report` and :mod:`.plot`; the workloads live in :mod:`.tasks`.

References:
    AlgoPerf, Dahl et al., "Benchmarking Neural Network Training Algorithms", arXiv 2306.07179.
"""

from muonlab.bench.callbacks import CALLBACKS, Callback, UpdateStats, register_callback
from muonlab.bench.config import ConfigError, ExperimentConfig, load_config, shipped_configs
from muonlab.bench.sweep import ExperimentResult, run_experiment

__all__ = ["CALLBACKS", "Callback", "ConfigError", "ExperimentConfig", "ExperimentResult", "UpdateStats",
           "load_config", "register_callback", "run_experiment", "shipped_configs"]
