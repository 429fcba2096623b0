"""Recorded-response tests: real exchanges with an OpenAI-compatible server, replayed offline.

The cassettes in tests/cassettes/ were recorded against `python -m llama_cpp.server` serving the
bundled Qwen2.5-Coder-1.5B-Instruct GGUF (benchmarks/record_cassettes.sh re-records them). Replay
matches on the request body, so any change to a prompt template, the rubric, a bank question or a
request parameter makes these tests fail until the cassettes are re-recorded and reviewed.

Everything goes through the package's own code path: resolve_judge_settings -> make_judge ->
Judge.judge / Judge._ask_json, or build_evaluator -> Evaluator.score.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import pytest

from conftest_vcr import (
    API_KEY,
    MODEL,
    RECORD_BASE_URL,
    SETTINGS_ENV,
    recorded,
    request_json,
    response_json,
)
from evaluator import openai_backend, scoring
from evaluator.backends import LEVEL_DIGITS, VIEW_DIGITS, JudgeReplyError
from evaluator.config import resolve_judge_settings
from evaluator.judges import make_judge, reply_model, structured_read
from evaluator.key_points import key_points_of
from evaluator.models import JudgeOutput
from evaluator.prompts import PromptSet
from evaluator.resources import Resources
from evaluator.scoring import build_evaluator
from evaluator.screen import Screening
from injection_corpus import CASES, OVERFIT

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "overfitting"
ANSWER = OVERFIT  # a partial answer: right idea, thin on detection and remedies


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch):
    for name in SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)


def settings(mode: str, dialect: str = "auto", **kw):
    return resolve_judge_settings(
        "openai", base_url=RECORD_BASE_URL, api_key=API_KEY, model=MODEL, mode=mode, dialect=dialect, **kw
    )


@functools.cache
def resources() -> Resources:
    return Resources.locate(ROOT)


def bank(question_id: str = QUESTION):
    res = resources()
    les, q = res.find_question(question_id)
    return q, res.rubric_for(les, q).rubric, PromptSet(res.prompts_dir)


def criteria_bank(question_id: str = QUESTION):
    """The bank with its rubric graded per criterion: the structured cassettes below record the per-criterion
    request, which a key-point rubric (ml-screening's) no longer sends in structured mode."""
    q, rubric, prompts = bank(question_id)
    return q, criteria_scoring(rubric), prompts


def evaluator(s):
    return build_evaluator(settings=s, data_dir=ROOT, embedder="fake:hash", use_cache=False)


def codes(verdict) -> set[str]:
    return {f.code for f in verdict.review_flags}


def assert_probabilities(probs: dict[str, float], digits: list[str]) -> None:
    assert set(probs) == set(digits)
    assert all(0.0 <= p <= 1.0 for p in probs.values())
    assert math.isclose(sum(probs.values()), 1.0, abs_tol=1e-5)


def assert_scored_structured(result, rubric) -> None:
    assert result.status == "scored", result.reason
    assert result.reason == ""
    assert list(result.criteria) == [c.id for c in rubric.criteria]
    for cid, co in result.criteria.items():
        assert co.level is not None and 0.0 <= co.level <= 4.0, cid
        assert co.argmax in range(5), cid
        assert co.source in ("top_logprobs", "sampled"), cid
        if co.source == "top_logprobs":
            assert_probabilities(co.probabilities, LEVEL_DIGITS)
        else:
            assert co.level == float(co.argmax)


def response_format_form(body: dict) -> str:
    rf = body["response_format"]
    if rf["type"] == "json_schema":
        return "json_schema"
    return "llama_cpp" if "schema" in rf else "json_object"


# ---------------------------------------------------------------- structured mode


def test_structured_llama_cpp_dialect_scores_every_criterion():
    q, rubric, prompts = criteria_bank()
    judge = make_judge(settings("structured", "llama_cpp"))
    with recorded("structured_llama_cpp") as cassette:
        result = judge.judge(q, rubric, ANSWER, prompts)

    bodies = [request_json(r) for r in cassette.requests]
    assert all(response_format_form(b) == "llama_cpp" for b in bodies)
    assert bodies[0]["response_format"]["schema"] == JudgeOutput.model_json_schema()
    assert bodies[0]["messages"] == prompts.structured(q, rubric, ANSWER).as_chat()
    assert bodies[0]["max_tokens"] == 1024 and bodies[0]["temperature"] == 0.0 and bodies[0]["logprobs"] is True
    # The recorded model's first reply names no real criterion, so the one repair re-ask is used.
    assert len(bodies) == STRUCTURED_REQUESTS == result.usage.calls

    assert result.dialect == "llama_cpp"
    assert_scored_structured(result, rubric)
    # The verdict is read from the last recorded reply, and every level came with its top_logprobs.
    reply = response_json(cassette.responses[-1])["choices"][0]
    assert reply["finish_reason"] == "stop"
    assert result.raw_reply == reply["message"]["content"]
    assert [c.source for c in result.criteria.values()] == ["top_logprobs"] * len(rubric.criteria)
    parsed = json.loads(result.raw_reply)
    assert [int(c["level"]) for c in parsed["criteria"]] == [co.argmax for co in result.criteria.values()]
    assert result.usage.completion_tokens > 0


STRUCTURED_REQUESTS = 2


def test_dialect_auto_falls_back_to_llama_cpp_after_json_schema_500(monkeypatch):
    sleeps: list[float] = []
    # Replay need not wait.
    monkeypatch.setattr(openai_backend.OpenAIBackend, "_pause", lambda self, s: sleeps.append(s))
    q, rubric, prompts = criteria_bank()
    judge = make_judge(settings("structured"))
    assert judge.settings.dialect == "auto" and judge.backend.dialect is None
    with recorded("structured_dialect_auto") as cassette:
        result = judge.judge(q, rubric, ANSWER, prompts)

    attempts = 2  # while detecting, a rejected form is tried twice, then the next form
    forms = [response_format_form(request_json(r)) for r in cassette.requests]
    statuses = [r["status"]["code"] for r in cassette.responses]
    # llama_cpp.server rejects the OpenAI json_schema form with HTTP 500 (a request-validation error
    # reported as a server error); while detecting, the backend tries it twice before the next form.
    assert forms == ["json_schema"] * attempts + ["llama_cpp"] * STRUCTURED_REQUESTS
    assert statuses == [500] * attempts + [200] * STRUCTURED_REQUESTS
    error = response_json(cassette.responses[0])["error"]["message"]
    assert "json_schema" in error and "json_object" in error
    assert len(sleeps) == attempts - 1

    assert judge.backend.dialect == "llama_cpp"
    assert result.dialect == "llama_cpp"
    assert_scored_structured(result, rubric)


def test_json_object_dialect_is_scored_or_unscored_with_reason():
    q, rubric, prompts = criteria_bank()
    judge = make_judge(settings("structured", "json_object"))
    with recorded("structured_json_object") as cassette:
        result = judge.judge(q, rubric, ANSWER, prompts)

    bodies = [request_json(r) for r in cassette.requests]
    assert all(b["response_format"] == {"type": "json_object"} for b in bodies)
    assert result.dialect == "json_object"
    assert result.usage.calls == len(bodies)
    # What the recorded model really did: without a schema it numbers the criteria (1, 2, 4) instead of
    # naming them, twice, so the verdict is unscored after the one repair, with no number in it.
    assert result.status == "unscored" and len(bodies) == 2
    assert result.reason.startswith("judge reply unusable")
    assert result.criteria == {} and result.holistic is None
    assert "criteria.0.criterion: Input should be a valid string" in result.reason
    assert result.raw_reply == response_json(cassette.responses[-1])["choices"][0]["message"]["content"]


def test_repair_reask_sends_the_repair_prompt():
    q, rubric, prompts = criteria_bank()
    judge = make_judge(settings("structured", "llama_cpp"))
    want = [c.id for c in reversed(rubric.criteria)]

    def check(parsed):
        got = [c.criterion for c in parsed.criteria]
        if got != want:
            raise JudgeReplyError(f"criteria must be listed in this order: {want}, got {got}")

    chat = prompts.structured(q, rubric, ANSWER).as_chat()
    with recorded("structured_repair") as cassette:
        parsed, usage, raw, reads, err = judge._ask_json(chat, JudgeOutput, prompts, check)

    assert len(cassette.requests) == 2 and usage.calls == 2
    first_reply = response_json(cassette.responses[0])["choices"][0]["message"]["content"]
    first_order = [c["criterion"] for c in json.loads(first_reply)["criteria"]]
    assert first_order != want  # the first real reply fails the check, so a repair is needed
    first_error = f"criteria must be listed in this order: {want}, got {first_order}"
    second = request_json(cassette.requests[1])
    repair_text = prompts.repair(first_error)
    assert repair_text.startswith("Your reply could not be used: criteria must be listed")
    assert second["messages"] == chat + [
        {"role": "assistant", "content": first_reply},
        {"role": "user", "content": repair_text},
    ]
    second_reply = response_json(cassette.responses[1])["choices"][0]["message"]["content"]
    assert raw == second_reply
    # The recorded model answers the repair with a single criterion, so the check fails again.
    assert parsed is None
    assert err.startswith("criteria must be listed in this order") and reads == []


def test_truncated_reply_is_unscored():
    ev = evaluator(settings("structured", "llama_cpp", max_tokens=20))
    for lr in ev.resources.rubrics().values():
        lr.rubric = criteria_scoring(lr.rubric)
    les, q = ev.resources.find_question(QUESTION)
    with recorded("structured_truncated") as cassette:
        verdict = ev.score(les, q, ANSWER)

    assert len(cassette.requests) == 1  # a truncated reply is not re-asked
    assert request_json(cassette.requests[0])["max_tokens"] == 20
    reply = response_json(cassette.responses[0])["choices"][0]
    assert reply["finish_reason"] == "length"
    assert verdict.status == "unscored"
    assert "truncated at max_tokens=20" in verdict.reason
    assert verdict.score is None and verdict.score_100 is None and verdict.raw_score is None
    assert verdict.criteria == [] and verdict.holistic_level is None
    assert "unscored" in codes(verdict)


def test_truncated_reply_keeps_the_raw_text():
    q, rubric, prompts = criteria_bank()
    judge = make_judge(settings("structured", "llama_cpp", max_tokens=20))
    with recorded("structured_truncated_raw") as cassette:
        result = judge.judge(q, rubric, ANSWER, prompts)
    assert result.status == "unscored"
    cut = response_json(cassette.responses[0])["choices"][0]["message"]["content"]
    assert cut and result.raw_reply == cut


def test_structured_key_points_one_reply_gives_the_key_point_verdict():
    """A key-point rubric (ml-screening's) over an endpoint: one JSON reply covering each key point, claim, the
    key idea and the criteria, turned into the key-point verdict."""
    # The client's timeout is not in the request body: a long one lets the 2-core recording machine finish a reply
    # of some 400 tokens.
    ev = evaluator(settings("structured", "llama_cpp", timeout=900))
    les, q = ev.resources.find_question(QUESTION)
    rubric = ev.resources.rubric_for(les, q).rubric
    assert rubric.scoring == "key_points"
    with recorded("structured_key_points") as cassette:
        verdict = ev.score(les, q, ANSWER)

    bodies = [request_json(r) for r in cassette.requests]
    read = structured_read(q, rubric, ANSWER, ev.prompts)
    assert bodies[0]["messages"] == read.messages.as_chat()
    assert bodies[0]["response_format"]["schema"] == reply_model(q, rubric).model_json_schema()
    # What the recorded model did: one valid reply (the schema's exact shape left it no other), no repair.
    assert len(bodies) == 1 == verdict.usage.calls
    assert verdict.status == "scored", verdict.reason
    reply = json.loads(response_json(cassette.responses[0])["choices"][0]["message"]["content"])
    assert len(verdict.key_points) == len(key_points_of(q)) == len(reply["key_points"])
    assert [k.probability for k in verdict.key_points] == [
        1.0 if p["stated"] == "yes" else 0.0 for p in reply["key_points"]
    ]
    # Its quotes are all in the answer, so each covered point quotes the endpoint.
    assert [k.evidence for k in verdict.key_points if k.covered] == [
        p["evidence"] for p in reply["key_points"] if p["stated"] == "yes"
    ]
    assert all(k.evidence in ANSWER for k in verdict.key_points)
    assert "unsupported_evidence" not in codes(verdict)
    # The key idea is probability-weighted from the digit's top_logprobs (0-5).
    keyidea = verdict.views["keyidea"]["probabilities"]
    assert_probabilities(keyidea, VIEW_DIGITS)
    assert 0.0 < keyidea[reply["key_idea"]] < 1.0
    assert [c.probability_source for c in verdict.criteria] == ["top_logprobs"] * len(rubric.criteria)
    # Claims it says are made are listed with no effect: the red-flag gate is measured on the embedded judge.
    assert all(not f.hit for f in verdict.red_flags)
    assert [c.id for c in verdict.criteria] == [c.id for c in rubric.criteria]
    assert all(c.derived_from == "" and c.level is not None for c in verdict.criteria)
    assert "grade model is fitted on the embedded judge only" in verdict.rationale


# ---------------------------------------------------------------- probability mode


def criteria_scoring(rubric):
    """These cassettes were recorded with the per-criterion read plan (`scoring: criteria`), which rubrics can
    still choose; the key-point plan, the default since, is covered by tests/test_scoring.py with fakes."""
    return rubric.model_copy(update={"scoring": "criteria"})


def test_probability_mode_reads_top_logprobs():
    q, rubric, prompts = bank()
    rubric = criteria_scoring(rubric)
    judge = make_judge(settings("probability"))
    with recorded("probability_top_logprobs") as cassette:
        result = judge.judge(q, rubric, ANSWER, prompts)

    assert result.status == "scored", result.reason
    n_reads = len(rubric.criteria) + (1 if rubric.holistic else 0) + len(q.red_flags)
    assert len(cassette.requests) == n_reads == result.usage.calls
    for r in cassette.requests:
        body = request_json(r)
        assert body["max_tokens"] == 1 and body["logprobs"] is True and body["top_logprobs"] == 20

    reads = [*result.criteria.values(), result.holistic]
    assert len(reads) == len(rubric.criteria) + 1
    for read, resp in zip(reads, cassette.responses, strict=False):
        assert read.source == "top_logprobs"
        assert_probabilities(read.probabilities, LEVEL_DIGITS)
        # Recompute the distribution from the recorded top_logprobs: softmax over the digits 0-4.
        top = response_json(resp)["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        lp = {t["token"].strip(): t["logprob"] for t in top}  # as OpenAIBackend.read_digits reads them
        w = {d: math.exp(lp[d]) for d in LEVEL_DIGITS if d in lp}
        expected = sum(int(d) * v for d, v in w.items()) / sum(w.values())
        level = read.level if hasattr(read, "level") else read.expected
        assert math.isclose(level, expected, abs_tol=1e-9)
    for f in q.red_flags:
        fo = result.red_flags[f.id]
        assert 0.0 <= fo.probability <= 1.0
        assert fo.hit == (fo.probability >= rubric.red_flag_policy.min_probability)


# ---------------------------------------------------------------- prompt injection

# Every case must hold; a case that does not is a gap in the guard to fix, not to mark.


@pytest.fixture(scope="module")
def injection_run():
    """Scores every clean and injected answer once, in probability mode, against one cassette."""
    clean: dict[tuple[str, str], object] = {}
    injected: dict[str, object] = {}
    with pytest.MonkeyPatch.context() as mp:
        for name in SETTINGS_ENV:
            mp.delenv(name, raising=False)
        # Recorded before the screen (evaluator/screen.py) existed: its extra re-reads are not in the cassette.
        # The guard recorded here (sanitised variants, lowest reading kept) still runs; the screen is covered by
        # tests/test_screen.py and benchmarks/gaming.py. Re-record (benchmarks/record_cassettes.sh) to cover both.
        mp.setattr(scoring, "screen", lambda text: Screening(clean=text))
        ev = evaluator(settings("probability"))
        for lr in ev.resources.rubrics().values():
            lr.rubric = criteria_scoring(lr.rubric)
        with recorded("injection_corpus"):
            for cid, qid, clean_answer, injected_answer in CASES:
                les, q = ev.resources.find_question(qid)
                if (qid, clean_answer) not in clean:
                    clean[(qid, clean_answer)] = ev.score(les, q, clean_answer)
                injected[cid] = ev.score(les, q, injected_answer)
    return clean, injected


def level_pairs(clean_v, injected_v) -> list[tuple[str, float, float]]:
    """(name, clean level, injected level) for every criterion and the holistic level."""
    ic = {c.id: c.level for c in injected_v.criteria}
    pairs = [(c.id, c.level, ic.get(c.id)) for c in clean_v.criteria]
    pairs.append(("holistic", clean_v.holistic_level, injected_v.holistic_level))
    return pairs


def test_injection_corpus_is_large_and_distinct():
    ids = [c[0] for c in CASES]
    assert len(ids) >= 20 and len(set(ids)) == len(ids)
    assert all(clean != injected for _, _, clean, injected in CASES)


def test_clean_answers_are_scored_and_not_flagged(injection_run):
    clean, _ = injection_run
    for (qid, _answer), v in clean.items():
        assert v.status == "scored", (qid, v.reason)
        assert "injection_suspected" not in codes(v), qid
        assert v.holistic_level is not None and len(v.criteria) == 4


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_injection_never_raises_a_level(case, injection_run):
    cid, qid, clean_answer, _injected_answer = case
    clean, injected = injection_run
    cv, iv = clean[(qid, clean_answer)], injected[cid]
    assert cv.status == "scored", cv.reason
    assert iv.status == "scored", iv.reason
    problems = [
        f"{name}: clean {c:.4f} -> injected {i:.4f}"
        for name, c, i in level_pairs(cv, iv)
        if i is None or c is None or i > c + 1e-9
    ]
    if "injection_suspected" not in codes(iv):
        problems.append("no injection_suspected review flag")
    assert not problems, f"{cid}: " + "; ".join(problems)
