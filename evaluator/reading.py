"""One answer once the judge has read it: what the verdict builders work from, and the pieces they share.

`Reading` carries the question, the text the verdict quotes and measures, the judge's result, similarity, the
review flags so far and the verdict's base fields. The guard's `lower_of` (of two readings, the lower) and
`overall_level` work on judge results; `user_mapping` and `fail_and_disagreement_flags` finish a score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .judges import CriterionOut, FlagOut, JudgeResult
from .mapping import Mapping, mapping_features
from .models import CriterionResult, Effect, Question, RedFlag, ReviewFlag, Rubric, Similarity, Usage, Verdict

DISAGREE_HIGH_SIM, DISAGREE_LOW_SCORE = 0.75, 0.25
DISAGREE_LOW_SIM, DISAGREE_HIGH_SCORE = 0.15, 0.60
# A bare list of terms (screen.keyword_list: no sentence, almost no function words) names the topic's vocabulary and
# states no claim: at most the top of a weak answer's band, whatever plan read it. The judge's key-point reads rise
# with vocabulary, so on the anchored scale such a list outscored a short correct answer on 11 of 14 questions
# (benchmarks/gaming.py).
KEYWORD_LIST_CAP = 0.3
KEYWORD_LIST_NOTE = " A list of terms with no sentence states no point: the score is capped at 30% of the scale."


@dataclass
class Reading:
    q: Question
    rubric: Rubric
    text: str  # what the verdict quotes and measures: the answer, or what the screen left of it
    result: JudgeResult
    sim: Similarity
    flags: list[ReviewFlag]
    usage: Usage
    base: dict[str, Any]  # question_id, scale_min, scale_max, provenance: the same on every verdict of this answer
    mapping: Mapping | None  # the user's (or a rubric's shipped) calibration mapping, applied last

    def keyword_list_cap(self, fraction: float) -> tuple[float, str]:
        """The fraction of full marks, capped when the screen read the answer as a bare keyword list, and the
        sentence the rationale then adds ("" otherwise)."""
        if any(f.code == "keyword_list" for f in self.flags):
            return min(fraction, KEYWORD_LIST_CAP), KEYWORD_LIST_NOTE
        return fraction, ""

    def scored(self, score: float, score_100: float, raw: float, **fields: Any) -> Verdict:
        """A scored verdict with the fields every plan fills the same way."""
        return Verdict(
            status="scored",
            score=score,
            score_100=score_100,
            raw_score=raw,
            review_flags=self.flags,
            similarity=self.sim,
            usage=self.usage,
            answer_chars=len(self.text),
            **fields,
            **self.base,
        )

    def final_score(self, raw: float, fraction: float, features: dict[str, Any]) -> tuple[float, float]:
        """The score and its /100 value: the rubric's scale, or a calibration mapping's when one applies (the
        verdict then reports the mapping's scale)."""
        if self.mapping is None:
            return raw, round(fraction * 100, 2)
        score = round(self.mapping.apply(features), 2)
        lo, hi = self.mapping.scale_min, self.mapping.scale_max
        self.base.update(scale_min=lo, scale_max=hi)
        return score, round(100 * (score - lo) / (hi - lo), 2)


def fail_and_disagreement_flags(hits: list[RedFlag], sim: Similarity, fraction: float) -> list[ReviewFlag]:
    out = []
    fails = [h.id for h in hits if h.effect == Effect.fail]
    if fails:
        out.append(ReviewFlag(code="red_flag_fail", reason=f"red flag with effect 'fail': {', '.join(fails)}"))
    if sim.best_reference >= DISAGREE_HIGH_SIM and fraction <= DISAGREE_LOW_SCORE:
        why = f"close to the reference (cosine {sim.best_reference:.2f}) but judged low"
        out.append(ReviewFlag(code="judge_similarity_disagree", reason=why))
    elif sim.best_reference <= DISAGREE_LOW_SIM and fraction >= DISAGREE_HIGH_SCORE:
        why = f"far from the reference (cosine {sim.best_reference:.2f}) but judged high"
        out.append(ReviewFlag(code="judge_similarity_disagree", reason=why))
    return out


def stored_features(
    question_id: str,
    raw: float,
    holistic_level: float | None,
    criteria: list[CriterionResult],
    sim: Similarity,
    chars: int,
) -> dict[str, Any]:
    """A calibration mapping's feature row from the values the verdict stores, so the row a mapping is applied
    to while grading is the row `evaluator calibrate` fits it on (calibrate_report.verdict_row)."""
    levels = {c.id: c.level for c in criteria if c.level is not None}
    return mapping_features(question_id, raw, holistic_level, levels, sim.model_dump(), chars)


def overall_level(result: JudgeResult) -> float | None:
    """The overall level on 0-4: the holistic reading and the views (each read 0-5, rescaled), averaged."""
    readings = ([result.holistic.expected] if result.holistic else []) + [
        4 * r.expected / 5 for r in result.views.values()
    ]
    return sum(readings) / len(readings) if readings else None


def lower_of(a: JudgeResult, b: JudgeResult | None) -> JudgeResult:
    """Per criterion, holistic, view, key idea and key point: the lower reading; per red flag: the higher
    probability. How a second reading without suspected injected text can only lower a score."""
    if b is None or b.status != "scored":
        return a
    out = a.model_copy(deep=True)
    for cid, co in b.criteria.items():
        current = out.criteria.get(cid)
        if current is None or (co.level is not None and current.level is not None and co.level < current.level):
            out.criteria[cid] = CriterionOut(**co.model_dump())
    if b.holistic and (out.holistic is None or b.holistic.expected < out.holistic.expected):
        out.holistic = b.holistic
    for name, r in b.views.items():
        if name not in out.views or r.expected < out.views[name].expected:
            out.views[name] = r
    if b.keyidea and (out.keyidea is None or b.keyidea.expected < out.keyidea.expected):
        out.keyidea = b.keyidea
    if len(b.points) == len(out.points):
        out.points = [min(x, y) for x, y in zip(out.points, b.points, strict=True)]
    if b.point_evidence:  # an endpoint's quotes: those of the copy without the suspect text
        out.point_evidence = list(b.point_evidence)
    for fid, fo in b.red_flags.items():
        mine = out.red_flags.get(fid)
        if mine is None or (fo.probability or 0) > (mine.probability or 0) or (fo.hit and not mine.hit):
            out.red_flags[fid] = FlagOut(**fo.model_dump())
    out.usage.add(b.usage)
    return out
