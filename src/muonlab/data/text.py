"""Byte-level text corpora: any UTF-8 file or folder, or the running Python's standard library.

Tokens are raw UTF-8 bytes (vocabulary 256), so no tokenizer and no download is needed. Folders
are walked recursively in sorted order, so the corpus is deterministic for a given tree. The
built-in corpus is the ``*.py`` sources of ``sysconfig.get_paths()["stdlib"]`` (skipping
``site-packages``/``dist-packages`` so installed packages never leak in), capped at ``max_bytes``.

The train/val split is blockwise: the byte stream is cut into blocks of ``split_block`` bytes and
every ``round(1/val_fraction)``-th block goes to validation, so both splits sample the whole corpus
(a tail split would validate on the alphabetically last files only).

References:
    Karpathy, nanoGPT ``data/shakespeare_char`` (character/byte-level LM data, 90/10 split).
"""

from __future__ import annotations

import os
import sysconfig
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import torch

from .windows import DataPathError

__all__ = ["VOCAB_SIZE", "stdlib_root", "iter_text_files", "load_text_bytes", "text_splits"]

VOCAB_SIZE = 256
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", ".git"}


def stdlib_root() -> Path:
    """Directory of the running interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def iter_text_files(root: Path, pattern: str = "*") -> Iterator[Path]:
    """Files under ``root`` matching ``pattern``, depth-first with sorted entries (deterministic)."""
    if root.is_file():
        yield root
        return
    entries = sorted(os.scandir(root), key=lambda e: e.name)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if entry.name not in _SKIP_DIRS and not entry.name.startswith("."):
                yield from iter_text_files(Path(entry.path), pattern)
        elif entry.is_file() and Path(entry.name).match(pattern):
            yield Path(entry.path)


def load_text_bytes(
    path: str | os.PathLike | None = None, *, pattern: str | None = None, max_bytes: int = 4_000_000
) -> torch.Tensor:
    """Concatenated UTF-8 bytes of a file, a folder, or (``path=None``) the stdlib sources.

    Args:
        path: a UTF-8 text file or a folder; ``None`` = the standard-library corpus.
        pattern: file-name glob inside folders; default ``"*.py"`` for the stdlib, ``"*"`` otherwise.
        max_bytes: cap on the corpus size; reading stops once it is reached.

    Returns:
        LongTensor of byte values in ``[0, 256)``.

    Raises:
        DataPathError: ``path`` does not exist (the message names it).
        ValueError: an explicit file is not UTF-8, or nothing readable was found.
    """
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
    root = stdlib_root() if path is None else Path(path).expanduser()
    if not root.exists():
        raise DataPathError(f"text data path does not exist: {str(root)!r}")
    pattern = pattern or ("*.py" if path is None else "*")
    chunks, total = [], 0
    for file in iter_text_files(root, pattern):
        data = file.read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            if root.is_file():
                raise ValueError(f"text file is not valid UTF-8: {str(file)!r}") from None
            continue  # folders may hold binaries; skip them rather than fail
        chunks.append(data[: max_bytes - total])
        total += len(chunks[-1])
        if total >= max_bytes:
            break
    if total == 0:
        raise ValueError(f"no UTF-8 text matching {pattern!r} found under {str(root)!r}")
    return torch.frombuffer(bytearray(b"".join(chunks)), dtype=torch.uint8).long()


@lru_cache(maxsize=4)
def text_splits(
    path: str | None = None,
    *,
    pattern: str | None = None,
    max_bytes: int = 4_000_000,
    val_fraction: float = 0.1,
    split_block: int = 8192,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic blockwise train/val split of ``load_text_bytes(path)`` (cached; read-only).

    Args:
        path, pattern, max_bytes: as in ``load_text_bytes``.
        val_fraction: share of blocks held out, in ``(0, 0.5]``.
        split_block: block size in bytes.

    Returns:
        ``(train, val)`` LongTensors of byte ids.
    """
    if not 0 < val_fraction <= 0.5:
        raise ValueError(f"val_fraction must be in (0, 0.5], got {val_fraction}")
    if split_block < 1:
        raise ValueError(f"split_block must be >= 1, got {split_block}")
    data = load_text_bytes(path, pattern=pattern, max_bytes=max_bytes)
    every = max(2, round(1 / val_fraction))
    n_blocks = -(-data.numel() // split_block)
    if n_blocks < every:  # tiny corpus: fall back to a tail split at block granularity of 1 byte
        cut = max(1, int(data.numel() * (1 - val_fraction)))
        return data[:cut], data[cut:]
    block_id = torch.arange(data.numel()) // split_block
    is_val = block_id % every == every - 1
    return data[~is_val], data[is_val]
