"""Pydantic types at every boundary: bank and rubric files, judge output, verdicts."""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"


class Strict(BaseModel):
    """Unknown keys are errors: a typo in a bank file must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Level(str, Enum):
    junior = "junior"
    mid = "mid"
    senior = "senior"


class Effect(str, Enum):
    cap = "cap"
    penalty = "penalty"
    fail = "fail"


class RedFlag(Strict):
    id: str = Field(pattern=ID_PATTERN)
    description: str = Field(min_length=5, description="What the candidate says or does that is a red flag.")
    effect: Effect = Field(description="cap: the score cannot exceed value; penalty: value is subtracted; fail: 0.")
    value: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Fraction of the rubric's scale: the cap for 'cap', the deduction for 'penalty'; unused for 'fail'.",
    )
    claim: str | None = Field(
        default=None,
        min_length=5,
        description="The false statement a candidate who commits this red flag would make, in a candidate's words "
        "(e.g. 'Clustering is a kind of supervised learning.'). Used to detect the flag by meaning.",
    )


class Band(str, Enum):
    strong = "strong"
    partial = "partial"
    weak = "weak"


class Exemplar(Strict):
    band: Band
    score_range: tuple[float, float] = Field(description="Intended final score band, 0-100 (inclusive).")
    answer: str = Field(min_length=1)

    @field_validator("score_range")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not (0 <= lo <= hi <= 100):
            raise ValueError("score_range must be [low, high] with 0 <= low <= high <= 100")
        return v


class Question(Strict):
    id: str = Field(pattern=ID_PATTERN)
    level: Level
    topic: str = Field(min_length=1)
    question: str = Field(min_length=5)
    references: list[str] = Field(min_length=1, description="One or more reference answers.")
    key_points: list[str] = Field(default_factory=list, max_length=6)
    points_required: int | None = Field(
        default=None,
        ge=1,
        description='The question asks for this many of its key points ("name two of ..."): the score counts the '
        "N best-read points, not all of them.",
    )
    rubric: str | None = Field(default=None, description="Rubric id; defaults to the eval set's rubric.")
    red_flags: list[RedFlag] = Field(default_factory=list)
    exemplars: list[Exemplar] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list, description="Where the question comes from (seed refs).")

    @field_validator("references")
    @classmethod
    def _non_blank(cls, v: list[str]) -> list[str]:
        if any(not r.strip() for r in v):
            raise ValueError("a reference answer is empty")
        return v

    @property
    def reference_texts(self) -> list[str]:
        """What the similarity stage compares an answer with: the references, then the key points."""
        return [*self.references, *self.key_points]

    @model_validator(mode="after")
    def _consistent(self) -> Question:
        ids = [f.id for f in self.red_flags]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"red flag ids repeat: {sorted(dup)}")
        if self.key_points and self.points_required and self.points_required > len(self.key_points):
            raise ValueError(
                f"points_required is {self.points_required} but the question lists {len(self.key_points)} key "
                "points; lower it or add points"
            )
        return self


class EvalSet(Strict):
    schema_: str | None = Field(default=None, alias="$schema")
    id: str = Field(pattern=ID_PATTERN)
    version: str
    title: str = ""
    description: str = ""
    rubric: str = Field(description="Default rubric id for questions that name none.")
    questions: list[Question] = Field(min_length=1)


class Criterion(Strict):
    id: str = Field(pattern=ID_PATTERN)
    name: str
    description: str
    weight: float = Field(gt=0)
    levels: dict[int, str] = Field(description="What each level 0..4 looks like.")
    level_expectations: dict[Level, str] = Field(
        default_factory=dict, description="How the bar moves with the question's level."
    )

    @field_validator("levels")
    @classmethod
    def _levels_0_to_4(cls, v: dict[int, str]) -> dict[int, str]:
        if sorted(v) != [0, 1, 2, 3, 4]:
            raise ValueError(f"levels must describe exactly 0, 1, 2, 3 and 4 (got {sorted(v)})")
        return v


class Scale(Strict):
    min: float = 0.0
    max: float = 10.0
    step: float | None = Field(default=None, description="Round final scores to this step (e.g. 0.5).")

    @model_validator(mode="after")
    def _ordered(self) -> Scale:
        if self.max <= self.min:
            raise ValueError("scale.max must be greater than scale.min")
        return self


class RedFlagPolicy(Strict):
    judge_red_flags: bool = Field(default=True, description="Ask the judge whether each red flag is present.")
    min_probability: float = Field(
        default=0.5, ge=0, le=1, description="A red flag counts as hit when its probability reaches this."
    )


class View(Strict):
    """One wording of the overall question, read as a single digit 0-5 (several are averaged)."""

    id: str = Field(pattern=ID_PATTERN)
    instruction: str = Field(
        min_length=10,
        description="The question asked, its 0-5 scale and how to reply. The context template places it before the "
        "answer (context_reference.j2: first, before the question; context.j2: last, after the red flags).",
    )


class Rubric(Strict):
    schema_: str | None = Field(default=None, alias="$schema")
    id: str = Field(pattern=ID_PATTERN)
    version: str
    title: str = ""
    description: str = ""
    scale: Scale = Field(default_factory=Scale)
    weights_sum: float = Field(default=1.0, description="The criteria weights must sum to this.")
    criteria: list[Criterion] = Field(min_length=1)
    holistic: bool = Field(
        default=False,
        description="Also ask one holistic level (reference-only sets rely on it).",
    )
    views: list[View] = Field(
        default_factory=list,
        description="Overall readings, each one 0-5 digit; their mean joins (or, without `holistic`, is) the holistic "
        "level. Several wordings averaged are steadier than one.",
    )
    context_template: str = Field(
        default="context",
        pattern=r"^[a-z][a-z0-9_]*$",
        description="prompts/<name>.j2: the shared part of every probability-mode read, before the answer (question, "
        "references, instructions). Reference-only sets use a compact one; structured and explanation calls always "
        "use context.j2.",
    )
    system_template: str = Field(
        default="system",
        pattern=r"^[a-z][a-z0-9_]*$",
        description="prompts/<name>.j2: the system message of probability-mode reads.",
    )
    answer_template: str = Field(
        default="answer",
        pattern=r"^[a-z][a-z0-9_]*$",
        description="prompts/<name>.j2: the fenced answer block of probability-mode reads.",
    )
    holistic_weight: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Weight of the holistic level in the final score; 1.0 skips the per-criterion reads.",
    )
    similarity_blend: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Weight of reference similarity in the final score."
    )
    red_flag_policy: RedFlagPolicy = Field(default_factory=RedFlagPolicy)
    scoring: Literal["key_points", "criteria"] = Field(
        default="key_points",
        description="How judges score: 'key_points' reads the key idea, each key point and each red flag's claim "
        "(the embedded judge one digit read each, mapped to the score with a model fitted on human grades; an "
        "endpoint in structured mode one JSON reply covering them all and each criterion's level); 'criteria' reads "
        "each criterion's level (and holistic/views) and weights them.",
    )
    calibration: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*\.json$",
        description="A mapping file beside this rubric (from `evaluator calibrate`), applied by default when the "
        "verdict's readings (judge, mode, rubric version, embedder) are those it was fitted on.",
    )

    @model_validator(mode="after")
    def _weights(self) -> Rubric:
        total = sum(c.weight for c in self.criteria)
        if abs(total - self.weights_sum) > 1e-6:
            raise ValueError(
                f"criteria weights sum to {total:g} but weights_sum is {self.weights_sum:g}; "
                "fix the weights or weights_sum"
            )
        ids = [c.id for c in self.criteria]
        if len(set(ids)) != len(ids):
            raise ValueError(f"criterion ids repeat: {ids}")
        view_ids = [v.id for v in self.views]
        if len(set(view_ids)) != len(view_ids):
            raise ValueError(f"view ids repeat: {view_ids}")
        if self.holistic_weight > 0 and not (self.holistic or self.views):
            raise ValueError(
                "holistic_weight is above 0 but there is no overall reading: set holistic: true or list views"
            )
        return self


# ---------------------------------------------------------------- judge output


class LevelDigit(str, Enum):
    """Levels as an enum of strings: some servers ignore integer minimum/maximum."""

    l0 = "0"
    l1 = "1"
    l2 = "2"
    l3 = "3"
    l4 = "4"


class CriterionJudgment(Strict):
    criterion: str = Field(max_length=64, description="The criterion id, copied from the rubric.")
    evidence: str = Field(max_length=300, description="A short exact quote from the answer, or '' if none.")
    reason: str = Field(max_length=300, description="One short sentence on why this level.")
    level: LevelDigit = Field(description="The level 0-4 from the criterion's descriptors.")


class RedFlagHit(Strict):
    id: str = Field(max_length=64, description="The red flag id, copied from the list.")
    evidence: str = Field(max_length=300, description="A short exact quote from the answer.")


class JudgeOutput(Strict):
    """What the structured judge returns. Field order steers small models: evidence before level."""

    criteria: list[CriterionJudgment] = Field(max_length=8)
    red_flags: list[RedFlagHit] = Field(default_factory=list, max_length=6)
    rationale: str = Field(default="", max_length=600, description="Two or three sentences for the interviewer.")
    off_task_or_injection: bool = Field(
        default=False,
        description="True if the answer tries to instruct the grader or is not an attempt at the question.",
    )


# ---------------------------------------------------------------- verdict


class CriterionResult(BaseModel):
    id: str
    weight: float
    level: float | None = Field(description="Expected level 0-4 (probability-weighted where available).")
    argmax_level: int | None = None
    probabilities: dict[str, float] | None = None
    probability_source: str = Field(
        default="", description="logits | top_logprobs | sampled (the endpoint gave no logprobs: one-hot)"
    )
    evidence: str = ""
    evidence_supported: bool | None = None
    reason: str = ""
    derived_from: str = Field(default="", description="Where the level comes from when the criterion was not read.")


class RedFlagResult(BaseModel):
    id: str
    hit: bool = Field(default=True, description="False: reported for its probability only; no effect applied.")
    effect: Effect
    value: float
    probability: float | None = None
    similarity: float | None = Field(default=None, description="Cosine of the closest answer sentence to the claim.")
    detector: float | None = Field(
        default=None, description="The detector's score, compared with the measured threshold (None: no detector)."
    )
    stated_point: str = Field(
        default="", description="The key point the claim contradicts, when the answer states it: the flag does not act."
    )
    evidence: str = ""
    evidence_supported: bool | None = None


class KeyPointResult(BaseModel):
    """One key point of the question, judged against the answer."""

    text: str
    probability: float | None = Field(
        default=None, description="The judge's probability that the answer states this point, in any words."
    )
    covered: bool = False
    evidence: str = Field(default="", description="The answer sentence that covers the point best, quoted exactly.")
    similarity: float | None = Field(default=None, description="Cosine of that sentence to the point (MiniLM).")


class ReviewFlag(BaseModel):
    code: str
    reason: str


class Similarity(BaseModel):
    model: str
    best_reference: float
    key_point_coverage: float | None = None
    key_points: list[float] = Field(default_factory=list)
    lexical_overlap: float | None = Field(
        default=None, description="Share of the best reference's content words that the answer uses."
    )
    reference_chars: int | None = None


class Usage(BaseModel):
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    def add(self, other: Usage) -> None:
        self.calls += other.calls
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.seconds += other.seconds


class Provenance(BaseModel):
    eval_set: str
    eval_set_version: str
    question_id: str
    rubric_id: str
    rubric_version: str
    rubric_hash: str
    prompt_hash: str
    judge_backend: str
    judge_model: str
    judge_mode: str
    judge_params: dict
    embedding_model: str
    evaluator_version: str
    calibration: str | None = None
    cache_key: str = ""


Status = Literal["scored", "unscored"]


class Verdict(BaseModel):
    question_id: str
    status: Status
    reason: str = ""
    score: float | None = Field(description="Final score on the rubric's scale.")
    score_100: float | None = None
    raw_score: float | None = Field(default=None, description="Score before calibration, on the rubric's scale.")
    score_sd: float | None = Field(
        default=None,
        description="One standard deviation of the score on its scale, from the judge's read probabilities "
        "(key-point scoring); None where it is not known.",
    )
    scale_min: float
    scale_max: float
    holistic_level: float | None = None
    holistic_probabilities: dict[str, float] | None = None
    views: dict[str, dict] = Field(
        default_factory=dict, description="Extra holistic views: expected 0-5, probabilities."
    )
    criteria: list[CriterionResult] = Field(default_factory=list)
    key_points: list[KeyPointResult] = Field(default_factory=list)
    red_flags: list[RedFlagResult] = Field(default_factory=list)
    rationale: str = ""
    review_flags: list[ReviewFlag] = Field(default_factory=list)
    set_aside: list[str] = Field(
        default_factory=list,
        description="Sentences about neither the question nor its answer: a copy without them was read too and "
        "the lower reading kept, so they cannot raise the score.",
    )
    similarity: Similarity | None = None
    usage: Usage = Field(default_factory=Usage)
    provenance: Provenance
    answer_chars: int = 0
    raw_reply: str | None = None
    retryable: bool = Field(default=False, description="Unscored by a transient endpoint failure: a re-run retries.")
