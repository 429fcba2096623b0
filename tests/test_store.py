"""The results store: resume reads its own columns, and a store written before those columns existed still resumes."""

from __future__ import annotations

import sqlite3

from evaluator.backends import ANSWER_REFUSED
from evaluator.store import ResultStore, Row, summarise

# The results table as the first version of the store wrote it: no reason, retryable or cache_key columns.
OLD_LAYOUT = (
    "CREATE TABLE results (key TEXT PRIMARY KEY, line INTEGER, candidate_id TEXT, question_id TEXT, answer_id TEXT, "
    "answer TEXT, extra TEXT, status TEXT, verdict TEXT, finished REAL)"
)


def _verdicts(fake_evaluator, resources):
    les = resources.load_eval_set("ml-screening")
    scored = fake_evaluator.score(les, les.by_id["overfitting"], "Overfitting is when a model learns noise.")
    assert scored.status == "scored" and scored.provenance.cache_key
    transient = scored.model_copy(update={"status": "unscored", "reason": "endpoint down", "retryable": True})
    refused = scored.model_copy(update={"status": "unscored", "reason": f"{ANSWER_REFUSED}: off task"})
    return scored, transient, refused


def _old_store(path, verdicts) -> None:
    with sqlite3.connect(path) as c:
        c.execute(OLD_LAYOUT)
        for i, v in enumerate(verdicts):
            c.execute(
                "INSERT INTO results VALUES (?, ?, ?, 'overfitting', '', 'an answer', '{}', ?, ?, 1.0)",
                (f"c{i}|overfitting", i + 2, f"c{i}", v.status if v else "pending", v.model_dump_json() if v else None),
            )


def test_a_store_of_the_old_layout_gets_its_resume_columns_filled_on_open(tmp_path, fake_evaluator, resources):
    scored, transient, refused = _verdicts(fake_evaluator, resources)
    path = tmp_path / "results.sqlite3"
    _old_store(path, [scored, transient, refused, None])

    store = ResultStore(path)
    with sqlite3.connect(path) as c:
        got = c.execute("SELECT key, reason, retryable, cache_key FROM results ORDER BY line").fetchall()
    assert got == [
        ("c0|overfitting", "", 0, scored.provenance.cache_key),
        ("c1|overfitting", "endpoint down", 1, scored.provenance.cache_key),
        ("c2|overfitting", f"{ANSWER_REFUSED}: off task", 0, scored.provenance.cache_key),
        ("c3|overfitting", None, None, None),
    ]
    # Scored and refused rows are final; the transient failure and the pending row are graded again.
    assert store.finished_keys() == {k: scored.provenance.cache_key for k in ("c0|overfitting", "c2|overfitting")}
    rows = store.all()
    assert [r.verdict for r in rows] == [scored, transient, refused, None]
    counts = summarise(store)
    assert (counts.scored, counts.unscored, counts.pending, counts.retry) == (1, 2, 1, 1)
    finished = store.finished_keys()
    store.conn.close()
    # Opening it again changes nothing (the migration runs once).
    again = ResultStore(path)
    assert again.finished_keys() == finished
    again.conn.close()


def test_saving_and_re_registering_keep_the_resume_columns_in_step(tmp_path, fake_evaluator, resources):
    scored, transient, _ = _verdicts(fake_evaluator, resources)
    store = ResultStore(tmp_path / "results.sqlite3")
    rows = [Row(f"c{i}|overfitting", i + 2, f"c{i}", "overfitting", "", "an answer") for i in range(2)]
    store.register(rows)
    store.save(rows[0].key, scored)
    store.save(rows[1].key, transient)
    assert store.finished_keys() == {rows[0].key: scored.provenance.cache_key}
    # A changed answer makes the row pending again: its old verdict, and what resume read of it, are gone.
    store.register([Row(rows[0].key, 2, "c0", "overfitting", "", "another answer")])
    assert store.finished_keys() == {}
    with sqlite3.connect(tmp_path / "results.sqlite3") as c:
        assert c.execute(
            "SELECT status, verdict, reason, retryable, cache_key FROM results WHERE line = 2"
        ).fetchone() == (
            "pending",
            None,
            None,
            None,
            None,
        )
    store.conn.close()


def test_a_folder_graded_before_the_resume_columns_resumes_without_grading_again(tmp_path, fake_evaluator):
    from pathlib import Path

    from evaluator import grade_csv

    examples = Path(__file__).resolve().parents[1] / "examples" / "answers.csv"
    out = tmp_path / "out"
    first = grade_csv(examples, out, fake_evaluator)
    assert first.scored == 10 and first.progress.calls > 0
    before = (out / "results.csv").read_bytes()
    # Rewrite the store in the old layout, verdicts kept.
    with sqlite3.connect(out / "results.sqlite3") as c:
        c.execute("ALTER TABLE results RENAME TO new_results")
        c.execute(OLD_LAYOUT)
        c.execute(
            "INSERT INTO results SELECT key, line, candidate_id, question_id, answer_id, answer, extra, status, "
            "verdict, finished FROM new_results"
        )
        c.execute("DROP TABLE new_results")
    again = grade_csv(examples, out, fake_evaluator)
    assert again.progress.calls == 0 and again.progress.done == again.progress.total == 10
    assert (out / "results.csv").read_bytes() == before
