"""The default grade model: key-point readings -> fraction of full marks.

Features are scale-free (probabilities, cosines, a length ratio), so one model serves every bank and every
rubric scale. The shipped model (`rubrics/key_points.model.json`, written by `benchmarks/quality.py`) is the
anchored coverage: each key point's reading, and the key idea's, placed between what the judge reads for an empty
reply and for the question's own reference answer, averaged. It has no fitted parameter, so its scale is the
bank's (an answer that reads like the reference gets full marks), not the habits of the graders a mapping could be
fitted on; the same file format holds a linear model with a monotone map, which the benchmark fits on the Mohler
and SAF grades for comparison. Applying either needs only numpy.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from .errors import CalibrationError

FEATURES: tuple[str, ...] = (
    "keyidea",  # expected key-idea digit / 5
    "points_mean",  # mean probability that the answer states each key point
    "points_max",
    "points_covered",  # share of key points with probability >= 0.5
    "cosine",  # MiniLM cosine of the answer to the best reference
    "evidence_cosine",  # mean cosine of each key point to its closest answer sentence
    "log_length_ratio",  # log of answer words over reference words
    # The same readings placed between the question's own floor (an empty reply) and ceiling (the reference
    # answer read as a candidate's): a small judge reads some questions generously and others harshly, and
    # that bias, not the answer, is most of what varies between questions.
    "keyidea_rel",
    "points_rel",
    "cosine_rel",
    "evidence_rel",
    # The default score: each key point's reading placed between the question's floor and ceiling, and the key
    # idea's, averaged with the key idea counting as one more point. 0 reads like an empty reply, 1 like the
    # reference answer itself; no parameter is fitted, so the scale is the bank's own, not a grader's habits.
    "coverage_rel",
)
MIN_SPAN = 0.1  # floor-to-ceiling gaps narrower than this are widened, so a rel feature stays bounded


@dataclass(frozen=True)
class Anchors:
    """A question's yardstick, read once per question: (floor, ceiling) of the key-idea reading (/5) and of each
    key point's probability, the cosine of an empty reply to the reference, and the evidence cosine of the
    reference's own sentences to its key points."""

    keyidea: tuple[float, float]
    points: list[tuple[float, float]]
    cosine_floor: float
    evidence_ceiling: float


def _rel(x: float, lo: float, hi: float) -> float:
    return (x - lo) / max(hi - lo, MIN_SPAN)


MODEL_FILE = "key_points.model.json"


def point_positions(points: list[float], anchors: Anchors | None) -> list[float]:
    """Each key point's reading placed between what the judge reads for an empty reply (0) and for the reference
    answer (1); empty without anchors."""
    if anchors is None or not points or len(points) != len(anchors.points):
        return []
    return [_rel(p, lo, hi) for p, (lo, hi) in zip(points, anchors.points, strict=True)]


# A question of one or two key points (a one-sentence reference) is read twice over by the key idea and its point,
# so the answer's closest sentence to the points (anchored by the reference's own) counts as one more point: on
# one-sentence answers similarity is the signal graders reward, and on questions of more points, where the point reads
# carry the signal, it would pay vocabulary (benchmarks/quality.py measures both).
EVIDENCE_POINT_MAX_POINTS = 2


def evidence_point(n_points: int, evidence_rel: float) -> list[float]:
    """The evidence similarity as one more point of the coverage, for a question of few key points."""
    return [evidence_rel] if n_points <= EVIDENCE_POINT_MAX_POINTS and not math.isnan(evidence_rel) else []


def counted(values: list[float], required: int | None) -> list[int]:
    """The indices of the points the score counts: all of them, or the `required` best read when the question
    asks for only that many ("name two of ...")."""
    order = range(len(values))
    if required is None or required >= len(values):
        return list(order)
    return sorted(sorted(order, key=lambda i: -values[i])[:required])


def counted_points(points: list[float], anchors: Anchors | None, required: int | None) -> list[int]:
    """The indices of the points the score counts: all, or the `required` best read (by anchored position when the
    question's anchors were read, else by probability)."""
    return counted(point_positions(points, anchors) or points, required)


def features_of(
    keyidea: float | None,
    points: list[float],
    cosine: float | None,
    evidence_cosines: list[float],
    answer_words: int,
    reference_words: int,
    anchors: Anchors | None = None,
    required: int | None = None,
) -> dict[str, float]:
    """The one feature row of an answer, for fitting and for applying the model. `keyidea` is the expected
    digit 0-5; missing values are NaN (the model imputes the training mean). `required`: the question asks for
    only that many of its points, and every point feature counts the best-read ones."""
    nan = math.nan
    n_points = len(points)
    keep = counted_points(points, anchors, required)
    positions = [x for i, x in enumerate(point_positions(points, anchors)) if i in keep]
    points = [points[i] for i in keep]
    rel = {"keyidea_rel": nan, "points_rel": nan, "cosine_rel": nan, "evidence_rel": nan, "coverage_rel": nan}
    if anchors is not None:
        if keyidea is not None:
            rel["keyidea_rel"] = _rel(keyidea / 5, *anchors.keyidea)
        if cosine is not None:
            rel["cosine_rel"] = _rel(cosine, anchors.cosine_floor, 1.0)
        if evidence_cosines:
            rel["evidence_rel"] = float(np.mean(evidence_cosines)) / max(anchors.evidence_ceiling, MIN_SPAN)
        if positions:
            rel["points_rel"] = float(np.mean(positions))
            idea = [] if math.isnan(rel["keyidea_rel"]) else [rel["keyidea_rel"]]
            rel["coverage_rel"] = float(np.mean(positions + idea + evidence_point(n_points, rel["evidence_rel"])))
    return rel | {
        "keyidea": keyidea / 5 if keyidea is not None else nan,
        "points_mean": float(np.mean(points)) if points else nan,
        "points_max": float(np.max(points)) if points else nan,
        "points_covered": float(np.mean([p >= 0.5 for p in points])) if points else nan,
        "cosine": cosine if cosine is not None else nan,
        "evidence_cosine": float(np.mean(evidence_cosines)) if evidence_cosines else nan,
        "log_length_ratio": math.log((answer_words + 1) / (reference_words + 1)),
    }


class GradeModel(BaseModel):
    """Standardised linear model, then a monotone map of its output to the fraction of full marks: linear
    interpolation between knots (iso_x, iso_y), which benchmarks/quality.py places at the centres of the isotonic
    fit's blocks, so the map rises through each block instead of giving all its answers one score."""

    model_config = ConfigDict(extra="forbid")

    features: list[str]
    impute: list[float]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    iso_x: list[float]
    iso_y: list[float]
    fitted_for: dict[str, str]  # the readings it applies to: judge backend, model, read version, prompt set
    trained_on: dict[str, int]  # answers per data set
    cv: dict[str, dict[str, float]]  # out-of-sample figures (question-grouped CV) it was chosen on
    # The red-flag detector measured on the red-flag set (red_flags.py): auc, threshold, effective (auc >= 0.75), the
    # logistic weights (w_p, w_dp, w_sim, w_dsim, b) and stated_point, the anchored reading of the contradicted key
    # point from which a flag does not act.
    red_flags: dict[str, float | bool] = {}
    # Features the model cannot do without (no imputation): when one is missing, for example the question's anchors
    # could not be read, the verdict falls back to the unfitted formula.
    require: list[str] = []

    @property
    def id(self) -> str:
        """Short content hash: part of the verdict cache key, so a refitted model regrades."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]

    def _z(self, row: dict[str, float]) -> np.ndarray:
        x = np.array([row.get(f, math.nan) for f in self.features], dtype=float)
        x = np.where(np.isnan(x), self.impute, x)
        return (x - np.array(self.mean)) / np.array(self.scale)

    def fraction(self, row: dict[str, float]) -> float:
        """The predicted fraction of full marks, 0-1."""
        linear = float(self._z(row) @ np.array(self.coef) + self.intercept)
        return float(np.clip(np.interp(linear, self.iso_x, self.iso_y), 0.0, 1.0))

    def fraction_sd(self, row: dict[str, float], variances: dict[str, float]) -> float:
        """One standard deviation of fraction(), from the variances of the features that carry one (the judge's
        reads), propagated through the linear part and the local slope of the monotone map (delta method)."""
        var = sum(
            (c / sc) ** 2 * variances.get(f, 0.0) for f, c, sc in zip(self.features, self.coef, self.scale, strict=True)
        )
        linear, eps = float(self._z(row) @ np.array(self.coef) + self.intercept), 0.02
        slope = (np.interp(linear + eps, self.iso_x, self.iso_y) - np.interp(linear - eps, self.iso_x, self.iso_y)) / (
            2 * eps
        )
        return float(abs(slope) * math.sqrt(var))

    def contributions(self, row: dict[str, float]) -> dict[str, float]:
        """Each feature's push on the linear output, relative to an average training answer."""
        return {f: round(float(c * z), 4) for f, c, z in zip(self.features, self.coef, self._z(row), strict=True)}

    def applies_to(self, row: dict[str, float]) -> bool:
        return not any(math.isnan(row.get(f, math.nan)) for f in self.require)

    def fits(self, reading: dict[str, str]) -> bool:
        return all(self.fitted_for.get(k) == v for k, v in reading.items())


def anchored_coverage(**provenance: dict) -> GradeModel:
    """The shipped default: the anchored coverage as it is (identity map, clipped to 0-1), nothing fitted. Without
    the question's anchors it does not apply (`require`) and the verdict uses the unfitted formula. `provenance`:
    fitted_for, trained_on, cv, red_flags as benchmarks/quality.py measured them."""
    empty: dict = {"fitted_for": {}, "trained_on": {}, "cv": {}}
    return GradeModel(
        features=["coverage_rel"],
        impute=[0.0],
        mean=[0.0],
        scale=[1.0],
        coef=[1.0],
        intercept=0.0,
        iso_x=[0.0, 1.0],
        iso_y=[0.0, 1.0],
        require=["coverage_rel"],
        **(empty | provenance),
    )


def load_grade_model(path: Path) -> GradeModel | None:
    """The shipped model, or None when the file is absent (a bank then gets the unfitted formula)."""
    if not path.exists():
        return None
    try:
        return GradeModel.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, json.JSONDecodeError) as e:
        raise CalibrationError(f"{path}: invalid grade model ({e}); restore it from the repository") from e


def read_variances(
    keyidea_probs: dict[str, float] | None,
    points: list[float],
    anchors: Anchors | None,
    required: int | None = None,
    evidence: bool = False,
) -> dict[str, float]:
    """Variances of the read-based features: the key-idea digit's spread and each point's Bernoulli variance,
    through the same scaling (and choice of counted points) features_of applies. `evidence`: the answer has a
    sentence to quote, so the coverage of a question of few points counts the evidence point too."""
    out: dict[str, float] = {}
    if keyidea_probs:
        mean = sum(int(d) * p for d, p in keyidea_probs.items())
        v = sum(p * (int(d) - mean) ** 2 for d, p in keyidea_probs.items()) / 25
        out["keyidea"] = v
        if anchors is not None:
            out["keyidea_rel"] = v / max(anchors.keyidea[1] - anchors.keyidea[0], MIN_SPAN) ** 2
    if points:
        keep = counted_points(points, anchors, required)
        n = len(keep)
        out["points_mean"] = sum(points[i] * (1 - points[i]) for i in keep) / n**2
        if anchors is not None and len(anchors.points) == len(points):
            spans = [max(anchors.points[i][1] - anchors.points[i][0], MIN_SPAN) for i in keep]
            each = sum(points[i] * (1 - points[i]) / s**2 for i, s in zip(keep, spans, strict=True))
            out["points_rel"] = each / n**2
            idea = [out["keyidea_rel"]] if "keyidea_rel" in out else []
            # The evidence point, when the coverage counts one, has no read variance but shares the mean.
            terms = n + len(idea) + len(evidence_point(len(points), 0.0 if evidence else math.nan))
            out["coverage_rel"] = (each + sum(idea)) / terms**2
    return out


def unfitted_fraction(row: dict[str, float]) -> float:
    """Without a fitted model (another judge model): the key-idea reading and the key points, half each."""
    parts = [v for v in (row["keyidea"], row["points_mean"]) if not math.isnan(v)]
    return float(np.clip(np.mean(parts), 0.0, 1.0)) if parts else 0.0


def unfitted_fraction_sd(variances: dict[str, float]) -> float:
    parts = [variances[f] for f in ("keyidea", "points_mean") if f in variances]
    return math.sqrt(sum(parts)) / len(parts) if parts else 0.0
