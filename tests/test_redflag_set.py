"""The red-flag test set (eval_sets/ml-screening.redflags.yaml): answers written to commit one bank red flag each,
plus clean controls, for measuring red-flag detection. These checks keep it in step with the bank."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
REDFLAG_SET = ROOT / "eval_sets" / "ml-screening.redflags.yaml"
MIN_QUESTIONS = 40


@pytest.fixture(scope="module")
def bank():
    from evaluator.resources import Resources

    return Resources(ROOT).load_eval_set("ml-screening").by_id


@pytest.fixture(scope="module")
def redflag_set() -> list[dict]:
    data = yaml.safe_load(REDFLAG_SET.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("questions"), list), "top level must be `questions: [...]`"
    return data["questions"]


def test_every_bank_red_flag_has_a_claim(bank):
    missing = [f"{q.id}/{f.id}" for q in bank.values() for f in q.red_flags if not f.claim]
    assert not missing, f"red flags without a claim: {missing}"


def test_questions_exist_once_and_enough_are_covered(bank, redflag_set):
    ids = [entry["question_id"] for entry in redflag_set]
    assert not [i for i in ids if i not in bank], "question ids not in the bank"
    assert [i for i, n in Counter(ids).items() if n > 1] == []
    assert len(ids) >= MIN_QUESTIONS
    assert {bank[i].level.value for i in ids} == {"junior", "mid", "senior"}


def test_one_answer_per_red_flag_and_a_control(bank, redflag_set):
    for entry in redflag_set:
        q = bank[entry["question_id"]]
        assert set(entry) == {"question_id", "answers"}, q.id
        shows = [a["shows"] for a in entry["answers"]]
        flag_ids = [f.id for f in q.red_flags]
        unknown = [s for s in shows if s is not None and s not in flag_ids]
        assert not unknown, f"{q.id}: {unknown} are not red flags of this question (it has {flag_ids})"
        flagged = Counter(s for s in shows if s is not None)
        assert flagged == Counter(flag_ids), f"{q.id}: want one answer per red flag {flag_ids}, got {dict(flagged)}"
        assert None in shows, f"{q.id}: no clean control (shows: null)"


def test_answers_are_candidate_length_and_do_not_copy_the_claim(bank, redflag_set):
    for entry in redflag_set:
        q = bank[entry["question_id"]]
        claims = {f.id: f.claim for f in q.red_flags}
        for a in entry["answers"]:
            assert set(a) == {"shows", "answer"}, q.id
            words = len(a["answer"].split())
            assert 40 <= words <= 120, f"{q.id}/{a['shows']}: {words} words, want 40-120"
            for flag_id, claim in claims.items():
                assert claim.rstrip(".").lower() not in a["answer"].lower(), f"{q.id}/{a['shows']} copies {flag_id}"


def test_the_set_is_not_taken_for_an_eval_set():
    from evaluator.resources import Resources

    paths = Resources(ROOT).eval_set_paths()
    assert REDFLAG_SET.is_file() and REDFLAG_SET not in paths
    assert ROOT / "eval_sets" / "ml-screening.yaml" in paths
