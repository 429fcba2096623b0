"""What one judging of an answer returns, whatever the mode: levels, digit reads, red flags, usage. Its own module
so the structured replies (judges.py, structured_points.py) and the verdict builders share it without a cycle.
"""

from __future__ import annotations

from pydantic import BaseModel

from .backends import DigitRead
from .models import CriterionJudgment, Usage


class CriterionOut(BaseModel):
    level: float | None = None
    argmax: int | None = None
    probabilities: dict[str, float] | None = None
    source: str = ""
    evidence: str = ""
    reason: str = ""


class FlagOut(BaseModel):
    hit: bool
    probability: float | None = None
    evidence: str = ""


class JudgeResult(BaseModel):
    status: str = "scored"  # scored | unscored
    reason: str = ""
    mode: str
    criteria: dict[str, CriterionOut] = {}
    holistic: DigitRead | None = None
    views: dict[str, DigitRead] = {}
    # Key-point reads (rubrics scored by key points): the key-idea reading 0-5, then per key point the
    # probability that the answer states it, in order.
    keyidea: DigitRead | None = None
    points: list[float] = []
    # Per key point, the quote an endpoint judge gave as evidence ("" where none); empty in probability mode.
    point_evidence: list[str] = []
    red_flags: dict[str, FlagOut] = {}
    rationale: str = ""
    off_task: bool | None = None
    usage: Usage = Usage()
    raw_reply: str | None = None
    dialect: str | None = None
    retryable: bool = False


def criterion_out(j: CriterionJudgment, read: DigitRead | None) -> CriterionOut:
    """A criterion of a structured reply: its level probability-weighted where the endpoint gave the level digit's
    logprobs (`read`), else the level it wrote."""
    return CriterionOut(
        level=read.expected if read else float(j.level.value),
        argmax=int(j.level.value),
        probabilities=read.probabilities if read else None,
        source="top_logprobs" if read else "sampled",
        evidence=j.evidence,
        reason=j.reason,
    )
