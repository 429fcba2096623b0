"""The verdict of the per-criterion plan (rubric `scoring: criteria`, and endpoint judges in structured mode):
criterion levels and red flags as the judge reported them, quotes checked against the answer, then the arithmetic.
"""

from __future__ import annotations

import re

from .arithmetic import combine, to_scale
from .guards import evidence_supported
from .judges import JudgeResult
from .models import CriterionResult, Question, RedFlag, RedFlagResult, ReviewFlag, Rubric, Verdict
from .reading import Reading, fail_and_disagreement_flags, overall_level, stored_features

SHOWN_FLAG_PROBABILITY = 0.25  # a red flag not hit is still listed from this probability up

_QUOTE = re.compile(r'"([^"]{12,})"|“([^”]{12,})”')


def criteria_verdict(r: Reading) -> Verdict:
    criteria = criterion_results(r.rubric, r.result, r.text)
    red, hits = red_flag_results(r.q, r.result, r.text)
    r.result.rationale, invented = strip_unsupported_quotes(r.result.rationale, r.text)
    unsupported = (
        (["rationale"] if invented else [])
        + [c.id for c in criteria if c.evidence_supported is False]
        + [f.id for f in red if f.hit and f.evidence_supported is False]
    )
    if unsupported:
        why = f"quotes not found in the answer for: {', '.join(unsupported)}"
        r.flags.append(ReviewFlag(code="unsupported_evidence", reason=why))

    levels = {c.id: c.level for c in criteria if c.level is not None}
    holistic = overall_level(r.result)
    crit_levels = levels if len(levels) == len(r.rubric.criteria) else None
    fraction, listed_note = r.keyword_list_cap(combine(r.rubric, crit_levels, holistic, r.sim.best_reference, hits))
    raw = to_scale(fraction, r.rubric)
    holistic_level = round(holistic, 4) if holistic is not None else None
    features = stored_features(r.q.id, raw, holistic_level, criteria, r.sim, len(r.text))
    score, score_100 = r.final_score(raw, fraction, features)
    r.flags += fail_and_disagreement_flags(hits, r.sim, fraction)
    return r.scored(
        score,
        score_100,
        raw,
        holistic_level=holistic_level,
        holistic_probabilities=r.result.holistic.probabilities if r.result.holistic else None,
        views={
            k: {"expected": round(v.expected, 4), "probabilities": v.probabilities} for k, v in r.result.views.items()
        },
        criteria=criteria,
        red_flags=red,
        rationale=(r.result.rationale + listed_note).strip(),
    )


def criterion_results(rubric: Rubric, result: JudgeResult, text: str) -> list[CriterionResult]:
    out = []
    for c in rubric.criteria:
        co = result.criteria.get(c.id)
        supported = evidence_supported(co.evidence, text) if co else None
        out.append(
            CriterionResult(
                id=c.id,
                weight=c.weight,
                level=round(co.level, 4) if co and co.level is not None else None,
                argmax_level=co.argmax if co else None,
                probabilities=co.probabilities if co else None,
                probability_source=co.source if co else "",
                # A quote the answer does not contain is removed (and flagged), never shown as evidence.
                evidence=co.evidence if co and supported is not False else "",
                evidence_supported=supported,
                reason=co.reason if co else "",
            )
        )
    return out


def red_flag_results(q: Question, result: JudgeResult, text: str) -> tuple[list[RedFlagResult], list[RedFlag]]:
    """The red flags to show (hit, or likely enough) and the bank flags hit."""
    defs = {f.id: f for f in q.red_flags}
    shown: list[RedFlagResult] = []
    hits: list[RedFlag] = []
    for fid, fo in result.red_flags.items():
        f = defs[fid]
        if fo.hit:
            hits.append(f)
        if fo.hit or (fo.probability or 0) >= SHOWN_FLAG_PROBABILITY:
            shown.append(
                RedFlagResult(
                    id=fid,
                    hit=fo.hit,
                    effect=f.effect,
                    value=f.value,
                    probability=fo.probability,
                    evidence=fo.evidence,
                    evidence_supported=evidence_supported(fo.evidence, text),
                )
            )
    return shown, hits


def strip_unsupported_quotes(prose: str, answer: str) -> tuple[str, int]:
    """Generated prose with every quotation the answer does not contain replaced by a marker, and how many."""
    removed = 0

    def check(m: re.Match) -> str:
        nonlocal removed
        if evidence_supported(m.group(1) or m.group(2), answer):
            return m.group(0)
        removed += 1
        return "[quote not found in the answer, removed]"

    return _QUOTE.sub(check, prose), removed
