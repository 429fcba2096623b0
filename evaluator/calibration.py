"""Fit the evaluator-to-human mapping on human-graded answers, and check it out of sample.

Three candidates: isotonic regression on the final score (monotone, needs nothing but the score), ridge
regression on all evaluator features, and ridge on those features with their squares and pairwise products
("quadratic"). All are judged by cross-validation that holds out whole questions,
because the mapping will be used on questions it has never seen; the "within" split (answers of seen
questions) is available for comparison. The fitted Mapping (mapping.py) is a small versioned JSON file that
needs only numpy to apply, so grading never imports this module.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import Ridge
from sklearn.model_selection import GroupKFold, KFold

from evaluator import agreement
from evaluator.errors import CalibrationError
from evaluator.mapping import (
    KINDS,
    RIDGE_DEGREE,
    IsotonicParams,
    Kind,
    Mapping,
    RidgeParams,
    Row,
    expand,
    feature_matrix,
    feature_names,
    predict_params,
    training_hash,
)

# Ridge penalties tried by inner grouped CV (features are standardised, so one grid fits all data sets).
RIDGE_ALPHAS: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)

Split = Literal["group", "within"]


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
        out[test] = predict_params(kind, iso, ridge, names, [rows[i] for i in test], lo, hi)
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
