"""Sentences about neither the question nor its answer are read apart and cannot raise a score (issue 17).

The threshold is measured for MiniLM only; these tests give the hash embedder one (its cosines are word overlap,
so a sentence that shares few words with the question, references or key points sits low)."""

from __future__ import annotations

import pytest

from evaluator import similarity
from evaluator.embeddings import get_embedder

WEAK = "Overfitting is when the model is too big for the training data."
BRAG = "My previous manager said nobody on my team knows it better, and I led our design review last year."


@pytest.fixture
def hash_threshold(monkeypatch):
    monkeypatch.setattr(similarity, "OFF_TOPIC_BELOW", {"fake:hash": 0.25})


def _question(resources, qid: str = "overfitting"):
    return resources.find_question(qid)


def test_a_sentence_about_the_candidate_is_off_topic(resources, hash_threshold):
    _, q = _question(resources)
    answer = f"{WEAK} {BRAG}"
    spans = similarity.off_topic_spans(get_embedder("fake:hash"), q, answer)
    assert [answer[a:b] for a, b in spans] == [BRAG]
    assert similarity.cut_spans(answer, spans) == WEAK


def test_nothing_is_set_aside_when_it_would_leave_nothing_or_one_sentence(resources, hash_threshold):
    _, q = _question(resources)
    emb = get_embedder("fake:hash")
    assert similarity.off_topic_spans(emb, q, BRAG) == []  # one sentence
    other = "Nobody on my team knows it better. I led our design review last year."
    assert similarity.off_topic_spans(emb, q, other) == []  # every sentence: the answer is simply off the subject


def test_the_step_is_off_for_an_embedder_without_a_measured_threshold(resources):
    _, q = _question(resources)
    assert "fake:hash" not in similarity.OFF_TOPIC_BELOW
    assert similarity.off_topic_spans(get_embedder("fake:hash"), q, f"{WEAK} {BRAG}") == []


@pytest.mark.parametrize(
    "pointer",
    [
        "Experiments: https://github.com/someone/proofs (see notebooks/validated.ipynb, which reproduces every claim).",
        "I go deeper in my post at www.example.com/overfitting-explained.",
        "The full derivation is in answer_q3_full.pdf.",
    ],
)
def test_a_sentence_pointing_outside_the_answer_is_set_aside_with_any_embedder(resources, pointer):
    """A link or a file states nothing the grader can read: structural, so no threshold is needed."""
    _, q = _question(resources)
    answer = f"{WEAK} {pointer}"
    spans = similarity.off_topic_spans(get_embedder("fake:hash"), q, answer)
    assert [answer[a:b] for a, b in spans] == [pointer]
    assert similarity.off_topic_spans(get_embedder("fake:hash"), q, pointer) == []  # alone: read as it is


def _reads(q, keyidea: str, point: float):
    no = [{"0": 1.0, "1": 0.0}] * len(q.red_flags)
    return [{keyidea: 1.0}, *[{"0": 1 - point, "1": point}] * len(q.key_points), *no]


def test_the_copy_without_them_is_read_and_the_lower_reading_kept(resources, hash_threshold, scripted_evaluator):
    ev = scripted_evaluator
    les, q = _question(resources)
    # The judge is swayed by the boast (a high reading), and reads the answer without it low.
    ev.judge.backend.enqueue(*_reads(q, "5", 0.95), *_reads(q, "1", 0.05))
    v = ev.score(les, q, f"{WEAK} {BRAG}")
    assert v.set_aside == [BRAG]
    assert v.views["keyidea"]["expected"] == 1.0 and all(k.probability == 0.05 for k in v.key_points)
    assert f"<answer>\n{WEAK}\n</answer>" in ev.judge.backend.history[-1].answer_block
    assert ev.judge_calls == 2
    assert "injection_suspected" not in {f.code for f in v.review_flags}  # not an attempt on the grader


def test_the_off_topic_copy_never_raises_a_reading(resources, hash_threshold, scripted_evaluator):
    ev = scripted_evaluator
    les, q = _question(resources)
    # Here the boast lowers the judge's reading: the copy without it reads higher, and the lower is still kept.
    ev.judge.backend.enqueue(*_reads(q, "2", 0.3), *_reads(q, "4", 0.9))
    v = ev.score(les, q, f"{WEAK} {BRAG}")
    assert v.views["keyidea"]["expected"] == 2.0 and all(k.probability == 0.3 for k in v.key_points)


def test_an_answer_about_the_question_is_read_once(resources, hash_threshold, scripted_evaluator):
    ev = scripted_evaluator
    les, q = _question(resources)
    ev.judge.backend.enqueue(*_reads(q, "3", 0.5))
    v = ev.score(les, q, f"{WEAK} The model fits noise in the training data, so validation error rises.")
    assert v.set_aside == [] and ev.judge_calls == 1


def test_the_console_verdict_shows_what_was_set_aside_and_never_renders_candidate_markup(
    resources, hash_threshold, scripted_evaluator
):
    from io import StringIO

    from rich.console import Console

    from evaluator.render import print_verdict

    ev = scripted_evaluator
    les, q = _question(resources)
    brag = "[bold red]My manager[/bold red] said nobody on my team knows it better, and I led our review."
    ev.judge.backend.enqueue(*_reads(q, "4", 0.9), *_reads(q, "1", 0.1))
    v = ev.score(les, q, f"{WEAK} {brag}")
    assert v.set_aside == [brag]
    out = StringIO()
    print_verdict(v, q, Console(file=out, width=400, color_system=None))
    text = out.getvalue()
    assert "set aside" in text and "[bold red]My manager[/bold red]" in text


def test_a_sentence_cut_at_an_abbreviation_or_a_decimal_is_judged_whole(resources, hash_threshold):
    _, q = _question(resources)
    first = "Overfitting means fitting noise, e.g. a deep tree on 0.5 percent of the data. Yes."
    text = first + " It is common in practice."
    spans = similarity.whole_sentences(text, similarity.sentence_spans(text))
    assert [text[a:b] for a, b in spans] == [first, "It is common in practice."]
    assert similarity.off_topic_spans(get_embedder("fake:hash"), q, text) == []
