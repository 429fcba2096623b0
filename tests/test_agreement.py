"""Agreement metrics against numbers worked out by hand, and the question-level bootstrap."""

from __future__ import annotations

import math
import time

import krippendorff
import numpy as np
import pytest

from evaluator import agreement

# Six answers on a 0-4 scale. Rounded (halves up): pred -> [0, 1, 3, 3, 4, 2]; human stays [0, 1, 2, 4, 3, 2].
PRED = [0.0, 1.0, 2.5, 3.0, 4.0, 1.5]
HUMAN = [0.0, 1.0, 2.0, 4.0, 3.0, 2.0]
PRED_ROUNDED = [0, 1, 3, 3, 4, 2]


@pytest.fixture(scope="module")
def table() -> dict[str, float]:
    return agreement.metrics(PRED, HUMAN, 0, 4)


def test_error_metrics_by_hand(table: dict[str, float]) -> None:
    # d = pred - human = [0, 0, .5, -1, 1, -.5]
    assert table["mae"] == pytest.approx((0 + 0 + 0.5 + 1 + 1 + 0.5) / 6)  # 0.5
    assert table["rmse"] == pytest.approx(math.sqrt((0 + 0 + 0.25 + 1 + 1 + 0.25) / 6))  # sqrt(5/12)
    assert table["bias"] == pytest.approx(0.0)
    # rounded pairs (0,0) (1,1) (3,2) (3,4) (4,3) (2,2): three equal, all within one step
    assert table["exact"] == pytest.approx(3 / 6)
    assert table["within_one"] == pytest.approx(1.0)
    assert table["n"] == 6


def test_rounding_is_half_up_and_clipped() -> None:
    assert agreement.round_to_scale(np.array(PRED), 0, 4).tolist() == PRED_ROUNDED
    assert agreement.round_to_scale(np.array([-0.7, 0.49, 3.5, 9.0]), 0, 4).tolist() == [0, 0, 4, 4]


def test_correlations_by_hand(table: dict[str, float]) -> None:
    # Pearson: both means are 2. Centred pred [-2,-1,.5,1,2,-.5], centred human [-2,-1,0,2,1,0].
    sxy = 4 + 1 + 0 + 2 + 2 + 0
    sxx = 4 + 1 + 0.25 + 1 + 4 + 0.25
    syy = 4 + 1 + 0 + 4 + 1 + 0
    assert table["pearson"] == pytest.approx(sxy / math.sqrt(sxx * syy))  # 9 / sqrt(105)
    # Spearman: ranks pred [1,2,4,5,6,3], human [1,2,3.5,6,5,3.5] (the two 2s share 3.5); Pearson of ranks.
    # Centred: [-2.5,-1.5,.5,1.5,2.5,-.5] and [-2.5,-1.5,0,2.5,1.5,0].
    assert table["spearman"] == pytest.approx(16 / math.sqrt(17.5 * 17))
    # Kendall tau-b: of 15 pairs, 13 concordant, 1 discordant (answers 4 and 5), 1 tied in human (3 and 6).
    assert table["kendall"] == pytest.approx((13 - 1) / math.sqrt(15 * (15 - 1)))


def test_qwk_from_confusion_matrix_formula(table: dict[str, float]) -> None:
    k = 5
    observed = np.zeros((k, k))
    for p, h in zip(PRED_ROUNDED, HUMAN, strict=True):
        observed[p, int(h)] += 1
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    weight = np.array([[(i - j) ** 2 / (k - 1) ** 2 for j in range(k)] for i in range(k)])
    by_formula = 1 - (weight * observed).sum() / (weight * expected).sum()
    # By hand: observed weighted disagreement 3 (three cells one step off); expected
    # sum r_i c_j (i-j)^2 / 6 = (6*39 + 6*34 - 2*13*12) / 6 = 21, so 1 - 3/21.
    assert by_formula == pytest.approx(6 / 7)
    assert table["qwk"] == pytest.approx(6 / 7)


def test_krippendorff_alphas_by_hand(table: dict[str, float]) -> None:
    # Interval, two raters: 1 - (n.. - 1) * sum d^2 / (n.. * SS); n.. = 12 pooled values with mean 2, SS = 10.5 + 10.
    assert table["alpha_interval"] == pytest.approx(1 - 11 * 2.5 / (12 * 20.5))
    # Ordinal on rounded values. Pooled level counts n = [2, 2, 3, 3, 2]; coincidences off the diagonal:
    # o[2,3] = o[3,2] = 1, o[3,4] = o[4,3] = 2. delta(c,k) = (sum of n from c to k - (n_c + n_k)/2)^2.
    n = [2, 2, 3, 3, 2]

    def delta(c: int, k: int) -> float:
        lo, hi = min(c, k), max(c, k)
        return (sum(n[lo : hi + 1]) - (n[c] + n[k]) / 2) ** 2

    assert delta(2, 3) == 9 and delta(3, 4) == 6.25
    observed = 2 * 1 * delta(2, 3) + 2 * 2 * delta(3, 4)  # 43
    expected = sum(n[c] * n[k] * delta(c, k) for c in range(5) for k in range(5)) / (sum(n) - 1)  # 3300 / 11
    assert observed / expected == pytest.approx(43 * 11 / 3300)
    assert table["alpha_ordinal"] == pytest.approx(1 - 43 * 11 / 3300)


def test_interval_alpha_closed_form_matches_krippendorff() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(2, 1, 40)
    b = a + rng.normal(0.3, 0.7, 40)
    expected = krippendorff.alpha(reliability_data=[a, b], level_of_measurement="interval")
    assert agreement.alpha_interval(a, b) == pytest.approx(expected)


def test_rejects_mismatched_or_too_short_input() -> None:
    with pytest.raises(ValueError, match="pred has 2 values but human has 3"):
        agreement.metrics([1, 2], [1, 2, 3], 0, 4)
    with pytest.raises(ValueError, match="at least 2"):
        agreement.metrics([1], [1], 0, 4)


def _data(n_groups: int, per_group: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"q{i}" for i in range(n_groups)], per_group)
    human = rng.integers(0, 5, groups.size).astype(float)
    pred = np.clip(human + rng.normal(0, 0.9, groups.size), 0, 4)
    pred[::5] = np.round(pred[::5])  # ties on both sides, which Spearman and Kendall must handle
    return pred, human, groups


def test_resampled_metrics_equal_metrics_on_the_expanded_resample() -> None:
    pred, human, groups = _data(12, 7, seed=1)
    _, codes = agreement.group_codes(groups)
    counts = agreement.draw_group_counts(12, 4, seed=5)
    reps = agreement.resampled_metrics(pred, human, codes, counts, 0, 4)
    for b in range(counts.shape[0]):
        rows = np.concatenate([np.repeat(np.flatnonzero(codes == g), int(c)) for g, c in enumerate(counts[b])])
        direct = agreement.metrics(pred[rows], human[rows], 0, 4)
        for name in agreement.METRICS:
            assert reps[name][b] == pytest.approx(direct[name], abs=1e-9), name


def test_bootstrap_interval_contains_point_estimate() -> None:
    pred, human, groups = _data(30, 10, seed=2)
    point = agreement.metrics(pred, human, 0, 4)
    ci = agreement.bootstrap_ci(pred, human, groups, 0, 4, n_boot=500, seed=0)
    assert set(ci) == set(point)
    for name, (lo, hi) in ci.items():
        assert lo <= point[name] <= hi, name
        assert lo < hi or name == "n", name  # equal group sizes: every resample has 300 rows


def test_groups_are_resampled_whole() -> None:
    # Group a: one answer with error 0. Group b: three answers with error +1. Drawing 2 whole groups can only
    # give bias 0 (a, a), 3/4 (a, b) or 1 (b, b); resampling single answers would also give 1/4, 1/2, ...
    pred = np.array([2.0, 1.0, 2.0, 3.0])
    human = np.array([2.0, 0.0, 1.0, 2.0])
    groups = np.array(["a", "b", "b", "b"])
    _, codes = agreement.group_codes(groups)
    counts = agreement.draw_group_counts(2, 400, seed=0)
    assert (counts.sum(axis=1) == 2).all()
    reps = agreement.resampled_metrics(pred, human, codes, counts, 0, 4)
    assert set(np.round(reps["bias"], 12)) == {0.0, 0.75, 1.0}
    assert set(reps["n"]) == {2.0, 4.0, 6.0}
    lo, hi = agreement.bootstrap_ci(pred, human, groups, 0, 4, n_boot=1000)["bias"]
    assert (lo, hi) == (0.0, 1.0)


def test_bootstrap_is_fast_at_report_size() -> None:
    pred, human, groups = _data(71, 20, seed=4)  # 1420 answers, about the size of the real graded set
    start = time.perf_counter()
    ci = agreement.bootstrap_ci(pred, human, groups, 0, 4, n_boot=1000)
    assert time.perf_counter() - start < 10  # about 0.2 s on a laptop core; generous for slow CI
    assert all(math.isfinite(lo) and math.isfinite(hi) for lo, hi in ci.values())
