"""Zipf-PCFG: a synthetic language with controllable token-frequency imbalance.

A random probabilistic context-free grammar (binary rules ``A -> B C`` over nonterminals and
preterminals) generates sentence skeletons; every preterminal owns a disjoint lexicon and emits
the token of rank ``k`` with probability ``k^-s / sum_j j^-s``. The exponent ``s`` is the only knob
that controls imbalance: ``s = 0`` gives uniform emissions, ``s = 1`` classic Zipf. The grammar
(rules, rule probabilities, lexicons and their rank orders) depends on the grammar seed only, so
runs at different ``s`` differ *only* in imbalance, and for one sample seed they even share the
same derivation skeletons and the same uniforms (coupled sampling).

Sampling is level-synchronous and vectorized: all open nonterminals of a whole chunk of
sentences are expanded at once, one depth level per iteration, which preserves left-to-right
order. A million tokens take well under a second on a CPU.

References:
    Wang, Zhang, Li, Bergemann, Yang. "Why Muon Outperforms Adam: A Curvature Perspective",
    arXiv:2606.04662 (Zipf-PCFG data with exponent s in {0, 0.5, 1}). The grammar below is our
    reconstruction: the paper's appendix grammar was not available. It keeps the paper's control
    variable (a Zipf exponent on the emissions; s = 0 balanced, s = 1 the most imbalanced setting
    studied), and its defaults (20 classes, 4412 tokens) follow secondary summaries of the paper.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache

import torch

__all__ = ["ZipfPCFGConfig", "ZipfPCFG", "zipf_pcfg_splits", "rank_frequency_slope", "imbalance_stats", "derive_seed"]

N_SPECIAL = 2  # BOS and EOS; a separate SEP token would be redundant with an EOS/BOS pair


def derive_seed(seed: int, tag: str) -> int:
    """A stable 63-bit seed from ``(seed, tag)``; used to keep grammar, train and val streams apart."""
    digest = hashlib.sha256(f"{seed}:{tag}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass(frozen=True)
class ZipfPCFGConfig:
    """Grammar and imbalance settings of our Zipf-PCFG reconstruction.

    Attributes:
        n_nonterminals: nonterminal symbols; symbol 0 is the start symbol.
        n_preterminals: categories that emit tokens, each with its own lexicon.
        vocab_size: total token ids the model sees, including BOS (``vocab_size-2``) and EOS
            (``vocab_size-1``); the other ids are split into the lexicons.
        rules_per_nt: binary rules per nonterminal; children drawn uniformly from all symbols.
        max_depth: derivation depth cap; open nonterminals at this depth are replaced by a fixed
            fallback preterminal (termination).
        exponent: Zipf exponent ``s`` of the within-lexicon emissions.
        rule_exponent: optional structural imbalance: rule ``r`` of each left-hand side is
            reweighted by ``(r+1)^-rule_exponent``; 0 (off) by default: the paper's knob is the emission exponent.
        seed: grammar seed (rules, rule probabilities, lexicon partition and rank order).
    """

    n_nonterminals: int = 20
    n_preterminals: int = 20
    vocab_size: int = 4412
    rules_per_nt: int = 4
    max_depth: int = 8
    exponent: float = 1.0
    rule_exponent: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("n_nonterminals", "n_preterminals", "rules_per_nt", "max_depth"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.vocab_size < self.n_preterminals + N_SPECIAL:
            raise ValueError(
                f"vocab_size must be >= n_preterminals + {N_SPECIAL} = "
                f"{self.n_preterminals + N_SPECIAL}, got {self.vocab_size}"
            )
        for key in ("exponent", "rule_exponent"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{key} must be a finite number >= 0, got {value}")


class ZipfPCFG:
    """A fixed random grammar with Zipf-distributed emissions.

    Args:
        config: grammar settings; keyword arguments override its fields.

    Attributes:
        bos, eos: special token ids.
        lexicons: list of LongTensors, one per preterminal, token ids in rank order (rank 1 first).

    References:
        arXiv:2606.04662 (Zipf-PCFG); the grammar's construction is ours (see the module docstring).
    """

    def __init__(self, config: ZipfPCFGConfig | None = None, **overrides: float) -> None:
        base = config or ZipfPCFGConfig()
        self.config = ZipfPCFGConfig(**{**base.__dict__, **overrides})
        c = self.config
        g = torch.Generator().manual_seed(derive_seed(c.seed, "grammar"))
        n_sym = c.n_nonterminals + c.n_preterminals
        # (N, R, 2) children; ids < N are nonterminals, ids >= N preterminals (id - N).
        self.rules = torch.randint(0, n_sym, (c.n_nonterminals, c.rules_per_nt, 2), generator=g)
        # Dirichlet(1) rule probabilities = normalized Exp(1) draws (no global RNG needed).
        expo = -torch.log1p(-torch.rand(c.n_nonterminals, c.rules_per_nt, generator=g, dtype=torch.float64))
        weights = expo * torch.arange(1, c.rules_per_nt + 1, dtype=torch.float64) ** -c.rule_exponent
        self.rule_probs = weights / weights.sum(-1, keepdim=True)
        self._rule_cdf = self.rule_probs.cumsum(-1)
        self.fallback = torch.randint(0, c.n_preterminals, (c.n_nonterminals,), generator=g)
        n_lex = c.vocab_size - N_SPECIAL
        perm = torch.randperm(n_lex, generator=g)  # random partition *and* random rank order
        self.lexicons = list(torch.tensor_split(perm, c.n_preterminals))
        self._emit_cdf, entropies = [], []
        for lex in self.lexicons:
            p = torch.arange(1, len(lex) + 1, dtype=torch.float64) ** -c.exponent
            p = p / p.sum()
            self._emit_cdf.append(p.cumsum(0))
            entropies.append(float(-(p * p.log()).sum()))
        self.emission_entropy = torch.tensor(entropies, dtype=torch.float64)  # (P,) nats
        self.bos, self.eos = n_lex, n_lex + 1
        self.last_stats: dict[str, float] = {}

    @property
    def vocab_size(self) -> int:
        """Number of token ids (lexicons plus BOS/EOS)."""
        return self.config.vocab_size

    def grammar_fingerprint(self) -> str:
        """Hash of rules, rule probabilities and lexicons; identical across exponents by design."""
        h = hashlib.sha256()
        for t in (self.rules, self.rule_probs, self.fallback, *self.lexicons):
            h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def _skeletons(self, n_sent: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Preterminal sequences of ``n_sent`` sentences, flattened in order, with sentence ids."""
        n_nt = self.config.n_nonterminals
        sym = torch.zeros(n_sent, dtype=torch.long)  # every derivation starts at NT_0
        sid = torch.arange(n_sent)
        capped = 0
        for depth in range(self.config.max_depth + 1):
            is_nt = sym < n_nt
            if not bool(is_nt.any()):
                break
            if depth == self.config.max_depth:
                capped = int(torch.unique(sid[is_nt]).numel())
                sym = torch.where(is_nt, n_nt + self.fallback[sym.clamp(max=n_nt - 1)], sym)
                break
            nt = sym[is_nt]
            u = torch.rand(nt.numel(), 1, generator=g, dtype=torch.float64)
            choice = (u > self._rule_cdf[nt]).sum(-1).clamp(max=self.config.rules_per_nt - 1)
            kids = self.rules[nt, choice]  # (k, 2)
            counts = 1 + is_nt.long()  # a nonterminal becomes two symbols, the rest stay
            starts = counts.cumsum(0) - counts
            new = torch.empty(int(counts.sum()), dtype=torch.long)
            new[starts[~is_nt]] = sym[~is_nt]
            new[starts[is_nt]] = kids[:, 0]
            new[starts[is_nt] + 1] = kids[:, 1]
            sym, sid = new, sid.repeat_interleave(counts)
        return sym - n_nt, sid, capped

    def _emit(self, pre: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Tokens for a preterminal sequence by inverse-CDF sampling inside each lexicon."""
        out = torch.empty_like(pre)
        for c, (lex, cdf) in enumerate(zip(self.lexicons, self._emit_cdf)):
            mask = pre == c
            n = int(mask.sum())
            if n:
                u = torch.rand(n, generator=g, dtype=torch.float64)
                rank = torch.searchsorted(cdf, u, right=True).clamp(max=len(lex) - 1)
                out[mask] = lex[rank]
        return out

    def sample(self, n_tokens: int, seed: int, *, chunk_sentences: int = 32768) -> torch.Tensor:
        """A packed stream ``[BOS] sentence [EOS] [BOS] ...`` of exactly ``n_tokens`` ids.

        Args:
            n_tokens: stream length.
            seed: sample seed (independent of the grammar seed).
            chunk_sentences: sentences generated per vectorized chunk (memory/speed trade-off).

        Returns:
            LongTensor of shape ``(n_tokens,)``; also sets ``last_stats`` (mean sentence length,
            fraction of derivations that hit the depth cap).
        """
        if n_tokens < 1:
            raise ValueError(f"n_tokens must be >= 1, got {n_tokens}")
        g = torch.Generator().manual_seed(derive_seed(seed, "sample"))
        parts, total, n_sent, n_capped, n_lexical = [], 0, 0, 0, 0
        cat_counts = torch.zeros(self.config.n_preterminals, dtype=torch.float64)
        while total < n_tokens:
            # Size each chunk from what is still missing (deterministic: depends on counts only);
            # 8 tokens per sentence is a safe under-estimate, so few chunks are needed.
            n_chunk = min(chunk_sentences, (n_tokens - total) // 8 + 16)
            pre, sid, capped = self._skeletons(n_chunk, g)
            toks = self._emit(pre, g)
            cat_counts += torch.bincount(pre, minlength=self.config.n_preterminals).double()
            lengths = torch.bincount(sid, minlength=n_chunk)
            span = lengths + 2
            offset = span.cumsum(0) - span  # where each sentence's BOS goes
            pos_in = torch.arange(sid.numel()) - (lengths.cumsum(0) - lengths)[sid]
            chunk = torch.empty(int(span.sum()), dtype=torch.long)
            chunk[offset] = self.bos
            chunk[offset + 1 + lengths] = self.eos
            chunk[offset[sid] + 1 + pos_in] = toks
            parts.append(chunk)
            total += chunk.numel()
            n_sent, n_capped, n_lexical = n_sent + n_chunk, n_capped + capped, n_lexical + toks.numel()
        # Even a model that knows every preterminal must pay the emission entropy on lexical tokens:
        # a lower bound on the achievable mean cross-entropy (nats/token) of this stream.
        floor = float((cat_counts * self.emission_entropy).sum()) / total
        self.last_stats = {
            "mean_sentence_length": n_lexical / n_sent,
            "depth_capped_fraction": n_capped / n_sent,
            "emission_entropy_floor": floor,
        }
        return torch.cat(parts)[:n_tokens]


def rank_frequency_slope(tokens: torch.Tensor, lo: int = 1, hi: int | None = None) -> float:
    """Least-squares slope of log-frequency vs log-rank over ranks ``lo..hi`` (1-based, seen tokens).

    A Zipf law with exponent ``s`` gives a slope of about ``-s``.
    """
    counts = torch.bincount(tokens.flatten()).double()
    counts = counts[counts > 0].sort(descending=True).values
    hi = counts.numel() if hi is None else min(hi, counts.numel())
    if hi - lo < 2:
        raise ValueError(f"need at least 3 ranks in [lo, hi], got lo={lo}, hi={hi}")
    x = torch.arange(lo, hi + 1, dtype=torch.float64).log()
    y = counts[lo - 1 : hi].log()
    x = x - x.mean()
    return float((x * (y - y.mean())).sum() / (x * x).sum())


def imbalance_stats(tokens: torch.Tensor, top: float = 0.01) -> dict[str, float]:
    """Imbalance sanity checks: global rank-frequency slope and the mass of the top ``top`` of ids."""
    counts = torch.bincount(tokens.flatten()).double().sort(descending=True).values
    k = max(1, round(top * counts.numel()))
    return {"slope": rank_frequency_slope(tokens), f"top{top:g}_mass": float(counts[:k].sum() / counts.sum())}


@lru_cache(maxsize=8)
def zipf_pcfg_splits(
    n_train: int,
    n_val: int,
    *,
    exponent: float = 1.0,
    vocab_size: int = 4412,
    seed: int = 0,
    val_exponent: float | None = None,
    **config: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and validation token streams from one grammar (cached; do not modify the tensors).

    Args:
        n_train, n_val: stream lengths.
        exponent: training Zipf exponent ``s``.
        vocab_size: total ids including BOS/EOS.
        seed: grammar seed; the train and val sample seeds are derived from it and differ.
        val_exponent: exponent of the validation stream; ``None`` = ``exponent``. The curvature
            study validates at ``s = 0`` (the balanced reference).
        **config: other ``ZipfPCFGConfig`` fields.

    Returns:
        ``(train, val)`` LongTensors.
    """
    train = ZipfPCFG(exponent=exponent, vocab_size=vocab_size, seed=seed, **config).sample(
        n_train, derive_seed(seed, "train")
    )
    s_val = exponent if val_exponent is None else val_exponent
    val = ZipfPCFG(exponent=s_val, vocab_size=vocab_size, seed=seed, **config).sample(
        n_val, derive_seed(seed, "val")
    )
    return train, val
