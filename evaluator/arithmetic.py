"""The score's arithmetic, in code and never in the LLM: criterion levels and red flags -> a fraction -> the scale."""

from __future__ import annotations

from .models import Effect, RedFlag, Rubric


def criteria_fraction(levels: dict[str, float], rubric: Rubric) -> float:
    """Weighted mean of criterion levels (0-4) as a fraction of the maximum."""
    total = sum(c.weight for c in rubric.criteria)
    return sum(c.weight * levels[c.id] / 4.0 for c in rubric.criteria) / total


def apply_red_flags(fraction: float, hits: list[RedFlag]) -> float:
    """Caps, then penalties, then fails; values are fractions of the scale."""
    f = fraction
    for flag in hits:
        if flag.effect == Effect.cap:
            f = min(f, flag.value)
    for flag in hits:
        if flag.effect == Effect.penalty:
            f -= flag.value
    if any(flag.effect == Effect.fail for flag in hits):
        f = 0.0
    return min(1.0, max(0.0, f))


def to_scale(fraction: float, rubric: Rubric) -> float:
    s = rubric.scale
    value = s.min + fraction * (s.max - s.min)
    if s.step:
        value = round(round(value / s.step) * s.step, 6)
    return min(s.max, max(s.min, value))


def combine(
    rubric: Rubric,
    criterion_levels: dict[str, float] | None,
    holistic_level: float | None,
    similarity: float | None,
    red_flag_hits: list[RedFlag],
    similarity_blend: float | None = None,
) -> float:
    """The final fraction 0-1: criteria and holistic levels, optional similarity blend, red flags."""
    hw = rubric.holistic_weight if holistic_level is not None else 0.0
    if criterion_levels is None:
        hw = 1.0
    parts = 0.0
    if hw < 1.0:
        parts += (1 - hw) * criteria_fraction(criterion_levels or {}, rubric)
    if hw > 0.0:
        parts += hw * (holistic_level or 0.0) / 4.0
    blend = rubric.similarity_blend if similarity_blend is None else similarity_blend
    if blend and similarity is not None:
        parts = (1 - blend) * parts + blend * min(1.0, max(0.0, similarity))
    return apply_red_flags(parts, red_flag_hits)
