"""nanoGPT-style token shards: ``train.bin`` / ``val.bin`` of ``uint16`` ids in one folder.

Files are memory-mapped (``numpy.memmap``), never loaded whole, so multi-gigabyte shards
(OpenWebText, FineWeb) work. Batches are random contiguous windows drawn with an explicit
``torch.Generator`` (see ``muonlab.data.windows``).

References:
    Karpathy, nanoGPT ``data/openwebtext/prepare.py`` (uint16 ``train.bin``/``val.bin``) and
    ``train.py`` ``get_batch`` (np.memmap + random windows).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

from .windows import DataPathError

__all__ = ["SPLITS", "check_token_dir", "open_shard", "TokenShards"]

SPLITS = ("train", "val")


def check_token_dir(path: str | os.PathLike) -> Path:
    """The folder, after checking that ``train.bin`` and ``val.bin`` exist (error names the path)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataPathError(f"token data folder does not exist: {str(root)!r}")
    for split in SPLITS:
        if not (root / f"{split}.bin").is_file():
            raise DataPathError(f"token shard missing: {str(root / f'{split}.bin')!r}")
    return root


def open_shard(path: str | os.PathLike) -> Any:
    """Read-only ``uint16`` memmap of one shard file."""
    import numpy as np

    file = Path(path)
    if not file.is_file():
        raise DataPathError(f"token shard missing: {str(file)!r}")
    if file.stat().st_size < 4 or file.stat().st_size % 2:
        raise ValueError(f"token shard is empty or not uint16: {str(file)!r}")
    return np.memmap(file, dtype=np.uint16, mode="r")


class TokenShards:
    """The ``train``/``val`` memmaps of a nanoGPT token folder.

    Args:
        path: folder holding ``train.bin`` and ``val.bin``.
        vocab_size: model vocabulary; ``None`` = ``meta.pkl``'s ``vocab_size`` when present
            (nanoGPT convention), else ``max id + 1`` over both shards (one pass over the files;
            pass it explicitly for large corpora, e.g. 50304 for GPT-2 BPE).
    """

    def __init__(self, path: str | os.PathLike, vocab_size: int | None = None) -> None:
        self.root = check_token_dir(path)
        self.train = open_shard(self.root / "train.bin")
        self.val = open_shard(self.root / "val.bin")
        if vocab_size is None:
            vocab_size = self._meta_vocab() or self._scan_vocab()
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        self.vocab_size = int(vocab_size)

    def _meta_vocab(self) -> int | None:
        meta = self.root / "meta.pkl"
        if not meta.is_file():
            return None
        with meta.open("rb") as f:
            value = pickle.load(f).get("vocab_size")
        return int(value) if value is not None else None

    def _scan_vocab(self, chunk: int = 1 << 24) -> int:
        top = 0
        for shard in (self.train, self.val):
            for i in range(0, shard.shape[0], chunk):
                top = max(top, int(shard[i : i + chunk].max()))
        return top + 1
