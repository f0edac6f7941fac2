"""Coefficient schedules for odd quintic iterations, with provenance.

Each schedule is a tuple of ``(a, b, c)`` triples; step ``t`` applies
``sigma -> a*sigma + b*sigma**3 + c*sigma**5`` to every singular value. Steps
beyond the end of a schedule reuse its last entry. ``DEFAULT_PRESCALE`` holds the
safety factor ``s`` each schedule was designed for: the input is normalised as
``X / (s * ||X||_F + eps)`` so that ``sigma_max <= 1/s`` before the first step.

References:
    Keller Jordan, "Muon: An optimizer for hidden layers in neural networks" (2024),
        https://github.com/KellerJordan/Muon (``muon.py``).
    Jiacheng You, per-step NS coefficients (X post, 2025), as shipped by
        microsoft/dion and Dao-AILab/gram-newton-schulz (``YOU_COEFFICIENTS``).
    Amsel, Persson, Musco, Gower, "The Polar Express: Optimal Matrix Sign Methods
        and Their Application to the Muon Algorithm", arXiv 2505.16932;
        https://github.com/NoahAmsel/PolarExpress (``polar_express/basic.py``).
    microsoft/dion ``dion/polar_express.py`` (5-step list, same as modded-nanogpt).
"""

from __future__ import annotations

Triple = tuple[float, float, float]

# Jordan quintic (KellerJordan/Muon muon.py; also Moonlight, torch.optim.Muon).
# Chosen to maximise p'(0); converges to a band ~[0.68, 1.13], not to 1 (KellerJordan/Muon).
JORDAN: tuple[Triple, ...] = ((3.4445, -4.7750, 2.0315),)

# Jiacheng You's 5-step schedule (X post by Jiacheng You; Dion's Muon default, Gram-NS YOU_COEFFICIENTS).
YOU: tuple[Triple, ...] = (
    (4.0848, -6.8946, 2.9270),
    (3.9505, -6.3029, 2.6377),
    (3.7418, -5.5913, 2.3037),
    (2.8769, -3.1427, 1.2046),
    (2.8366, -3.0525, 1.2012),
)

# Classical cubic Newton-Schulz p(x) = 1.5x - 0.5x^3 (Higham, "Functions of Matrices", 2008).
# Converges to exactly 1 for sigma in (0, sqrt(3)) but slowly for small sigma.
CUBIC: tuple[Triple, ...] = ((1.5, -0.5, 0.0),)

# Polar Express paper list, RAW (no safety), l0 = 1e-3, 8 entries
# (arXiv 2505.16932; NoahAmsel/PolarExpress polar_express/basic.py).
POLAR_EXPRESS_RAW: tuple[Triple, ...] = (
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
)


def apply_safety(coeffs: tuple[Triple, ...], safety: float, last: bool = False) -> tuple[Triple, ...]:
    """Replace p(x) by p(x / safety) on every entry (the last one only if ``last``).

    Dividing the argument by ``safety`` widens the interval on which each polynomial
    maps into the basin of the next one, which absorbs bf16 round-off (arXiv 2505.16932 §4).

    Args:
        coeffs: sequence of ``(a, b, c)`` triples.
        safety: factor ``s >= 1``; ``(a, b, c) -> (a/s, b/s**3, c/s**5)``.
        last: also rescale the final entry (the paper list keeps it unchanged).

    Returns:
        The rescaled schedule as a tuple of triples.
    """
    if safety <= 0:
        raise ValueError(f"safety must be > 0, got {safety!r}")
    out = []
    for i, (a, b, c) in enumerate(coeffs):
        if i < len(coeffs) - 1 or last:
            a, b, c = a / safety, b / safety**3, c / safety**5
        out.append((a, b, c))
    return tuple(out)


# Paper usage: entries 1-7 divided by (1.01, 1.01^3, 1.01^5), entry 8 kept (arXiv 2505.16932; NoahAmsel/PolarExpress).
POLAR_EXPRESS: tuple[Triple, ...] = apply_safety(POLAR_EXPRESS_RAW, 1.01)

# Dion / modded-nanogpt 5-step list, safety 1.02 already baked into entries 1-4
# (microsoft/dion dion/polar_express.py). Input normalised by 1.02*||X||_F + eps.
POLAR_EXPRESS_DION: tuple[Triple, ...] = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)

SCHEDULES: dict[str, tuple[Triple, ...]] = {
    "jordan": JORDAN,
    "you": YOU,
    "polar_express": POLAR_EXPRESS,
    "polar_express_dion": POLAR_EXPRESS_DION,
    "cubic": CUBIC,
}

# Safety factor s in X / (s*||X||_F + eps) that each schedule was designed with (KellerJordan/Muon: 1; Polar Express paper list: 1.01; microsoft/dion: 1.02).
DEFAULT_PRESCALE: dict[str, float] = {
    "jordan": 1.0,
    "you": 1.0,
    "polar_express": 1.01,
    "polar_express_dion": 1.02,
    "cubic": 1.0,
}


def get_schedule(schedule: str | object) -> tuple[tuple[Triple, ...], float]:
    """Return ``(triples, default_prescale)`` for a registry name or a user sequence.

    Args:
        schedule: a key of ``SCHEDULES`` or a non-empty sequence of ``(a, b, c)``.

    Returns:
        The schedule as a tuple of float triples and its default prescale
        (1.0 for user sequences).

    Raises:
        ValueError: unknown name or malformed sequence.
    """
    if isinstance(schedule, str):
        key = schedule.lower().replace("-", "_")
        if key not in SCHEDULES:
            raise ValueError(f"schedule must be one of {sorted(SCHEDULES)} or a sequence of (a, b, c), got {schedule!r}")
        return SCHEDULES[key], DEFAULT_PRESCALE[key]
    try:
        triples = tuple((float(a), float(b), float(c)) for a, b, c in schedule)  # type: ignore[union-attr]
    except (TypeError, ValueError) as err:
        raise ValueError(f"schedule must be a name or a sequence of (a, b, c) triples, got {schedule!r}") from err
    if not triples:
        raise ValueError(f"schedule must not be empty, got {schedule!r}")
    return triples, 1.0
