"""Data for the benchmarks and the curvature study; depends on torch only (numpy for memmaps).

- ``zipf_pcfg``: synthetic PCFG language with a Zipf-exponent imbalance knob (curvature paper §3).
- ``text``: byte-level UTF-8 corpora; the Python stdlib sources as a built-in corpus.
- ``tokens``: nanoGPT ``uint16`` ``train.bin``/``val.bin`` shards via ``numpy.memmap``.
- ``quadratic``: the Section-5 structured matrix quadratic (exact loss, gradient, HVP, Hessian).
- ``windows``: random / fixed next-token windows over any 1-D token stream.

References:
    Wang et al., "Why Muon Outperforms Adam: A Curvature Perspective", arXiv:2606.04662;
    Karpathy, nanoGPT (token shard format).
"""

from .quadratic import StructuredQuadratic, random_orthogonal
from .text import load_text_bytes, stdlib_root, text_splits
from .tokens import TokenShards, check_token_dir, open_shard
from .windows import DataPathError, fixed_windows, random_windows, window_batches
from .zipf_pcfg import ZipfPCFG, ZipfPCFGConfig, imbalance_stats, rank_frequency_slope, zipf_pcfg_splits

__all__ = [
    "DataPathError", "StructuredQuadratic", "TokenShards", "ZipfPCFG", "ZipfPCFGConfig",
    "check_token_dir", "fixed_windows", "imbalance_stats", "load_text_bytes", "open_shard", "random_orthogonal",
    "random_windows", "rank_frequency_slope", "stdlib_root", "text_splits", "window_batches",
    "zipf_pcfg_splits",
]
