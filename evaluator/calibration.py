"""Map evaluator outputs onto the human scale, fitted on human-graded answers and checked out of sample.

Three candidates: isotonic regression on the final score (monotone, needs nothing but the score), ridge
regression on all evaluator features, and ridge on those features with their squares and pairwise products
("quadratic"). All are judged by cross-validation that holds out whole questions,
because the mapping will be used on questions it has never seen; the "within" split (answers of seen
questions) is available for comparison. A fitted mapping is a small versioned JSON file that needs only
numpy to apply.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Mapping as AnyMapping
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import Ridge
from sklearn.model_selection import GroupKFold, KFold

from evaluator import agreement
from evaluator.errors import CalibrationError

MAPPING_VERSION = "1"

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

# Ridge penalties tried by inner grouped CV (features are standardised, so one grid fits all data sets).
RIDGE_ALPHAS: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)

Kind = Literal["isotonic", "ridge", "quadratic"]
KINDS: tuple[Kind, ...] = get_args(Kind)
# The ridge kinds and the degree of their feature expansion (see expand()).
RIDGE_DEGREE: dict[str, int] = {"ridge": 1, "quadratic": 2}
Split = Literal["group", "within"]
Row = AnyMapping[str, Any]


# ---------------------------------------------------------------------------------------------------- features


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
        return _predict(self.kind, self.isotonic, self.ridge, self.features, rows, self.scale_min, self.scale_max)

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


# ---------------------------------------------------------------------------------------------------- fitting


def _fit(
    kind: Kind,
    rows: Sequence[Row],
    human: np.ndarray,
    groups: np.ndarray,
    scale_min: float,
    scale_max: float,
) -> tuple[list[str], IsotonicParams | None, RidgeParams | None]:
    """Fit one candidate on these rows. Returns (feature names, isotonic params, ridge params)."""
    if kind == "isotonic":
        score = feature_matrix(rows, ["score"])[:, 0]
        # increasing=True: a higher evaluator score must never map to a lower human-scale score.
        iso = IsotonicRegression(y_min=scale_min, y_max=scale_max, increasing=True, out_of_bounds="clip")
        iso.fit(score, human)
        return (
            ["score"],
            IsotonicParams(x_thresholds=iso.X_thresholds_.tolist(), y_thresholds=iso.y_thresholds_.tolist()),
            None,
        )
    if kind not in RIDGE_DEGREE:
        raise CalibrationError(f"unknown calibration kind {kind!r}; use one of {', '.join(KINDS)} or 'auto'")
    degree = RIDGE_DEGREE[kind]

    names = feature_names(rows)
    x = feature_matrix(rows, names)
    # Criteria of questions not in these rows get no feature at all (apply() ignores them). A fixed feature that
    # no row has (e.g. key_point_coverage never computed) is imputed 0, so it is constant and ridge gives it no weight.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice" for those all-missing columns
        impute = np.nan_to_num(np.nanmean(x, axis=0), nan=0.0)
    x = np.where(np.isnan(x), impute, x)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    z = expand((x - mean) / scale, degree)
    alpha = _choose_alpha(z, human, groups)
    ridge = Ridge(alpha=alpha).fit(z, human)
    params = RidgeParams(
        alpha=alpha,
        degree=degree,
        impute=impute.tolist(),
        mean=mean.tolist(),
        scale=scale.tolist(),
        coef=ridge.coef_.tolist(),
        intercept=float(ridge.intercept_),
    )
    return names, None, params


def expand(z: np.ndarray, degree: int) -> np.ndarray:
    """Degree 2 appends z_i * z_j for i <= j (squares and pairwise products) to the standardised features."""
    if degree == 1:
        return z
    i, j = np.triu_indices(z.shape[1])
    return np.hstack([z, z[:, i] * z[:, j]])


def _choose_alpha(z: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    """Ridge penalty with the lowest inner grouped-CV squared error (held-out questions, like the outer CV)."""
    n_groups = np.unique(groups).size
    if n_groups < 3:
        return 1.0  # too few questions to cross-validate a penalty; a mild default
    splits = list(GroupKFold(n_splits=min(5, n_groups)).split(z, y, groups))
    errors = []
    for alpha in RIDGE_ALPHAS:
        sse = 0.0
        for train, test in splits:
            model = Ridge(alpha=alpha).fit(z[train], y[train])
            sse += float(((model.predict(z[test]) - y[test]) ** 2).sum())
        errors.append(sse)
    return float(RIDGE_ALPHAS[int(np.argmin(errors))])


def _predict(
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


def _check_inputs(
    rows: Sequence[Row], human: Sequence[float] | np.ndarray, groups: Sequence[object] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(human, dtype=float).ravel()
    g = np.asarray(groups).astype(str).ravel()
    if not (len(rows) == y.size == g.size):
        raise CalibrationError(f"rows, human grades and groups differ in length: {len(rows)}, {y.size}, {g.size}")
    if not np.isfinite(y).all():
        raise CalibrationError("every training row needs a numeric human grade (drop ungraded answers first)")
    if np.unique(g).size < 2:
        raise CalibrationError("calibration needs human grades for at least 2 questions (groups)")
    return y, g


def fold_indices(
    groups: Sequence[object] | np.ndarray, folds: int = 5, seed: int = 0, split: Split = "group"
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) row indices per fold.

    split="group": whole groups (questions) are held out, shuffled by seed, so no question is on both sides.
    split="within": plain shuffled KFold over answers, so test questions also have answers in training.
    """
    g = np.asarray(groups).astype(str).ravel()
    placeholder = np.zeros(g.size)
    if split == "group":
        n_splits = min(folds, np.unique(g).size)
        if n_splits < 2:
            raise CalibrationError("grouped cross-validation needs at least 2 questions")
        splitter = GroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        return list(splitter.split(placeholder, groups=g))
    if split == "within":
        n_splits = min(folds, g.size)
        if n_splits < 2:
            raise CalibrationError("cross-validation needs at least 2 rows")
        return list(KFold(n_splits=n_splits, shuffle=True, random_state=seed).split(placeholder))
    raise CalibrationError(f"unknown split {split!r}; use 'group' or 'within'")


def cross_val_predict_grouped(
    rows: Sequence[Row],
    human: Sequence[float] | np.ndarray,
    groups: Sequence[object] | np.ndarray,
    kind: Kind,
    folds: int = 5,
    seed: int = 0,
    split: Split = "group",
    scale_min: float | None = None,
    scale_max: float | None = None,
) -> np.ndarray:
    """Out-of-fold calibrated predictions for every row (each predicted by a model that never saw its fold).

    The scale defaults to the range of the human grades; pass the rubric's scale to clip like fit_mapping does.
    """
    y, g = _check_inputs(rows, human, groups)
    lo = float(y.min()) if scale_min is None else scale_min
    hi = float(y.max()) if scale_max is None else scale_max
    out = np.empty(y.size)
    for train, test in fold_indices(g, folds, seed, split):
        train_rows = [rows[i] for i in train]
        names, iso, ridge = _fit(kind, train_rows, y[train], g[train], lo, hi)
        out[test] = _predict(kind, iso, ridge, names, [rows[i] for i in test], lo, hi)
    return out


def _nan_to_none(values: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in values.items()}


def fit_mapping(
    rows: Sequence[Row],
    human: Sequence[float] | np.ndarray,
    groups: Sequence[object] | np.ndarray,
    scale_min: float,
    scale_max: float,
    kind: Literal["auto", "isotonic", "ridge", "quadratic"] = "auto",
    folds: int = 5,
    seed: int = 0,
    fitted_for: dict[str, str] | None = None,
) -> Mapping:
    """Fit the evaluator-to-human mapping.

    Every candidate is scored by grouped CV (held-out questions); kind="auto" keeps the lowest RMSE. The chosen
    kind is then refitted on all rows. Predictions are clipped to [scale_min, scale_max].
    """
    if kind != "auto" and kind not in KINDS:
        raise CalibrationError(f"unknown calibration kind {kind!r}; use 'auto' or one of {', '.join(KINDS)}")
    y, g = _check_inputs(rows, human, groups)
    cv_metrics: dict[str, dict[str, float]] = {}
    for candidate in KINDS:
        oof = cross_val_predict_grouped(rows, y, g, candidate, folds, seed, "group", scale_min, scale_max)
        cv_metrics[candidate] = agreement.metrics(oof, y, scale_min, scale_max)
    chosen: Kind = min(KINDS, key=lambda c: cv_metrics[c]["rmse"]) if kind == "auto" else kind
    raw = feature_matrix(rows, ["score"])[:, 0]
    names, iso, ridge = _fit(chosen, rows, y, g, scale_min, scale_max)
    return Mapping(
        kind=chosen,
        selection="auto" if kind == "auto" else "requested",
        features=names,
        scale_min=scale_min,
        scale_max=scale_max,
        isotonic=iso,
        ridge=ridge,
        training_hash=training_hash(rows, y),
        fitted_for=fitted_for,
        n_train=int(y.size),
        n_groups=int(np.unique(g).size),
        folds=min(folds, int(np.unique(g).size)),
        seed=seed,
        cv_metrics={k: _nan_to_none(v) for k, v in cv_metrics.items()},
        raw_metrics=_nan_to_none(agreement.metrics(raw, y, scale_min, scale_max)),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def reading_of(provenance: dict) -> dict[str, str]:
    """What a mapping's fit depends on, from a verdict's provenance (a dict, as in verdicts.jsonl)."""
    return {
        "judge": f"{provenance.get('judge_backend')}:{provenance.get('judge_model')}",
        "mode": str(provenance.get("judge_mode")),
        "rubric": f"{provenance.get('rubric_id')}@{provenance.get('rubric_version')}",
        "embedder": str(provenance.get("embedding_model")),
    }
