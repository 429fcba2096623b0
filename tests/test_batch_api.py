"""Batch grading and Batch API import called from Python (the library half of `grade` and `import-batch`)."""

from __future__ import annotations

import csv
import json
import threading
import urllib.request
from pathlib import Path

import pytest

from evaluator import GradeSummary, ImportSummary, build_evaluator, grade_csv, import_responses
from evaluator.batch import open_store
from evaluator.errors import DataValidationError
from evaluator.intake import load_answers
from evaluator.scaleout import export_batch
from fake_server import serve

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "answers.csv"
OUTPUTS = ("results.csv", "verdicts.jsonl", "scorecards.csv", "report.html")


def read_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_grade_csv_returns_the_counts_and_writes_the_outputs(tmp_path, fake_evaluator, capsys):
    out = tmp_path / "out"
    loaded, reports = [], []
    s = grade_csv(EXAMPLES, out, fake_evaluator, on_loaded=loaded.append, on_progress=lambda p: reports.append(p.done))
    assert isinstance(s, GradeSummary)
    assert (s.scored, s.unscored, s.pending, s.counts.total, s.counts.flagged) == (10, 0, 0, 10, 1)
    assert [(r.line, r.reason) for r in s.rejected] == [(12, "answer is empty")]
    assert s.paths == [out / name for name in OUTPUTS] and all(p.exists() for p in s.paths)
    assert s.store == out / "results.sqlite3" and (out / "rejected.csv").exists()
    assert s.progress.done == s.progress.total == 10 and s.progress.calls > 0 and not s.interrupted
    assert len(loaded) == 1 and len(loaded[0].rows) == 10 and loaded[0].rejected == s.rejected
    assert reports == list(range(11))  # once before the first row, then after each
    assert len(read_rows(out / "results.csv")) == 10
    assert capsys.readouterr() == ("", "")  # the library prints nothing
    # Again: resumed from the store, nothing graded.
    again = grade_csv(EXAMPLES, out, fake_evaluator)
    assert again.progress.calls == 0 and again.scored == 10


def test_grade_csv_maps_columns_and_reports_rows_of_an_earlier_csv(tmp_path, fake_evaluator):
    src = tmp_path / "a.csv"
    src.write_text(
        "who,q,text\nana,overfitting,The model memorises noise.\nben,overfitting,It fits noise and not signal.\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    columns = {"candidate_id": "who", "question_id": "q", "answer": "text"}
    assert grade_csv(src, out, fake_evaluator, columns=columns).scored == 2
    src.write_text("who,q,text\nana,overfitting,The model memorises noise.\n", encoding="utf-8")
    seen = []
    s = grade_csv(src, out, fake_evaluator, columns=columns, on_absent=lambda keys, pruned: seen.append((keys, pruned)))
    assert seen == [(["ben|overfitting"], False)] and s.counts.total == 2
    s = grade_csv(src, out, fake_evaluator, columns=columns, prune=True)
    assert s.counts.total == 1


def test_a_stopped_grade_csv_leaves_rows_pending_and_says_so(tmp_path, fake_evaluator):
    stop = threading.Event()
    stop.set()
    s = grade_csv(EXAMPLES, tmp_path / "out", fake_evaluator, stop=stop)
    assert (s.scored, s.pending, s.progress.done) == (0, 10, 0)
    assert all(r["status"] == "pending" for r in read_rows(tmp_path / "out" / "results.csv"))
    assert "answers are not graded yet" in (tmp_path / "out" / "report.html").read_text(encoding="utf-8")


def test_strict_grade_csv_raises_before_any_row_is_stored(tmp_path, fake_evaluator):
    with pytest.raises(DataValidationError, match="1 invalid row"):
        grade_csv(EXAMPLES, tmp_path / "out", fake_evaluator, strict=True)
    assert not (tmp_path / "out" / "results.sqlite3").exists()
    assert read_rows(tmp_path / "out" / "rejected.csv")[0]["line"] == "12"


def _responses(url: str, requests_path: Path) -> list[dict]:
    """What a batch worker would return for each exported request, asked of the fake server."""
    out = []
    for line in requests_path.read_text(encoding="utf-8").splitlines():
        x = json.loads(line)
        req = urllib.request.Request(
            url + "/chat/completions", data=json.dumps(x["body"]).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            out.append({"custom_id": x["custom_id"], "response": {"status_code": 200, "body": json.loads(r.read())}})
    return out


def test_import_responses_grades_the_exported_rows_from_their_replies(tmp_path):
    out = tmp_path / "out"
    requests_path = out / "requests.jsonl"
    with serve() as url:
        ev = build_evaluator("openai", base_url=url, model="m", embedder="fake:hash", use_cache=False, explain=False)
        loaded = load_answers(EXAMPLES, out, ev)
        open_store(out, loaded.rows)
        assert export_batch(ev, loaded.les, loaded.rows, requests_path) == 10
        responses = _responses(url, requests_path)
        requests_made = url.server.requests
        responses[3] = {"custom_id": responses[3]["custom_id"], "response": None, "error": {"message": "crashed"}}
        responses.append({"custom_id": "not-exported", "response": None, "error": {"message": "?"}})
        resp_path = tmp_path / "responses.jsonl"
        resp_path.write_text("".join(json.dumps(r) + "\n" for r in responses), encoding="utf-8")

        s = import_responses(out, resp_path)
        assert url.server.requests == requests_made  # replies come from the file, never from an endpoint
    assert isinstance(s, ImportSummary)
    assert (s.imported, s.scored, s.unscored, s.pending, s.unknown) == (10, 9, 1, 0, ["not-exported"])
    assert s.paths == [out / name for name in OUTPUTS]
    verdicts = [json.loads(x) for x in (out / "verdicts.jsonl").read_text(encoding="utf-8").splitlines()]
    failed = next(v for v in verdicts if v["status"] == "unscored")
    assert "batch request failed" in failed["reason"] and "crashed" in failed["reason"]
    # Provenance names the judge the batch was exported for, not a stand-in endpoint.
    assert {(v["provenance"]["judge_backend"], v["provenance"]["judge_params"]["base_url"]) for v in verdicts} == {
        ("openai-batch", url)
    }
    assert {v["provenance"]["judge_model"] for v in verdicts} == {"m"}
