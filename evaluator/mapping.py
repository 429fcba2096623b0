"""A fitted evaluator-to-human mapping, applied: the feature row, its features, the versioned JSON file, numpy maths.

Grading applies a mapping to every answer, so this module needs only numpy and pydantic; fitting one (sklearn,
cross-validation, agreement metrics) is in calibration.py. The feature row is built here once, by
mapping_features(), both while scoring and from a stored verdict, so both give a mapping the same keys.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping as AnyMapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from .errors import CalibrationError

MAPPING_VERSION: Literal["1"] = "1"

# Fixed features, in order. One feature per rubric criterion, named CRITERION_PREFIX + id and sorted by id, is
# inserted after "holistic"; which criteria exist depends on the training rows, so the list lives in the Mapping.
FEATURES: tuple[str, ...] = (
    "score",
    "holistic",
    "similarity",
    "key_point_coverage",
    "lexical_overlap",
    "log1p_answer_chars",
    # Answer length relative to the reference: short answers to long references tend to miss content.
    "log_length_ratio",
)
CRITERION_PREFIX = "criterion:"

Kind = Literal["isotonic", "ridge", "quadratic"]
KINDS: tuple[Kind, ...] = get_args(Kind)
# The ridge kinds and the degree of their feature expansion (see expand()).
RIDGE_DEGREE: dict[str, Literal[1, 2]] = {"ridge": 1, "quadratic": 2}
Row = AnyMapping[str, Any]


# ---------------------------------------------------------------------------------------------------- features


def mapping_features(
    question_id: str,
    score: float | None,
    holistic: float | None,
    criteria: AnyMapping[str, float],
    similarity: AnyMapping[str, Any] | None,
    answer_chars: int,
) -> dict[str, Any]:
    """The row a mapping reads its FEATURES from (see _feature_value), the same whether built while scoring or
    from a stored verdict. similarity: the Similarity figures by field name (a model_dump or a verdict's JSON)."""
    sim = similarity or {}
    return {
        "question_id": question_id,
        "score": score,
        "holistic": holistic,
        "criteria": criteria,
        "similarity": sim.get("best_reference"),
        "key_point_coverage": sim.get("key_point_coverage"),
        "lexical_overlap": sim.get("lexical_overlap"),
        "reference_chars": sim.get("reference_chars"),
        "answer_chars": answer_chars,
    }


def feature_names(rows: Sequence[Row]) -> list[str]:
    """Feature names for these rows: FEATURES with one entry per criterion id seen, sorted, after holistic."""
    criteria = sorted({str(cid) for row in rows for cid in (row.get("criteria") or {})})
    return [FEATURES[0], FEATURES[1], *(CRITERION_PREFIX + c for c in criteria), *FEATURES[2:]]


def _number(value: Any) -> float:
    """A finite float, or NaN for missing (None, NaN, absent)."""
    if value is None:
        return math.nan
    x = float(value)
    return x if math.isfinite(x) else math.nan


def _feature_value(row: Row, name: str) -> float:
    if name.startswith(CRITERION_PREFIX):
        return _number((row.get("criteria") or {}).get(name[len(CRITERION_PREFIX) :]))
    if name == "log_length_ratio":
        chars, ref = _number(row.get("answer_chars")), _number(row.get("reference_chars"))
        if math.isnan(chars) or math.isnan(ref):
            return math.nan
        return math.log1p(max(chars, 0.0)) - math.log1p(max(ref, 0.0))
    if name == "log1p_answer_chars":
        chars = _number(row.get("answer_chars"))
        return math.log1p(max(chars, 0.0)) if not math.isnan(chars) else math.nan
    return _number(row.get(name))


def feature_matrix(rows: Sequence[Row], names: Sequence[str]) -> np.ndarray:
    """(n, len(names)) float matrix, NaN where a row lacks a value. The score is required."""
    x = np.array([[_feature_value(row, name) for name in names] for row in rows], dtype=float).reshape(len(rows), -1)
    if "score" in names:
        missing = np.isnan(x[:, list(names).index("score")])
        if missing.any():
            bad = [str(rows[i].get("answer_id", f"row {i}")) for i in np.flatnonzero(missing)[:5]]
            raise CalibrationError(
                f"{int(missing.sum())} row(s) have no numeric evaluator score, e.g. {', '.join(bad)}"
            )
    return x


def training_hash(rows: Sequence[Row], human: Sequence[float] | np.ndarray) -> str:
    """sha256 over (answer_id, human grade, feature values) sorted by answer id: the same data in any order
    gives the same hash, and any changed grade or feature changes it."""
    names = feature_names(rows)
    x = feature_matrix(rows, names)
    records = sorted(
        (str(row.get("answer_id")), float(h), [None if math.isnan(v) else v for v in x[i]])
        for i, (row, h) in enumerate(zip(rows, human, strict=True))
    )
    payload = json.dumps({"features": names, "rows": records}, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def reading_of(provenance: dict) -> dict[str, str]:
    """What a mapping's fit depends on, from a verdict's provenance (a dict, as in verdicts.jsonl)."""
    return {
        "judge": f"{provenance.get('judge_backend')}:{provenance.get('judge_model')}",
        "mode": str(provenance.get("judge_mode")),
        "rubric": f"{provenance.get('rubric_id')}@{provenance.get('rubric_version')}",
        "embedder": str(provenance.get("embedding_model")),
    }


# ---------------------------------------------------------------------------------------------------- model


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IsotonicParams(_Strict):
    """Piecewise-linear map of the score through these points, clipped beyond the ends (sklearn's thresholds)."""

    x_thresholds: list[float]
    y_thresholds: list[float]


class RidgeParams(_Strict):
    alpha: float
    # 2: the standardised features plus their squares and pairwise products (kind "quadratic"): the judge's
    # reading and the similarity features do not add up linearly (a short answer with a high key-idea reading is
    # not the same as a long one), and measured on the Mohler data this fits held-out questions better.
    degree: Literal[1, 2] = 1
    impute: list[float]  # training mean per feature, used where a row lacks the value
    mean: list[float]  # standardisation, after imputation
    scale: list[float]
    coef: list[float]
    intercept: float


class Mapping(_Strict):
    """A fitted evaluator-to-human mapping: everything needed to apply it, and where it came from."""

    version: Literal["1"] = MAPPING_VERSION
    kind: Kind
    selection: Literal["auto", "requested"]  # auto: lowest grouped-CV RMSE among cv_metrics
    features: list[str]
    scale_min: float
    scale_max: float
    isotonic: IsotonicParams | None = None
    ridge: RidgeParams | None = None
    training_hash: str
    n_train: int
    n_groups: int
    folds: int
    seed: int
    # Out-of-sample metrics of every candidate (pooled out-of-fold predictions, folds hold out whole questions),
    # and of the raw evaluator score, which involves no fitting. NaN is stored as null.
    cv_metrics: dict[str, dict[str, float | None]]
    raw_metrics: dict[str, float | None]
    created: str
    # The readings it was fitted on (judge, mode, rubric, embedder, from the verdicts' provenance). A rubric's
    # shipped mapping applies only to the same readings; a mapping passed with --calibration applies as asked.
    fitted_for: dict[str, str] | None = None

    def fits(self, reading: dict[str, str]) -> bool:
        return self.fitted_for is not None and all(self.fitted_for.get(k) == v for k, v in reading.items())

    @model_validator(mode="after")
    def _params_match_kind(self) -> Mapping:
        if self.kind == "isotonic":
            if self.isotonic is None:
                raise ValueError("kind is 'isotonic' but the 'isotonic' parameters are missing")
            if len(self.isotonic.x_thresholds) != len(self.isotonic.y_thresholds) or not self.isotonic.x_thresholds:
                raise ValueError("isotonic x_thresholds and y_thresholds must be non-empty and of equal length")
        else:
            if self.ridge is None:
                raise ValueError(f"kind is '{self.kind}' but the 'ridge' parameters are missing")
            r = self.ridge
            if r.degree != RIDGE_DEGREE[self.kind]:
                raise ValueError(f"kind '{self.kind}' does not match ridge degree {r.degree}")
            n = len(self.features)
            if {n, len(r.impute), len(r.mean), len(r.scale)} != {n}:
                raise ValueError("ridge impute/mean/scale must each have one value per feature")
            needed = n if r.degree == 1 else n + n * (n + 1) // 2
            if len(r.coef) != needed:
                raise ValueError(
                    f"ridge coef has {len(r.coef)} values; degree {r.degree} over {n} features needs {needed}"
                )
        if self.scale_max <= self.scale_min:
            raise ValueError("scale_max must be greater than scale_min")
        return self

    @property
    def id(self) -> str:
        """Short content hash, recorded with every calibrated grade for provenance."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]

    def predict(self, rows: Sequence[Row]) -> np.ndarray:
        """Calibrated scores on the human scale for several rows."""
        return predict_params(self.kind, self.isotonic, self.ridge, self.features, rows, self.scale_min, self.scale_max)

    def apply(self, row: Row) -> float:
        """Calibrated score on the human scale for one row (keys as in the training rows)."""
        return float(self.predict([row])[0])

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path


def load_mapping(path: str | Path) -> Mapping:
    """Read a mapping saved by Mapping.save; any problem is a CalibrationError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CalibrationError(f"{path}: calibration mapping file not found") from None
    except OSError as exc:
        raise CalibrationError(f"{path}: cannot read calibration mapping: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CalibrationError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise CalibrationError(f"{path}: expected a JSON object, got {type(data).__name__}")
    if data.get("version") != MAPPING_VERSION:
        raise CalibrationError(
            f"{path}: calibration mapping version {data.get('version')!r} is not supported "
            f"(this evaluator reads version {MAPPING_VERSION!r}); refit it with this version"
        )
    try:
        return Mapping.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        raise CalibrationError(f"{path}: invalid calibration mapping: {problems}") from None


# ---------------------------------------------------------------------------------------------------- applying


def expand(z: np.ndarray, degree: int) -> np.ndarray:
    """Degree 2 appends z_i * z_j for i <= j (squares and pairwise products) to the standardised features."""
    if degree == 1:
        return z
    i, j = np.triu_indices(z.shape[1])
    return np.hstack([z, z[:, i] * z[:, j]])


def predict_params(
    kind: Kind,
    isotonic: IsotonicParams | None,
    ridge: RidgeParams | None,
    names: Sequence[str],
    rows: Sequence[Row],
    scale_min: float,
    scale_max: float,
) -> np.ndarray:
    """Apply fitted parameters with numpy only, so a saved mapping does not depend on sklearn's pickles."""
    x = feature_matrix(rows, names)
    if kind == "isotonic":
        assert isotonic is not None
        # np.interp is linear between thresholds and constant beyond them: sklearn's out_of_bounds="clip".
        pred = np.interp(x[:, 0], isotonic.x_thresholds, isotonic.y_thresholds)
    else:
        assert ridge is not None
        x = np.where(np.isnan(x), np.asarray(ridge.impute), x)
        z = expand((x - np.asarray(ridge.mean)) / np.asarray(ridge.scale), ridge.degree)
        pred = z @ np.asarray(ridge.coef) + ridge.intercept
    return np.clip(pred, scale_min, scale_max)
