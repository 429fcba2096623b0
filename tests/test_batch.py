"""Batch grading through the CLI (in-process): validation, encodings, outputs, resume, dry run, Batch API."""

from __future__ import annotations

import csv
import json
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from evaluator.cli import main
from fake_server import serve

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "answers.csv"
FAKE = ["--judge", "fake:overlap", "--embedder", "fake:hash"]

GOOD = (
    "Overfitting is when a model learns noise in the training data, so training error is low but "
    "validation error is high; regularisation and early stopping help."
)
GOOD2 = "Precision is TP/(TP+FP), recall is TP/(TP+FN), and F1 is their harmonic mean."


def grade(csv_path, out, *extra, judge=FAKE) -> int:
    return main(["grade", str(csv_path), "--out", str(out), *judge, *extra])


def openai_judge(url) -> list[str]:
    return ["--judge", "openai", "--base-url", url, "--model", "m", "--embedder", "fake:hash"]


def read_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def raw_cells(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def write(path: Path, rows: list[list[str]], delimiter: str = ",") -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f, delimiter=delimiter).writerows(rows)
    return path


def graded_count(out: Path) -> int:
    db = out / "results.sqlite3"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as c:
        return c.execute("SELECT COUNT(*) FROM results WHERE status != 'pending'").fetchone()[0]


def store_answers(out: Path) -> dict[int, str]:
    with sqlite3.connect(out / "results.sqlite3") as c:
        return dict(c.execute("SELECT line, answer FROM results"))


# ---------------------------------------------------------------- the example file


def test_examples_write_every_output(tmp_path, capsys):
    out = tmp_path / "out"
    assert grade(EXAMPLES, out) == 0
    for name in ("results.csv", "verdicts.jsonl", "scorecards.csv", "report.html", "rejected.csv", "results.sqlite3"):
        assert (out / name).exists(), name
    captured = capsys.readouterr()
    assert "line 12: answer is empty" in captured.err
    assert "graded 10 scored, 0 unscored" in captured.out

    rejected = read_rows(out / "rejected.csv")
    assert [(r["line"], r["candidate_id"], r["question_id"], r["reason"]) for r in rejected] == [
        ("12", "chen", "data-leakage", "answer is empty")
    ]

    results = read_rows(out / "results.csv")
    assert len(results) == 10
    assert all(r["status"] == "scored" and 0 <= float(r["score_100"]) <= 100 for r in results)
    # The quoted three-line answer starts on line 8; the next row starts on line 11.
    assert [int(r["line"]) for r in results] == [2, 3, 4, 5, 6, 7, 8, 11, 13, 14]
    assert store_answers(out)[8].count("\n") == 2
    # The extra column is carried through.
    assert "role" in results[0] and {r["role"] for r in results} == {"ml-engineer", "data-analyst", "research"}

    verdicts = [json.loads(x) for x in (out / "verdicts.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(verdicts) == 10 and all(v["provenance"]["judge_model"] == "overlap" for v in verdicts)
    injected = next(v for v in verdicts if v["line"] == 8)
    assert "injection_suspected" in {f["code"] for f in injected["review_flags"]}

    cards = read_rows(out / "scorecards.csv")
    assert [c["candidate_id"] for c in cards] == ["ana", "ben", "chen", "dana"]
    assert all(c["recommendation"] for c in cards)
    report = (out / "report.html").read_text(encoding="utf-8")
    assert (
        "Grading report" in report
        and "answer is empty" in report
        and report.count("<svg") == 2
        and "Per-question difficulty" in report
    )


# ---------------------------------------------------------------- validation


def test_each_problem_is_reported_with_its_row_number(tmp_path, capsys):
    src = write(
        tmp_path / "answers.csv",
        [
            ["candidate_id", "question_id", "answer", "team"],
            ["ana", "overfitting", GOOD, "a"],  # line 2: ok
            ["ana", "overfiting", GOOD, "a"],  # line 3: unknown id, close match
            ["ben", "overfitting", "   ", "b"],  # line 4: empty answer
            ["ben", "precision-recall-f1", "y" * 400, "b"],  # line 5: over --max-chars
            ["ana", "overfitting", "another answer to the same question", "a"],  # line 6: duplicate
            ["cara", "overfitting", GOOD, "c", "surplus"],  # line 7: ragged (5 cells)
            ["dan", "overfitting", "multi\nline\nanswer that is fine", "d"],  # lines 8-10: ok
            ["dan", "no-such-question-at-all", GOOD, "d"],  # line 11: unknown, no close match
            ["", "overfitting", GOOD, "e"],  # line 12: empty candidate
            ["eve", "precision-recall-f1", GOOD2, "e"],  # line 13: ok
        ],
    )
    out = tmp_path / "out"
    assert grade(src, out, "--max-chars", "300") == 0
    err = capsys.readouterr().err
    rejected = {int(r["line"]): r["reason"] for r in read_rows(out / "rejected.csv")}
    assert sorted(rejected) == [3, 4, 5, 6, 7, 11, 12]
    assert "unknown question id 'overfiting'" in rejected[3] and "Did you mean: overfitting" in rejected[3]
    assert rejected[4] == "answer is empty"
    assert "400 characters, over the limit of 300" in rejected[5]
    assert "duplicate answer by candidate ana to question overfitting (first at line 2)" in rejected[6]
    assert "row has 5 cells but the header has 4" in rejected[7]
    assert "unknown question id 'no-such-question-at-all'" in rejected[11] and "Did you mean" not in rejected[11]
    assert "candidate_id is empty" in rejected[12]
    assert "7 row(s) rejected" in err and "line 3: unknown question id" in err
    results = read_rows(out / "results.csv")
    assert [int(r["line"]) for r in results] == [2, 8, 13]
    assert [r["team"] for r in results] == ["a", "d", "e"]


def test_missing_columns_name_the_columns_found(tmp_path, capsys):
    src = write(tmp_path / "answers.csv", [["cand", "qid", "answer"], ["ana", "overfitting", GOOD]])
    assert grade(src, tmp_path / "out") == 3
    err = capsys.readouterr().err
    assert "missing column(s) candidate_id, question_id" in err
    assert "columns found: cand, qid, answer" in err and "--candidate-column" in err
    # Mapping the columns makes the same file usable.
    assert grade(src, tmp_path / "out", "--candidate-column", "cand", "--question-column", "qid") == 0
    assert len(read_rows(tmp_path / "out" / "results.csv")) == 1


def test_strict_stops_before_any_grading(tmp_path, capsys):
    src = write(
        tmp_path / "answers.csv",
        [
            ["candidate_id", "question_id", "answer"],
            ["ana", "overfitting", GOOD],
            ["ana", "overfitting", ""],
        ],
    )
    out = tmp_path / "out"
    with serve() as url:
        rc = grade(src, out, "--strict", judge=openai_judge(url))
        assert url.server.requests == 0
    assert rc != 0
    assert "1 invalid row(s)" in capsys.readouterr().err
    assert graded_count(out) == 0
    assert not (out / "results.csv").exists()
    assert read_rows(out / "rejected.csv")[0]["line"] == "3"


def test_no_valid_rows_is_an_error(tmp_path, capsys):
    src = write(tmp_path / "answers.csv", [["candidate_id", "question_id", "answer"], ["ana", "nope", GOOD]])
    assert grade(src, tmp_path / "out") == 5
    assert "no valid rows" in capsys.readouterr().err


# ---------------------------------------------------------------- encodings and delimiters


def test_bom_and_semicolons(tmp_path, capsys):
    text = "candidate_id;question_id;answer\r\nana;overfitting;Café: the model memorises noise, so validation error rises.\r\n"
    src = tmp_path / "bom.csv"
    src.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    out = tmp_path / "out"
    assert grade(src, out) == 0
    assert "warning" not in capsys.readouterr().err
    assert read_rows(out / "results.csv")[0]["candidate_id"] == "ana"
    assert store_answers(out)[2].startswith("Café:")


@pytest.mark.parametrize("bom", [False, True], ids=["cp1252", "bom+cp1252"])
def test_cp1252_semicolon_file_is_read_with_a_warning(tmp_path, capsys, bom):
    text = (
        "candidate_id;question_id;answer\r\n"
        "zoë;overfitting;The model memorises noise – training error falls, validation error rises, naïve fix: more data.\r\n"
        "zoë;data-leakage;Leakage: test information reaches training, e.g. a scaler fitted on everything.\r\n"
    )
    src = tmp_path / "cp.csv"
    src.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("cp1252"))
    out = tmp_path / "out"
    assert grade(src, out) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "not UTF-8; read as cp1252" in err
    results = read_rows(out / "results.csv")
    assert [r["candidate_id"] for r in results] == ["zoë", "zoë"]
    assert "– training error falls" in store_answers(out)[2]


# ---------------------------------------------------------------- formula injection


def test_formula_cells_are_neutralised_in_csv_outputs(tmp_path):
    src = write(
        tmp_path / "answers.csv",
        [
            ["candidate_id", "question_id", "answer", "note", "delta"],
            ["=cmd()", "overfitting", GOOD, "+1+1", "-1.5"],
            ["@x", "overfitting", GOOD, "-2+3", "-2"],
            ["ok", '=HYPERLINK("http://x")', GOOD, "=1", "3"],
        ],
    )
    out = tmp_path / "out"
    assert grade(src, out) == 0
    cells = raw_cells(out / "results.csv")
    header, body = cells[0], cells[1:]
    col = {h: i for i, h in enumerate(header)}
    assert [r[col["candidate_id"]] for r in body] == ["'=cmd()", "'@x"]
    assert [r[col["note"]] for r in body] == ["'+1+1", "'-2+3"]
    assert [r[col["delta"]] for r in body] == ["-1.5", "-2"]  # plain negative numbers stay numbers
    rejected = raw_cells(out / "rejected.csv")
    assert rejected[1][2] == '\'=HYPERLINK("http://x")'
    cards = raw_cells(out / "scorecards.csv")
    assert sorted(r[0] for r in cards[1:]) == ["'=cmd()", "'@x"]
    # JSON output keeps the true value.
    v = [json.loads(x) for x in (out / "verdicts.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {x["candidate_id"] for x in v} == {"=cmd()", "@x"}


# ---------------------------------------------------------------- resume, cache, dry run


def test_rerun_makes_no_judge_calls(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    with serve() as url:
        judge = openai_judge(url)
        assert grade(EXAMPLES, out, *judge) == 0
        first = url.server.requests
        assert first >= 10  # one structured call per answer, two for the injected one
        before = (out / "results.csv").read_bytes()
        capsys.readouterr()

        # Same command again: finished rows are skipped (the results store), no request is made.
        assert grade(EXAMPLES, out, *judge) == 0
        assert url.server.requests == first
        assert "0 judge calls" in capsys.readouterr().out
        assert (out / "results.csv").read_bytes() == before

        # The store alone skips them: with an empty verdict cache nothing is asked either.
        monkeypatch.setenv("EVALUATOR_CACHE_DIR", str(tmp_path / "fresh-cache"))
        assert grade(EXAMPLES, out, *judge) == 0
        assert url.server.requests == first

        # And the verdict cache alone: a new output folder, same cache, no request.
        monkeypatch.setenv("EVALUATOR_CACHE_DIR", str(tmp_path / "cache"))
        assert grade(EXAMPLES, tmp_path / "other", *judge) == 0
        assert url.server.requests == first
        assert (tmp_path / "other" / "results.csv").read_bytes() == before

        # Changed settings are not "the same command": the rows finished with the old ones are graded again.
        capsys.readouterr()
        assert grade(EXAMPLES, out, *judge, "--max-chars", "4000") == 0
        assert url.server.requests > first
        assert "were graded again" in capsys.readouterr().out


def test_dry_run_prints_calls_tokens_cost_and_calls_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    with serve() as url:
        assert grade(EXAMPLES, out, "--dry-run", "--price-in", "2.5", judge=openai_judge(url)) == 0
        assert url.server.requests == 0
    text = capsys.readouterr().out
    assert "dry run: 10 answers, about 10 judge calls" in text
    assert "prompt tokens" in text and "est. cost $" in text and "$0.0000" not in text
    assert graded_count(out) == 0 and not (out / "results.csv").exists()
    # Probability mode: one read per criterion, the holistic read, one per red flag.
    assert grade(EXAMPLES, out, "--dry-run") == 0
    calls = int(capsys.readouterr().out.split("about ")[1].split(" judge calls")[0])
    assert calls > 10 * 5


# ---------------------------------------------------------------- OpenAI Batch API export / import


def post_json(url: str, body: dict) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_export_and_import_batch(tmp_path, capsys):
    out = tmp_path / "out"
    requests_path = out / "requests.jsonl"
    out.mkdir()
    with serve() as url:
        assert grade(EXAMPLES, out, "--export-batch", str(requests_path), judge=openai_judge(url)) == 0
        assert url.server.requests == 0
        lines = [json.loads(x) for x in requests_path.read_text(encoding="utf-8").splitlines()]
        assert len(lines) == 10
        for x in lines:
            assert set(x) == {"custom_id", "method", "url", "body"}
            assert x["method"] == "POST" and x["url"] == "/v1/chat/completions"
            body = x["body"]
            assert body["model"] == "m" and body["response_format"]["type"] == "json_schema"
            assert body["logprobs"] is True
            assert [m["role"] for m in body["messages"]] == ["system", "user"]
            assert "<answer>" in body["messages"][1]["content"]
        assert len({x["custom_id"] for x in lines}) == 10
        assert graded_count(out) == 0  # registered as pending, nothing graded

        # Run the batch "remotely": send each recorded body to the fake server, as a batch worker would.
        responses = []
        for i, x in enumerate(lines):
            status, body = post_json(url + "/chat/completions", x["body"])
            responses.append(
                {
                    "id": f"batch_req_{i}",
                    "custom_id": x["custom_id"],
                    "response": {"status_code": status, "request_id": f"req_{i}", "body": body},
                    "error": None,
                }
            )
        assert url.server.requests == 10
    # One request failed in the batch, one reply is not JSON.
    failed, broken = lines[1]["custom_id"], lines[4]["custom_id"]
    responses[1] = {
        "id": "batch_req_1",
        "custom_id": failed,
        "response": None,
        "error": {"code": "server_error", "message": "the model crashed"},
    }
    responses[4]["response"]["body"]["choices"][0]["message"]["content"] = "Sure! Here is the grade: {level: 3"
    resp_path = tmp_path / "responses.jsonl"
    resp_path.write_text("".join(json.dumps(r) + "\n" for r in responses), encoding="utf-8")
    capsys.readouterr()

    assert main(["import-batch", str(resp_path), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "imported 10 responses: 8 scored, 2 unscored, 0 still pending" in text
    results = {(r["candidate_id"], r["question_id"]): r for r in read_rows(out / "results.csv")}
    assert len(results) == 10
    by_key = {f"{r['candidate_id']}|{r['question_id']}": r for r in results.values()}
    assert by_key[failed]["status"] == "unscored" and "batch request failed" in by_key[failed]["reason"]
    assert "the model crashed" in by_key[failed]["reason"]
    assert by_key[broken]["status"] == "unscored" and "unusable" in by_key[broken]["reason"]
    scored = [r for r in results.values() if r["status"] == "scored"]
    assert len(scored) == 8 and all(r["score_100"] and r["level_correctness"] for r in scored)
    # Similarity comes from the embedder the batch was exported with.
    verdicts = [json.loads(x) for x in (out / "verdicts.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {v["similarity"]["model"] for v in verdicts if v["similarity"]} == {"fake:hash"}
    for name in ("verdicts.jsonl", "scorecards.csv", "report.html"):
        assert (out / name).exists()

    # Graded live against the fake server, the good rows get the same levels: the exported bodies ask for
    # logprobs too, so imported levels are probability-weighted exactly as live ones.
    with serve() as url:
        assert grade(EXAMPLES, tmp_path / "live", "--no-cache", judge=openai_judge(url)) == 0
    live = {v["line"]: v for v in map(json.loads, (tmp_path / "live" / "verdicts.jsonl").read_text().splitlines())}
    imported = {v["line"]: v for v in verdicts}
    compared = 0
    for line, v in imported.items():
        if v["status"] == "scored" and line != 8:  # line 8 (injected) is judged twice live, once from a batch
            assert [c["level"] for c in v["criteria"]] == [c["level"] for c in live[line]["criteria"]]
            assert all(c["probability_source"] == "top_logprobs" for c in v["criteria"])
            compared += 1
    assert compared == 7


class _Recorder(BaseHTTPRequestHandler):
    """Keeps each request body it is sent (in `server.bodies`) and answers with an empty JSON object."""

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass

    def do_POST(self):  # noqa: N802
        self.server.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        message = {"role": "assistant", "content": "{}"}
        reply = {"id": "r", "object": "chat.completion", "created": 0, "model": "m"}
        reply["choices"] = [{"index": 0, "message": message, "finish_reason": "stop"}]
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_an_exported_request_is_what_live_grading_sends(tmp_path):
    """Each Batch API line carries the very body live structured grading sends for that answer."""
    out = tmp_path / "out"
    out.mkdir()
    requests_path = out / "requests.jsonl"
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    srv.bodies = []
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    try:
        assert grade(EXAMPLES, out, "--export-batch", str(requests_path), judge=openai_judge(url)) == 0
        assert srv.bodies == []
        assert grade(EXAMPLES, tmp_path / "live", "--no-cache", judge=openai_judge(url)) == 0
    finally:
        srv.shutdown()
        srv.server_close()
    exported = [json.loads(x)["body"] for x in requests_path.read_text(encoding="utf-8").splitlines()]
    assert len(exported) == 10
    for body in exported:
        assert body in srv.bodies


# ---------------------------------------------------------------- the fake server itself


def test_fake_server_probability_mode(tmp_path):
    out = tmp_path / "out"
    with serve() as url:
        assert grade(EXAMPLES, out, "--mode", "probability", "--no-cache", judge=openai_judge(url)) == 0
        calls = url.server.requests
    rows = read_rows(out / "results.csv")
    assert len(rows) == 10 and all(r["status"] == "scored" and r["holistic_level"] for r in rows)
    verdicts = [json.loads(x) for x in (out / "verdicts.jsonl").read_text(encoding="utf-8").splitlines()]
    probs = verdicts[0]["views"]["keyidea"]["probabilities"]  # the key-idea read, digits 0-5
    assert abs(sum(probs.values()) - 1) < 1e-6 and max(probs.values()) > 0.6
    assert all(v["key_points"] and all(0 <= k["probability"] <= 1 for k in v["key_points"]) for v in verdicts)
    # One read for the key idea, one per key point, one per red flag's claim; and once per question the same
    # reads of its two anchors (an empty reply and the reference), which no verdict's usage counts.
    per_question = {}
    for v in verdicts:
        per_question[v["question_id"]] = min(per_question.get(v["question_id"], 99), v["usage"]["calls"])
    assert calls == sum(v["usage"]["calls"] for v in verdicts) + 2 * sum(per_question.values())
    assert sum(v["usage"]["calls"] for v in verdicts) > 10 * 5


def test_fake_server_faults_are_reproducible_and_transient():
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "<answer>\nhi\n</answer>\nReply."}],
        "max_tokens": 1,
        "logprobs": True,
        "top_logprobs": 5,
    }

    def statuses(seed):
        with serve(faults={"http500": 0.3, "http429": 0.3}, seed=seed) as url:
            got = [post_json(url + "/chat/completions", body) for _ in range(40)]
            assert url.server.requests == 40
            return [s for s, _ in got], got

    a, got = statuses(1)
    b, _ = statuses(1)
    c, _ = statuses(2)
    assert a == b and a != c  # decided by (seed, request number)
    assert {200, 429, 500} == set(a)  # each failure is one request's: the next one can succeed
    ok = next(reply for s, reply in got if s == 200)
    assert ok["choices"][0]["message"]["content"] in "01234" and ok["usage"]["prompt_tokens"] > 0
    assert len(ok["choices"][0]["logprobs"]["content"][0]["top_logprobs"]) == 5


def test_rows_lost_to_a_down_endpoint_are_retried_on_rerun(tmp_path, capsys):
    out = tmp_path / "out"
    with serve(faults={"http429": 1.0}) as url:
        judge = openai_judge(url)
        assert grade(EXAMPLES, out, *judge, "--timeout", "2") == 0
        rows = read_rows(out / "results.csv")
        assert rows and all(r["status"] == "unscored" and "re-run retries" in r["reason"] for r in rows)
        assert "after one repair" not in rows[0]["reason"]
        url.server.faults = type(url.server.faults)()  # the endpoint recovers
        url.server.fault_kinds = url.server.faults.kinds()
        assert grade(EXAMPLES, out, *judge) == 0
        rows = read_rows(out / "results.csv")
        assert all(r["status"] == "scored" for r in rows), [r["reason"] for r in rows]


# ---------------------------------------------------------------- embedding ahead of the judge


def test_chunks_cover_every_row_and_end_small():
    from evaluator.batch import chunk_sizes

    for n in (1, 63, 64, 65, 500, 1000, 5000):
        sizes = chunk_sizes(n)
        assert sum(sizes) == n and all(0 < s <= 512 for s in sizes)
        assert sizes[0] <= 64 and sizes[-1] <= 64  # the first verdicts come soon; few rows wait for the last step
    assert chunk_sizes(0) == []


def _rows(n: int):
    from evaluator.store import Row

    return [
        Row(f"c{i}|overfitting", i + 2, f"c{i}", "overfitting", "", f"Answer number {i} about noise.") for i in range(n)
    ]


def test_rows_come_out_in_order_with_their_answers_embedded(fake_evaluator, resources):
    import threading

    from evaluator.batch import embedded_ahead

    les = resources.load_eval_set("ml-screening")
    rows = _rows(150)
    got = list(embedded_ahead(fake_evaluator, les, rows, threading.Event(), [64, 64, 22]))
    assert got == rows
    assert all(r.answer in fake_evaluator.embedder._answers for r in rows)


def test_an_embedding_failure_reaches_the_batch(fake_evaluator, resources, monkeypatch):
    import threading

    from evaluator.batch import embedded_ahead
    from evaluator.errors import ModelInstallError

    def broken(texts):
        raise ModelInstallError("the embedding model is not installed")

    monkeypatch.setattr(fake_evaluator.embedder, "encode_answers", broken)
    with pytest.raises(ModelInstallError, match="not installed"):
        list(
            embedded_ahead(fake_evaluator, resources.load_eval_set("ml-screening"), _rows(10), threading.Event(), [10])
        )
