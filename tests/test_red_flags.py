"""Red-flag detection: the features against the answer's other claims, the fitted detector, the stated-point guard,
and the review flag when a red flag takes a large part of the scale off an answer."""

import math

import pytest

from evaluator.grade_model import anchored_coverage
from evaluator.key_point_verdict import RED_FLAG_REVIEW_DROP, red_flag_review
from evaluator.key_points import key_points_of
from evaluator.models import Effect, RedFlag
from evaluator.red_flags import ClaimFeatures, acts, claim_features, detector_score, point_stated
from tests.test_key_points import ANSWER, scripted, yes


def test_each_claim_is_measured_against_the_answers_other_claims():
    a, b, c = claim_features([0.6, 0.4, 0.5], [0.8, 0.2, 0.5])
    assert a.dp == pytest.approx(0.6 - 0.45) and b.dp == pytest.approx(0.4 - 0.55) and c.dp == pytest.approx(0.0)
    assert a.dsim == pytest.approx(0.8 - 0.35) and a.sim == 0.8
    (only,) = claim_features([0.7], [0.3])
    assert only.dp == 0.0 and only.dsim == 0.0  # a question with one red flag has nothing to compare with


def test_the_detector_is_the_claim_read_until_the_red_flag_set_fits_weights():
    f = ClaimFeatures(p=0.6, dp=0.1, sim=0.5, dsim=0.2)
    assert detector_score({"threshold": 0.5}, f) == 0.6
    gate = {"w_p": 1.0, "w_dp": 10.0, "w_dsim": 2.0, "b": -2.0}  # w_sim missing: weight 0
    assert detector_score(gate, f) == pytest.approx(1 / (1 + math.exp(-(0.6 + 1.0 + 0.4 - 2.0))))


def test_a_flag_acts_only_when_measured_to_work_above_its_threshold_and_its_point_is_not_stated():
    f = ClaimFeatures(p=0.9, dp=0.0, sim=0.0, dsim=0.0)
    gate = {"effective": True, "threshold": 0.5, "stated_point": 0.8}
    assert acts(gate, f, position=0.2) and acts(gate, f, position=None)  # no anchors: no guard
    assert not acts(gate, f, position=0.85) and point_stated(gate, 0.8)
    assert not acts(gate | {"effective": False}, f, position=0.2)
    assert not acts(gate | {"threshold": 0.95}, f, position=0.2)
    assert not point_stated({"threshold": 0.5}, 5.0)  # a gate without the guard never withholds


def _anchored(resources, point_read: float):
    """The overfitting question read with anchors (points 0.2 for an empty reply, 0.8 for the reference); the answer
    reads every key point at `point_read` and its cap red flag's claim at 0.9."""
    ev = scripted(resources, anchors=True)
    les, q = resources.find_question("overfitting")
    rubric = resources.rubric("ml-screening").rubric
    n, none = len(key_points_of(q)), [yes(0.0)] * len(q.red_flags)
    ev.judge.backend.enqueue({"0": 1.0}, *[yes(0.2)] * n, *none, {"5": 1.0}, *[yes(0.8)] * n, *none)
    ev.anchors(q, rubric)
    gate = {"auc": 0.9, "effective": True, "threshold": 0.5, "stated_point": 0.8}
    ev._grade_model = anchored_coverage().model_copy(update={"red_flags": gate})
    cap = next(f for f in q.red_flags if f.effect.value == "cap")
    claims = [yes(0.9) if f.id == cap.id else yes(0.0) for f in q.red_flags]
    ev.judge.backend.enqueue({"4": 1.0}, *[yes(point_read)] * n, *claims)
    v = ev.score(les, q, ANSWER)
    (flag,) = [r for r in v.red_flags if r.id == cap.id]
    return v, flag, cap


def test_a_flag_whose_contradicted_point_the_answer_states_is_shown_but_does_not_act(resources):
    v, flag, cap = _anchored(resources, point_read=0.8)
    assert not flag.hit and flag.stated_point in key_points_of(resources.find_question("overfitting")[1])
    assert v.score_100 > 100 * cap.value
    assert f"Red flag {cap.id}: p=0.90, possible, no effect on the score: the answer states the point" in v.rationale


def test_a_flag_whose_point_is_not_stated_acts(resources):
    v, flag, cap = _anchored(resources, point_read=0.2)
    assert flag.hit and not flag.stated_point and flag.detector == pytest.approx(0.9)
    assert v.score_100 <= 100 * cap.value


def test_a_red_flag_that_takes_much_off_a_score_asks_for_review():
    cap = RedFlag(id="swap", description="swaps them", effect=Effect.cap, value=0.4)
    (review,) = red_flag_review([cap], before=0.85, after=0.4)
    assert review.code == "red_flag_applied" and "swap" in review.reason and "85% to 40%" in review.reason
    assert red_flag_review([cap], before=0.4 + RED_FLAG_REVIEW_DROP / 2, after=0.4) == []
    assert red_flag_review([], before=0.9, after=0.9) == []
