"""What produced a run: the code version and the environment, and the cache key built from them.

A finished run record is reused by a later invocation only when its **cache key** equals the key the
current process would write for the same run. The key holds everything that changes a result:

* ``config``: the resolved run specification (task, optimizer, hyperparameters, lr, seed, budget,
  schedule, callbacks, device as configured, world size);
* ``muonlab``: the package version (``muonlab.__version__``);
* ``git_commit`` and ``git_dirty``: the commit of the checkout the package was imported from, and
  whether its package folder has uncommitted changes (``None`` for both outside a git checkout, e.g.
  an installed wheel);
* ``source_hash``: a SHA-256 over the package's own source files (``*.py`` and the shipped
  ``*.toml``), so that two different uncommitted edits, or two wheels with one version number, never
  share a cache entry;
* ``torch``: ``torch.__version__``;
* ``device``: the device the run trains on once ``"auto"`` is resolved (with the GPU's name on CUDA);
* ``ns_dtype``: the Newton–Schulz compute dtype once ``"auto"`` is resolved on that device
  (bf16 on native-bf16 hardware, else fp32), since the same config gives different numbers in each.

The key is written into the run's ``config`` row (``cache_key``), next to ``date``; a reused run's
report line is built from that row (:func:`describe`), so it states when and with which code the run
was made. :func:`code_version` is the single provider of the code fields (tests monkeypatch it).

References:
    Git, ``git rev-parse`` and ``git status --porcelain``, https://git-scm.com/docs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/muonlab (or site-packages/muonlab)
SOURCE_SUFFIXES = (".py", ".toml")


def _git(*args: str) -> str | None:
    """Output of ``git args...`` run in the package folder, or ``None`` when git fails."""
    try:
        proc = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=PACKAGE_DIR)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def source_hash(root: Path = PACKAGE_DIR) -> str:
    """SHA-256 (first 16 hex digits) of the package's source files, by relative path and content."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix in SOURCE_SUFFIXES and p.is_file()):
        if "__pycache__" in path.parts:
            continue
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """``{"muonlab", "git_commit", "git_dirty", "source_hash"}`` of the code running in this process.

    The git fields are ``None`` unless the package is imported from a git checkout in which its own
    ``__init__.py`` is tracked (a wheel installed into a virtualenv that happens to sit inside a
    checkout must not claim that checkout's commit).
    """
    import muonlab

    commit = dirty = None
    if _git("ls-files", "--error-unmatch", "__init__.py"):
        head = _git("rev-parse", "HEAD")
        status = _git("status", "--porcelain", "--untracked-files=normal", "--", ".")
        if head is not None and status is not None:
            commit, dirty = head.strip(), bool(status.strip())
    return {"muonlab": muonlab.__version__, "git_commit": commit, "git_dirty": dirty,
            "source_hash": source_hash()}


def device_label(device: torch.device) -> str:
    """``"cpu"``, or ``"cuda:0 (NVIDIA H200)"``: the device a run trains on, GPU model included."""
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


def _takes_ns_dtype(optimizer: str) -> bool:
    """Whether the registered optimizer has an ``ns_dtype`` argument (unknown names: assume it does)."""
    import muonlab
    from muonlab.bench.validate import keyword_names

    cls = muonlab.optimizers().get(optimizer)
    return cls is None or "ns_dtype" in keyword_names(cls)


def resolved_ns_dtype(optimizer: str, hparams: dict[str, Any], device: torch.device) -> str:
    """The Newton–Schulz dtype a run computes in (``"auto"`` resolved on ``device``), as a name;
    ``"n/a"`` for an optimizer without Newton–Schulz (AdamW)."""
    from muonlab.stages.orthogonalize import as_dtype

    if "ns_dtype" not in hparams and not _takes_ns_dtype(optimizer):
        return "n/a"
    value = hparams.get("ns_dtype", "auto")
    try:
        return str(as_dtype(value, device)).removeprefix("torch.")
    except (TypeError, ValueError):
        return str(value)  # the constructor rejects it anyway; the key only has to be deterministic


def cache_key(spec: Any, device: torch.device) -> dict[str, Any]:
    """The cache key of a run (a :class:`muonlab.bench.runner.RunSpec`) trained on ``device``.

    JSON-normalized (tuples become lists), so that it compares equal to the key read back from a
    run file.
    """
    key = {"config": asdict(spec), **code_version(), "torch": torch.__version__,
           "device": device_label(device), "ns_dtype": resolved_ns_dtype(spec.optimizer, spec.hparams, device)}
    return json.loads(json.dumps(key, sort_keys=True, default=str))


def short_commit(commit: str | None, dirty: bool | None) -> str:
    """``"1a2b3c4"``, ``"1a2b3c4+dirty"`` or ``"no git checkout"``."""
    if not commit:
        return "no git checkout"
    return commit[:7] + ("+dirty" if dirty else "")


def describe(header: dict[str, Any]) -> str:
    """Where a run record came from, from its ``config`` row: date, commit, muonlab and torch versions."""
    key = header.get("cache_key") or {}
    return (f"run {header.get('date', '?')} at {short_commit(key.get('git_commit'), key.get('git_dirty'))}, "
            f"muonlab {key.get('muonlab', '?')}, torch {key.get('torch', '?')}, {key.get('device', '?')}")
