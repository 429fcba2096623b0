"""Agreement between evaluator scores and human grades, with question-level bootstrap intervals.

`metrics()` is the reference implementation (scipy, sklearn, krippendorff). `bootstrap_ci()` needs the same
numbers for 1000 resamples, so `resampled_metrics()` recomputes every metric from per-question sufficient
statistics (sums, confusion matrices, pairwise sign sums, rank contributions). A resample is then a vector of
"how many times was each question drawn", and each metric is a few small matrix products. The tests check that
both paths give the same numbers on explicitly expanded resamples.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import krippendorff
import numpy as np
from scipy import stats
from sklearn.metrics import cohen_kappa_score

METRICS: tuple[str, ...] = (
    "pearson",
    "spearman",
    "kendall",
    "qwk",
    "mae",
    "rmse",
    "exact",
    "within_one",
    "alpha_interval",
    "alpha_ordinal",
    "bias",
    "n",
)


def scale_labels(scale_min: float, scale_max: float) -> np.ndarray:
    """The integer steps of the human scale, e.g. 0..4."""
    lo, hi = math.ceil(scale_min), math.floor(scale_max)
    if hi <= lo:
        raise ValueError(f"scale [{scale_min}, {scale_max}] has fewer than two integer steps")
    return np.arange(lo, hi + 1, dtype=float)


def round_to_scale(x: np.ndarray, scale_min: float, scale_max: float) -> np.ndarray:
    """Nearest integer step inside the scale. Halves round up (np.round would round 2.5 to 2 but 3.5 to 4)."""
    labels = scale_labels(scale_min, scale_max)
    return np.clip(np.floor(np.asarray(x, dtype=float) + 0.5), labels[0], labels[-1])


def _check(pred: Sequence[float] | np.ndarray, human: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=float).ravel()
    h = np.asarray(human, dtype=float).ravel()
    if p.shape != h.shape:
        raise ValueError(f"pred has {p.size} values but human has {h.size}")
    if p.size < 2:
        raise ValueError(f"need at least 2 scored answers, got {p.size}")
    if not (np.isfinite(p).all() and np.isfinite(h).all()):
        raise ValueError("pred and human must be finite numbers (drop unscored answers first)")
    return p, h


def alpha_interval(a: np.ndarray, b: np.ndarray) -> float:
    """Krippendorff's alpha (interval) for two complete raters, in closed form.

    krippendorff.alpha builds a units x values x values array; with ~1400 distinct raw float scores that is
    billions of cells. For two raters and no missing values its formula reduces to
    1 - (n.. - 1) * sum((a - b)^2) / (n.. * SS), with n.. = 2n pooled values and SS their sum of squared
    deviations. tests/test_agreement.py checks this against krippendorff.alpha on small data.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    pooled = np.concatenate([a, b])
    ss = float(((pooled - pooled.mean()) ** 2).sum())
    if ss == 0.0:
        return float("nan")
    n_vals = pooled.size
    return 1.0 - (n_vals - 1) * float(((a - b) ** 2).sum()) / (n_vals * ss)


def metrics(
    pred: Sequence[float] | np.ndarray, human: Sequence[float] | np.ndarray, scale_min: float, scale_max: float
) -> dict[str, float]:
    """All agreement metrics for one set of (prediction, human) pairs.

    Correlations, MAE, RMSE, bias and interval alpha use the raw values; QWK, exact, within-one and ordinal
    alpha use both sides rounded to the human integer scale. Undefined values (e.g. a constant rater) are NaN.
    """
    p, h = _check(pred, human)
    labels = scale_labels(scale_min, scale_max)
    pr, hr = round_to_scale(p, scale_min, scale_max), round_to_scale(h, scale_min, scale_max)
    d = p - h
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # Constant inputs make correlations and kappas undefined; NaN says so, the warning only adds noise.
        warnings.simplefilter("ignore")
        out = {
            "pearson": float(stats.pearsonr(p, h).statistic),
            "spearman": float(stats.spearmanr(p, h).statistic),
            "kendall": float(stats.kendalltau(p, h).statistic),
            "qwk": float(cohen_kappa_score(pr, hr, labels=labels, weights="quadratic")),
            "mae": float(np.abs(d).mean()),
            "rmse": float(np.sqrt((d**2).mean())),
            "exact": float((pr == hr).mean()),
            "within_one": float((np.abs(pr - hr) <= 1).mean()),
            "alpha_interval": alpha_interval(p, h),
            "alpha_ordinal": float(
                krippendorff.alpha(reliability_data=[pr, hr], value_domain=labels, level_of_measurement="ordinal")
            ),
            "bias": float(d.mean()),
            "n": float(p.size),
        }
    return out


def group_codes(groups: Sequence[object] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unique group labels, code of each row's group as 0..G-1)."""
    labels, codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    return labels, codes.ravel()


def draw_group_counts(n_groups: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n_groups) matrix: how often each group is drawn when drawing n_groups groups with replacement."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot).astype(float)


def _weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pearson r per row of w (and of x, y if they are 2-D), i.e. on samples where row i appears w[b, i] times."""
    n = w.sum(axis=1)
    mx = (w * x).sum(axis=1) / n
    my = (w * y).sum(axis=1) / n
    xc = x - mx[:, None]
    yc = y - my[:, None]
    cov = (w * xc * yc).sum(axis=1)
    return cov / np.sqrt((w * xc * xc).sum(axis=1) * (w * yc * yc).sum(axis=1))


def _rank_contributions(x: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """(n, G): how much one copy of group g adds to row i's midrank of x.

    In a resample where group g appears c_g times, row i's midrank is sum_g c_g * L[i, g] + 1/2
    (values below x_i count once, ties count a half), which is linear in the counts.
    """
    out = np.empty((x.size, n_groups))
    for g in range(n_groups):
        xs = np.sort(x[codes == g])
        below = np.searchsorted(xs, x, side="left")
        at_or_below = np.searchsorted(xs, x, side="right")
        out[:, g] = below + 0.5 * (at_or_below - below)
    return out


def _pair_sums(p: np.ndarray, h: np.ndarray, codes: np.ndarray, n_groups: int) -> tuple[np.ndarray, ...]:
    """G x G sums over row pairs (i in g, j in h) of sign(dp)*sign(dh), [p_i != p_j] and [h_i != h_j] (Kendall's tau-b)."""
    concordance = np.zeros((n_groups, n_groups))
    p_differs = np.zeros((n_groups, n_groups))
    h_differs = np.zeros((n_groups, n_groups))
    for g in range(n_groups):
        rows = codes == g
        sp = np.sign(p[rows][:, None] - p[None, :])
        sh = np.sign(h[rows][:, None] - h[None, :])
        concordance[g] = np.bincount(codes, weights=(sp * sh).sum(axis=0), minlength=n_groups)
        p_differs[g] = np.bincount(codes, weights=np.abs(sp).sum(axis=0), minlength=n_groups)
        h_differs[g] = np.bincount(codes, weights=np.abs(sh).sum(axis=0), minlength=n_groups)
    return concordance, p_differs, h_differs


def _quadratic_form(c: np.ndarray, m: np.ndarray) -> np.ndarray:
    return ((c @ m) * c).sum(axis=1)


class _Totals(NamedTuple):
    """Per-resample totals (one value per resample) of the per-row quantities the metrics are built from.

    p and h are summed centred on their full-sample means, so the one-pass variance formulas do not cancel badly.
    """

    n: np.ndarray
    d: np.ndarray  # p - h
    abs_d: np.ndarray
    d2: np.ndarray
    exact: np.ndarray  # rounded levels equal
    within_one: np.ndarray  # rounded levels at most one step apart
    p: np.ndarray
    h: np.ndarray
    pp: np.ndarray
    hh: np.ndarray
    ph: np.ndarray
    conf: np.ndarray  # (B, K, K): conf[b, pred level, human level]

    @property
    def ss_p(self) -> np.ndarray:
        return self.pp - self.p**2 / self.n

    @property
    def ss_h(self) -> np.ndarray:
        return self.hh - self.h**2 / self.n


def resampled_metrics(
    pred: Sequence[float] | np.ndarray,
    human: Sequence[float] | np.ndarray,
    codes: np.ndarray,
    counts: np.ndarray,
    scale_min: float,
    scale_max: float,
) -> dict[str, np.ndarray]:
    """Every metric of `metrics()` for each resample, without materialising the resamples.

    codes: group index (0..G-1) of each row; counts: (B, G), how often each group is in resample b.
    Resample b equals `metrics()` on the rows of group g repeated counts[b, g] times.
    """
    p, h = _check(pred, human)
    codes = np.asarray(codes, dtype=int)
    counts = np.atleast_2d(np.asarray(counts, dtype=float))
    labels = scale_labels(scale_min, scale_max)
    pr = (round_to_scale(p, scale_min, scale_max) - labels[0]).astype(int)
    hr = (round_to_scale(h, scale_min, scale_max) - labels[0]).astype(int)
    t = _resampled_totals(p, h, pr, hr, codes, counts, labels.size)
    with np.errstate(all="ignore"):
        return _resampled_correlations(p, h, codes, counts, t) | _resampled_agreement(p, h, t)


def _resampled_totals(
    p: np.ndarray, h: np.ndarray, pr: np.ndarray, hr: np.ndarray, codes: np.ndarray, counts: np.ndarray, k: int
) -> _Totals:
    """Per-row quantities whose resample totals are plain weighted sums: summed per group once, then counts @ sums.
    pr, hr: the rounded levels as 0..k-1."""
    d = p - h
    pc, hc = p - p.mean(), h - h.mean()
    linear = np.column_stack(
        [np.ones_like(p), d, np.abs(d), d * d, pr == hr, np.abs(pr - hr) <= 1, pc, hc, pc * pc, hc * hc, pc * hc]
    )
    confusion = np.zeros((p.size, k * k))
    confusion[np.arange(p.size), pr * k + hr] = 1.0
    per_group = np.zeros((counts.shape[1], linear.shape[1] + k * k))
    np.add.at(per_group, codes, np.hstack([linear, confusion]))
    t = counts @ per_group
    return _Totals._make([*t[:, :11].T, t[:, 11:].reshape(-1, k, k)])


def _resampled_correlations(
    p: np.ndarray, h: np.ndarray, codes: np.ndarray, counts: np.ndarray, t: _Totals
) -> dict[str, np.ndarray]:
    """Pearson, Spearman and Kendall tau-b per resample."""
    n_groups = counts.shape[1]
    out = {"pearson": (t.ph - t.p * t.h / t.n) / np.sqrt(t.ss_p * t.ss_h)}

    weights = counts[:, codes]
    rank_p = counts @ _rank_contributions(p, codes, n_groups).T
    rank_h = counts @ _rank_contributions(h, codes, n_groups).T
    out["spearman"] = _weighted_pearson(rank_p, rank_h, weights)

    # Kendall tau-b on the expanded sample: copies of one row tie on both sides, so they add nothing to the
    # numerator and count as ties in both denominators, exactly as in scipy on the duplicated data.
    concordance, p_differs, h_differs = _pair_sums(p, h, codes, n_groups)
    out["kendall"] = _quadratic_form(counts, concordance) / np.sqrt(
        _quadratic_form(counts, p_differs) * _quadratic_form(counts, h_differs)
    )
    return out


def _resampled_agreement(p: np.ndarray, h: np.ndarray, t: _Totals) -> dict[str, np.ndarray]:
    """Quadratic kappa, the error metrics, both alphas, bias and n per resample."""
    n, conf = t.n, t.conf
    steps = np.arange(conf.shape[1])
    w_quad = (steps[:, None] - steps[None, :]) ** 2
    expected = conf.sum(axis=2)[:, :, None] * conf.sum(axis=1)[:, None, :] / n[:, None, None]
    out = {"qwk": 1.0 - (conf * w_quad).sum(axis=(1, 2)) / (expected * w_quad).sum(axis=(1, 2))}

    out["mae"] = t.abs_d / n
    out["rmse"] = np.sqrt(t.d2 / n)
    out["exact"] = t.exact / n
    out["within_one"] = t.within_one / n

    # Interval alpha from pooled sums of squares (see alpha_interval()); p, h centred on different means,
    # so rebuild the pooled SS from the uncentred parts: SS = SS_p + SS_h + n/2 * (mean_p - mean_h)^2.
    mean_p = p.mean() + t.p / n
    mean_h = h.mean() + t.h / n
    pooled_ss = t.ss_p + t.ss_h + n / 2 * (mean_p - mean_h) ** 2
    out["alpha_interval"] = 1.0 - (2 * n - 1) * t.d2 / (2 * n * pooled_ss)

    out["alpha_ordinal"] = _ordinal_alpha(conf)
    out["bias"] = t.d / n
    out["n"] = n
    return out


def _ordinal_alpha(conf: np.ndarray) -> np.ndarray:
    """Krippendorff's ordinal alpha for two raters from (B, K, K) confusion matrices, as krippendorff.alpha does it."""
    coincidence = conf + conf.transpose(0, 2, 1)
    n_v = coincidence.sum(axis=1)  # (B, K) pooled frequency of each level
    total = n_v.sum(axis=1)
    k = n_v.shape[1]
    lo = np.minimum.outer(np.arange(k), np.arange(k))
    hi = np.maximum.outer(np.arange(k), np.arange(k))
    cum = np.cumsum(n_v, axis=1)
    between = cum[:, hi] - cum[:, lo] + n_v[:, lo]  # frequencies from level lo to level hi, inclusive
    delta = (between - (n_v[:, :, None] + n_v[:, None, :]) / 2) ** 2
    expected = (n_v[:, :, None] * n_v[:, None, :]) / (total - 1)[:, None, None]  # diagonal has delta 0
    return 1.0 - (coincidence * delta).sum(axis=(1, 2)) / (expected * delta).sum(axis=(1, 2))


def bootstrap_ci(
    pred: Sequence[float] | np.ndarray,
    human: Sequence[float] | np.ndarray,
    groups: Sequence[object] | np.ndarray,
    scale_min: float,
    scale_max: float,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """95% percentile intervals for every metric, resampling whole groups (questions) with replacement.

    Answers to one question are not independent (same rubric, same difficulty), so resampling answers would
    give intervals that are too narrow; drawing questions keeps each question's answers together.
    """
    p, h = _check(pred, human)
    _, codes = group_codes(groups)
    if codes.size != p.size:
        raise ValueError(f"groups has {codes.size} values but pred has {p.size}")
    counts = draw_group_counts(int(codes.max()) + 1, n_boot, seed)
    reps = resampled_metrics(p, h, codes, counts, scale_min, scale_max)
    out: dict[str, tuple[float, float]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # all-NaN metric (e.g. constant predictions): the interval is NaN
        for name in METRICS:
            lo, hi = np.nanpercentile(reps[name], [2.5, 97.5])
            out[name] = (float(lo), float(hi))
    return out
