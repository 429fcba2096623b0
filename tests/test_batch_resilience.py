"""Issue 16: every endpoint reply is survived, what cannot work fails fast, no bad verdict is kept for good,
and odd files, signals and re-runs lose nothing silently. One section per item of the issue."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evaluator import openai_backend
from evaluator.backends import ANSWER_REFUSED
from evaluator.cli import main
from evaluator.resources import Resources
from fake_server import serve

ROOT = Path(__file__).resolve().parents[1]
FAKE = ["--judge", "fake:overlap", "--embedder", "fake:hash"]
GOOD = (
    "Overfitting is when a model learns noise in the training data, so training error is low but "
    "validation error is high; regularisation and early stopping help."
)
WORDS = "model data training validation overfitting noise regularisation loss gradient leakage split metric".split()


def write(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def answers_csv(path: Path, n: int, seed: int = 0) -> Path:
    """`n` distinct answers spread over the bank's questions."""
    qids = [q.id for q in Resources.locate().load_eval_set("ml-screening").eval_set.questions]
    rows = [["candidate_id", "question_id", "answer"]]
    for i in range(n):
        words = " ".join(WORDS[(i * 7 + k * 3 + seed) % len(WORDS)] for k in range(6 + i % 9))
        rows.append([f"c{i // len(qids):03d}", qids[i % len(qids)], f"Answer {i}: {words}."])
    return write(path, rows)


def read_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def statuses(out: Path) -> dict[str, int]:
    with sqlite3.connect(out / "results.sqlite3") as c:
        return dict(c.execute("SELECT status, COUNT(*) FROM results GROUP BY status"))


def cached(tmp_path: Path) -> int:
    db = tmp_path / "cache" / "verdicts.sqlite3"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as c:
        return c.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]


def endpoint(url: str, *extra: str) -> list[str]:
    return ["--judge", "openai", "--base-url", url, "--model", "m", "--embedder", "fake:hash", *extra]


def grade(src: Path, out: Path, *args: str) -> int:
    return main(["grade", str(src), "--out", str(out), *args])


def closed_port_url() -> str:
    """A URL nothing listens on: every connection is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def no_backoff(monkeypatch):
    """Retries happen as in production, without waiting out the backoff."""
    monkeypatch.setattr(openai_backend.OpenAIBackend, "_pause", lambda self, s: None, raising=False)


# ---------------------------------------------------------------- 1. every reply shape is survived


@pytest.mark.parametrize("mode", ["structured", "probability"])
def test_empty_html_disconnected_and_wrong_schema_replies_never_crash_a_batch(tmp_path, capsys, mode, no_backoff):
    src = answers_csv(tmp_path / "a.csv", 40)
    faults = {"empty": 0.04, "html": 0.04, "disconnect": 0.03, "wrong_schema": 0.04, "malformed": 0.03}
    with serve(faults=faults, seed=3) as url:
        rc = grade(src, tmp_path / "out", *endpoint(url, "--mode", mode, "--timeout", "2"))
        stats = url.server.stats()
    assert rc == 0, capsys.readouterr().err
    for kind in ("empty", "html", "disconnect", "wrong_schema"):
        assert stats.get(kind, 0) > 0, stats
    rows = read_rows(tmp_path / "out" / "results.csv")
    assert len(rows) == 40 and len({r["line"] for r in rows}) == 40
    assert {r["status"] for r in rows} <= {"scored", "unscored"}
    # A bad reply is asked again (up to 3 times): most rows end scored, and the others say why and are retryable.
    assert sum(r["status"] == "scored" for r in rows) >= 32
    verdicts = [json.loads(x) for x in (tmp_path / "out" / "verdicts.jsonl").read_text().splitlines()]
    assert all(v["retryable"] and "unusable" in v["reason"] for v in verdicts if v["status"] == "unscored")


def test_a_reply_unusable_every_time_is_unscored_retryable_and_regraded_on_rerun(tmp_path, no_backoff):
    src = answers_csv(tmp_path / "a.csv", 3)
    out = tmp_path / "out"
    with serve(faults={"html": 1.0}) as url:
        assert grade(src, out, *endpoint(url, "--mode", "probability")) == 0
        # Each read is asked a bounded number of times, then the row is left unscored.
        assert url.server.requests == 3 * openai_backend.UNUSABLE_ATTEMPTS
        rows = read_rows(out / "results.csv")
        assert all(r["status"] == "unscored" and "unusable after 3 attempts" in r["reason"] for r in rows)
        assert cached(tmp_path) == 0
        url.server.faults = type(url.server.faults)()
        url.server.fault_kinds = url.server.faults.kinds()
        assert grade(src, out, *endpoint(url, "--mode", "probability")) == 0
    assert {r["status"] for r in read_rows(out / "results.csv")} == {"scored"}


# ---------------------------------------------------------------- 2. what cannot work fails fast


def test_endpoint_down_stops_the_batch_within_seconds_and_names_the_url(tmp_path, capsys):
    src = answers_csv(tmp_path / "a.csv", 200)
    out = tmp_path / "out"
    url = closed_port_url()
    t0 = time.perf_counter()
    rc = grade(src, out, *endpoint(url))
    secs = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert rc != 0 and secs < 15
    assert url in err and "connection refused" in err and "--base-url" in err
    assert "200 stay pending" in err and "run the same command to resume" in err
    assert statuses(out) == {"pending": 200}
    assert cached(tmp_path) == 0
    # The outputs written say the run is incomplete.
    assert "200 answers are not graded yet" in (out / "report.html").read_text(encoding="utf-8")


def test_score_with_the_endpoint_down_fails_fast(tmp_path, capsys):
    url = closed_port_url()
    t0 = time.perf_counter()
    rc = main(["score", "-q", "overfitting", "-a", GOOD, *endpoint(url)])
    assert rc != 0 and rc != 10 and time.perf_counter() - t0 < 15
    assert url in capsys.readouterr().err


def test_a_server_closing_every_connection_trips_the_breaker(tmp_path, capsys, no_backoff):
    src = answers_csv(tmp_path / "a.csv", 60)
    with serve(faults={"disconnect": 1.0}) as url:
        rc = grade(src, tmp_path / "out", *endpoint(url, "--mode", "probability"))
        requests = url.server.requests
    assert rc != 0
    # Not 5 attempts per row: the breaker opens after BREAKER_FAILURES in a row (plus the requests in flight).
    assert requests <= openai_backend.BREAKER_FAILURES + 8
    assert "connection attempts in a row failed" in capsys.readouterr().err


# ---------------------------------------------------------------- 3. fixing the configuration fixes the results


@pytest.mark.parametrize("problem", ["key", "model"])
def test_wrong_key_or_model_stops_caches_nothing_and_the_fixed_rerun_scores_every_row(
    tmp_path, capsys, monkeypatch, problem
):
    src = answers_csv(tmp_path / "a.csv", 40)
    out = tmp_path / "out"
    with serve(api_key="right-key", models=["m"]) as url:
        wrong = {"key": ["--model", "m"], "model": ["--model", "no-such-model"]}[problem]
        env_key = "wrong-key" if problem == "key" else "right-key"
        monkeypatch.setenv("EVALUATOR_API_KEY", env_key)
        base = ["--judge", "openai", "--base-url", url, "--embedder", "fake:hash"]
        rc = grade(src, out, *base, *wrong)
        err = capsys.readouterr().err
        assert rc != 0
        assert url in err and ("EVALUATOR_API_KEY" if problem == "key" else "--model") in err
        if problem == "model":
            assert "it serves: m" in err  # the hint lists the models the server offers
        # Stopped at the first refusal: one request, not one per row or per dialect.
        stats = url.server.stats()
        assert stats.get("http401", 0) + stats.get("http404", 0) == 1 and stats["requests"] == 0
        assert statuses(out) == {"pending": 40} and cached(tmp_path) == 0

        # `score` caches nothing either, and exits non-zero.
        assert main(["score", "-q", "overfitting", "-a", GOOD, *base, *wrong]) != 0
        assert cached(tmp_path) == 0

        monkeypatch.setenv("EVALUATOR_API_KEY", "right-key")
        assert grade(src, out, *base, "--model", "m") == 0
        assert url.server.requests == 40
    assert {r["status"] for r in read_rows(out / "results.csv")} == {"scored"}


def test_old_unscored_verdicts_in_store_and_cache_are_regraded(tmp_path):
    """A store and cache written by an earlier version (401 verdicts kept as final) do not keep them."""
    src = answers_csv(tmp_path / "a.csv", 5)
    out = tmp_path / "out"
    with serve() as url:
        assert grade(src, out, *endpoint(url)) == 0
        for db, table in ((out / "results.sqlite3", "results"), (tmp_path / "cache" / "verdicts.sqlite3", "verdicts")):
            with sqlite3.connect(db) as c:
                c.execute(
                    f"UPDATE {table} SET verdict = json_set(verdict, '$.status', 'unscored', '$.reason', "
                    "'endpoint answered HTTP 401: bad key', '$.retryable', json('false'))"
                    + (", status = 'unscored'" if table == "results" else "")
                )
        before = url.server.requests
        assert grade(src, out, *endpoint(url)) == 0
        assert url.server.requests - before == 5
    assert {r["status"] for r in read_rows(out / "results.csv")} == {"scored"}


def test_refresh_regrades_every_row_in_the_same_folder(tmp_path):
    src = answers_csv(tmp_path / "a.csv", 6)
    out = tmp_path / "out"
    with serve() as url:
        assert grade(src, out, *endpoint(url)) == 0
        first = url.server.requests
        assert grade(src, out, *endpoint(url)) == 0
        assert url.server.requests == first
        assert grade(src, out, *endpoint(url, "--refresh")) == 0
        assert url.server.requests - first == first


def test_an_answer_too_long_for_the_judge_is_final_and_cached(tmp_path):
    """The one unscored verdict kept for good: the endpoint refuses the answer itself, and would again."""
    src = write(
        tmp_path / "a.csv",
        [
            ["candidate_id", "question_id", "answer"],
            ["ana", "overfitting", GOOD],
            ["ben", "overfitting", "Noise is memorised. " * 300],  # 6000 characters, under --max-chars
            ["cara", "overfitting", GOOD + " Early stopping too."],
        ],
    )
    out = tmp_path / "out"
    # The prompt around an answer is ~5000 characters: 10000 takes the short answers, not the 6000-character one.
    with serve(context_chars=10000) as url:
        assert grade(src, out, *endpoint(url)) == 0
        rows = {r["candidate_id"]: r for r in read_rows(out / "results.csv")}
        assert rows["ben"]["status"] == "unscored" and rows["ben"]["reason"].startswith(ANSWER_REFUSED)
        assert "maximum context length" in rows["ben"]["reason"]
        assert rows["ana"]["status"] == rows["cara"]["status"] == "scored"
        assert cached(tmp_path) == 3
        before = url.server.stats()
        assert grade(src, out, *endpoint(url)) == 0
        assert grade(src, tmp_path / "elsewhere", *endpoint(url)) == 0  # the cache keeps it too
        assert url.server.stats() == before  # nothing asked again


# ---------------------------------------------------------------- 4. bad replies are not final


def test_malformed_json_after_the_repair_is_retryable_and_regraded(tmp_path, no_backoff):
    src = answers_csv(tmp_path / "a.csv", 4)
    out = tmp_path / "out"
    with serve(faults={"malformed": 1.0}) as url:
        assert grade(src, out, *endpoint(url, "--mode", "structured")) == 0
        rows = read_rows(out / "results.csv")
        assert all(r["status"] == "unscored" and "after one repair" in r["reason"] for r in rows)
        verdicts = [json.loads(x) for x in (out / "verdicts.jsonl").read_text().splitlines()]
        assert all(v["retryable"] for v in verdicts)
        assert cached(tmp_path) == 0
        url.server.faults = type(url.server.faults)()
        url.server.fault_kinds = url.server.faults.kinds()
        assert grade(src, out, *endpoint(url, "--mode", "structured")) == 0
    assert {r["status"] for r in read_rows(out / "results.csv")} == {"scored"}


def test_malformed_digit_reads_are_asked_again_in_probability_mode(tmp_path, no_backoff):
    # Faults keyed by request, not by arrival order: with faults on arrival numbers, some read drew three malformed
    # replies in a row in about a quarter of the runs, depending on thread timing.
    src = answers_csv(tmp_path / "a.csv", 30)
    with serve(faults={"malformed": 0.1}, seed=5, faults_by_request=True) as url:
        assert grade(src, tmp_path / "out", *endpoint(url, "--mode", "probability")) == 0
        assert url.server.stats()["malformed"] > 10
    assert {r["status"] for r in read_rows(tmp_path / "out" / "results.csv")} == {"scored"}


# ---------------------------------------------------------------- 5. dialect detection


def test_a_burst_of_500s_at_start_does_not_decide_the_dialect(tmp_path, no_backoff):
    src = answers_csv(tmp_path / "a.csv", 20)
    out = tmp_path / "out"
    with serve(faults={"first_500": 12}) as url:
        assert grade(src, out, *endpoint(url, "--mode", "structured")) == 0
        stats = url.server.stats()
        # Only the json_schema form was ever sent: the 500s said nothing about it.
        assert stats.get("form:llama_cpp", 0) == 0 and stats.get("form:json_object", 0) == 0, stats
        # The rows whose five attempts all fell in the burst are unscored for now; the same command grades them.
        unscored = [r for r in read_rows(out / "results.csv") if r["status"] != "scored"]
        assert len(unscored) == 12 // 5 and all("endpoint failed after 5 attempts" in r["reason"] for r in unscored)
        assert grade(src, out, *endpoint(url, "--mode", "structured")) == 0
    assert {r["status"] for r in read_rows(out / "results.csv")} == {"scored"}


def test_a_rejected_form_is_probed_once_then_the_next_one_is_kept(tmp_path):
    src = answers_csv(tmp_path / "a.csv", 20)
    with serve(reject_dialects=("json_schema",)) as url:
        assert grade(src, tmp_path / "out", *endpoint(url, "--mode", "structured")) == 0
        stats = url.server.stats()
    assert stats["form:json_schema"] == 1 and stats["form:llama_cpp"] == 20, stats


# ---------------------------------------------------------------- 6. and 7. big cells, unbalanced quotes


def test_a_huge_cell_rejects_its_row_only(tmp_path, capsys):
    src = write(
        tmp_path / "a.csv",
        [
            ["candidate_id", "question_id", "answer"],
            ["ana", "overfitting", GOOD],
            ["ben", "overfitting", "x " * 500_000],
            ["cara", "overfitting", GOOD + " Also more data."],
        ],
    )
    out = tmp_path / "out"
    assert grade(src, out, *FAKE) == 0
    assert [r["line"] for r in read_rows(out / "rejected.csv")] == ["3"]
    assert "over the limit of 8000 (raise --max-chars)" in read_rows(out / "rejected.csv")[0]["reason"]
    assert len(read_rows(out / "results.csv")) == 2
    # --max-chars lifts it.
    assert grade(src, tmp_path / "out2", *FAKE, "--max-chars", "2000000") == 0
    assert len(read_rows(tmp_path / "out2" / "results.csv")) == 3


def test_an_unbalanced_quote_that_swallows_a_row_is_reported(tmp_path, capsys):
    src = tmp_path / "a.csv"
    src.write_text(
        "candidate_id,question_id,answer\n"
        f'ana,overfitting,"{GOOD}\n'
        "ben,overfitting,Training error low and validation error high.\n"
        'cara,precision-recall-f1,"Precision is TP/(TP+FP)."\n',
        encoding="utf-8",
    )
    grade(src, tmp_path / "out", *FAKE)
    err = capsys.readouterr().err
    assert "the row starting on line 2" in err and "line 3 looks like a row of its own" in err


def test_multiline_answers_without_a_lookalike_row_give_no_warning(tmp_path, capsys):
    src = write(
        tmp_path / "a.csv",
        [["candidate_id", "question_id", "answer"], ["ana", "overfitting", "Line one.\nLine two.\nLine three."]],
    )
    assert grade(src, tmp_path / "out", *FAKE) == 0
    assert "warning" not in capsys.readouterr().err


# ---------------------------------------------------------------- 8. signals


def _run_until_some_rows(tmp_path: Path, sig: int, embedder: str, rows: int = 300) -> tuple[int, str, Path]:
    src = answers_csv(tmp_path / "a.csv", rows)
    out = tmp_path / "out"
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["PYTHONFAULTHANDLER"] = "1"  # a process that hangs after the signal is aborted with every thread's stack
    with serve(latency=0.05) as url:
        cmd = [sys.executable, "-m", "evaluator", "grade", str(src), "--out", str(out), "--judge", "openai",
               "--base-url", url, "--model", "m", "--embedder", embedder, "--concurrency", "4"]  # fmt: skip
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        try:
            while True:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "no progress"
                try:
                    with sqlite3.connect(f"file:{out / 'results.sqlite3'}?mode=ro", uri=True, timeout=1) as c:
                        n = c.execute("SELECT COUNT(*) FROM results WHERE status != 'pending'").fetchone()[0]
                except sqlite3.Error:
                    n = 0
                if n >= 10:
                    break
                time.sleep(0.05)
            proc.send_signal(sig)
            try:
                _, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGABRT)
                _, stacks = proc.communicate(timeout=30)
                raise AssertionError(
                    f"still running 60 s after {signal.Signals(sig).name}; its threads:\n{stacks[-6000:]}"
                ) from None
        finally:
            if proc.poll() is None:
                proc.kill()
    return proc.returncode, err, out


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_and_sigterm_stop_cleanly_and_say_how_to_resume(tmp_path, sig, code):
    rc, err, out = _run_until_some_rows(tmp_path, sig, "fake:hash")
    assert rc == code, err
    name = signal.Signals(sig).name
    assert f"stopped by {name}:" in err and "To resume, run the same command." in err
    assert "Traceback" not in err
    counts = statuses(out)
    assert counts.get("pending", 0) > 0
    cards = read_rows(out / "scorecards.csv")
    assert sum(int(c["pending"]) for c in cards) == counts["pending"]
    # A candidate with answers still pending gets no recommendation.
    assert all(c["recommendation"] == "pending" for c in cards if int(c["pending"]))
    assert "answers are not graded yet" in (out / "report.html").read_text(encoding="utf-8")


@pytest.mark.slow
def test_sigint_with_the_minilm_embedder_does_not_abort(tmp_path):
    rc, err, _ = _run_until_some_rows(tmp_path, signal.SIGINT, "minilm", rows=1500)
    assert rc == 130, err
    assert "terminate called" not in err


def test_a_stopped_batch_saves_the_rows_that_finished_and_joins_the_embedding_thread(fake_evaluator, resources):
    import threading

    from evaluator.batch import Progress, grade_rows
    from evaluator.store import ResultStore, Row

    les = resources.load_eval_set("ml-screening")
    rows = [Row(f"c{i}|overfitting", i + 2, f"c{i}", "overfitting", "", f"Answer {i} about noise.") for i in range(300)]
    store = ResultStore(Path(os.environ["EVALUATOR_CACHE_DIR"]).parent / "store.sqlite3")
    store.register(rows)
    stop = threading.Event()
    progress = Progress(total=len(rows))

    def on_done(p):
        if p.done >= 20:
            stop.set()

    grade_rows(fake_evaluator, les, rows, store, 2, progress, on_done, stop)
    assert 20 <= progress.done < 300
    assert sum(r.status != "pending" for r in store.all()) == progress.done
    assert not [t for t in threading.enumerate() if t.name == "embed-ahead"]


# ---------------------------------------------------------------- 9. atomic outputs


def test_a_failure_while_writing_outputs_leaves_the_previous_files(tmp_path, monkeypatch):
    from evaluator import csvio

    src = answers_csv(tmp_path / "a.csv", 20)
    out = tmp_path / "out"
    assert grade(src, out, *FAKE) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".csv", ".jsonl", ".html")}
    real = csvio.safe_cell
    calls = []

    def failing(value):
        calls.append(1)
        if len(calls) > 50:
            raise OSError("disk full")
        return real(value)

    monkeypatch.setattr(csvio, "safe_cell", failing)
    with pytest.raises(OSError):
        grade(src, out, *FAKE, "--refresh")
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".csv", ".jsonl", ".html")}
    assert after == before
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------- 10. odd bytes


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_files_are_read_from_their_bom(tmp_path, capsys, encoding):
    text = f'candidate_id,question_id,answer\r\nzoë,overfitting,"{GOOD} Café."\r\n'
    data = text.encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data
    src = tmp_path / "a.csv"
    src.write_bytes(data)
    out = tmp_path / "out"
    assert grade(src, out, *FAKE) == 0
    rows = read_rows(out / "results.csv")
    assert [(r["candidate_id"], r["status"]) for r in rows] == [("zoë", "scored")]
    assert "\x00" not in capsys.readouterr().err


def test_nul_bytes_are_stripped_and_a_nul_only_answer_is_empty(tmp_path, capsys):
    src = tmp_path / "a.csv"
    src.write_text(
        "candidate_id,question_id,answer,note\n"
        f'ana,overfitting,"{GOOD}\x00",no\x00te\n'
        "ben,overfitting,\x00\x00\x00\x00,x\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    assert grade(src, out, *FAKE) == 0
    err = capsys.readouterr().err
    assert "\x00" not in err and "NUL bytes removed" in err
    assert [(r["line"], r["reason"]) for r in read_rows(out / "rejected.csv")] == [("3", "answer is empty")]
    for name in ("results.csv", "report.html", "verdicts.jsonl", "scorecards.csv", "rejected.csv"):
        assert b"\x00" not in (out / name).read_bytes(), name
    assert read_rows(out / "results.csv")[0]["note"] == "note"


def test_full_width_formula_prefixes_are_neutralised():
    from evaluator.csvio import safe_cell

    for prefix in ("＝", "＋", "－", "＠"):
        assert safe_cell(prefix + "HYPERLINK(1)") == "'" + prefix + "HYPERLINK(1)"
    assert safe_cell("-2") == "-2" and safe_cell("\x00=1") == "'=1"


# ---------------------------------------------------------------- 11. credentials in a base URL


def test_credentials_in_the_base_url_reach_no_output_cache_or_message(tmp_path, capsys):
    src = answers_csv(tmp_path / "a.csv", 3)
    out = tmp_path / "out"
    with serve() as url:
        secret_url = url.replace("http://", "http://alice:s3cr3t-pa55@")
        assert grade(src, out, *endpoint(secret_url)) == 0
    text = capsys.readouterr()
    assert "s3cr3t-pa55" not in text.out + text.err
    for p in [*out.iterdir(), *(tmp_path / "cache").iterdir()]:
        if p.is_file():
            assert b"s3cr3t-pa55" not in p.read_bytes(), p
    v = json.loads((out / "verdicts.jsonl").read_text().splitlines()[0])
    assert v["provenance"]["judge_params"]["base_url"] == url
    # And in an error message.
    down = closed_port_url().replace("http://", "http://alice:s3cr3t-pa55@")
    assert grade(src, tmp_path / "down", *endpoint(down)) != 0
    assert "s3cr3t-pa55" not in capsys.readouterr().err


# ---------------------------------------------------------------- 12. re-running into a folder with a changed CSV


def test_a_changed_csv_updates_the_store_and_reports_rows_it_no_longer_has(tmp_path, capsys):
    out = tmp_path / "out"
    first = write(
        tmp_path / "a.csv",
        [["candidate_id", "question_id", "answer"], ["ana", "overfitting", GOOD], ["ben", "overfitting", GOOD + " x"]],
    )
    assert grade(first, out, *FAKE) == 0
    changed = write(
        tmp_path / "b.csv",
        [["candidate_id", "question_id", "answer"], ["ana", "overfitting", "A new answer about noise and variance."]],
    )
    capsys.readouterr()
    assert grade(changed, out, *FAKE) == 0
    err = capsys.readouterr().err
    assert "1 rows in" in err and "are not in" in err and "--prune" in err
    with sqlite3.connect(out / "results.sqlite3") as c:
        answer, verdict = c.execute("SELECT answer, verdict FROM results WHERE key = 'ana|overfitting'").fetchone()
    assert answer == "A new answer about noise and variance."
    assert json.loads(verdict)["answer_chars"] == len(answer)
    assert {r["candidate_id"] for r in read_rows(out / "results.csv")} == {"ana", "ben"}

    assert grade(changed, out, *FAKE, "--prune") == 0
    assert "pruned 1 rows" in capsys.readouterr().err
    assert [r["candidate_id"] for r in read_rows(out / "results.csv")] == ["ana"]
