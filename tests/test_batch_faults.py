"""Batch grading against a faulty endpoint, and a run killed mid-way then resumed."""

from __future__ import annotations

import ast
import csv
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from evaluator.cli import main
from evaluator.resources import Resources
from fake_server import serve

ROOT = Path(__file__).resolve().parents[1]
WORDS = (
    "model data training validation overfitting regularisation loss gradient feature label precision recall "
    "bias variance split leakage test metric cross fold tree forest threshold sample noise pipeline"
).split()


def synthetic_csv(path: Path, candidates: int, questions: int, seed: int = 0, bad: int = 0) -> int:
    """candidates x bank questions of synthetic answers (plus `bad` rows with unknown ids); returns valid rows."""
    qids = [q.id for q in Resources.locate().load_eval_set("ml-screening").eval_set.questions][:questions]
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["candidate_id", "question_id", "answer", "batch"])
        for c in range(candidates):
            for q in qids:
                n = rng.randint(8, 40)
                w.writerow(
                    [f"cand{c:03d}", q, " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + ".", f"b{c % 3}"]
                )
        for i in range(bad):
            w.writerow([f"bad{i}", f"not-a-question-{i}", "Some answer text here.", "b9"])
    return candidates * len(qids)


def read_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def finished(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as c:
            return c.execute("SELECT COUNT(*) FROM results WHERE status != 'pending'").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_faulty_endpoint_loses_and_duplicates_nothing(tmp_path, capsys):
    src = tmp_path / "answers.csv"
    valid = synthetic_csv(src, candidates=20, questions=15, bad=4)
    assert valid == 300
    out = tmp_path / "out"
    faults = {
        "http500": 0.10,
        "timeout": 0.05,
        "malformed": 0.05,
        "http429": 0.05,
        "timeout_sleep": 1.0,
        "retry_after": "0",
    }
    with serve(faults=faults, seed=7) as url:
        rc = main(
            [
                "grade",
                str(src),
                "--out",
                str(out),
                "--judge",
                "openai",
                "--base-url",
                url,
                "--model",
                "m",
                "--mode",
                "structured",
                "--embedder",
                "fake:hash",
                "--concurrency",
                "16",
                "--timeout",
                "0.5",
            ]
        )
        stats = url.server.stats()
    assert rc == 0
    # Every kind of fault happened, and was survived.
    assert stats["requests"] > valid
    for kind in ("http500", "timeout", "malformed", "http429"):
        assert stats.get(kind, 0) > 0, stats

    rows = read_rows(out / "results.csv")
    assert len(rows) == valid  # none lost
    keys = [(r["candidate_id"], r["question_id"]) for r in rows]
    assert len(set(keys)) == valid and len({r["line"] for r in rows}) == valid  # none duplicated
    assert {r["status"] for r in rows} <= {"scored", "unscored"}
    for r in rows:
        if r["status"] == "scored":
            assert r["score_100"] != "" and r["reason"] == ""
        else:
            assert r["reason"].strip() and r["score_100"] == ""
    assert len((out / "verdicts.jsonl").read_text(encoding="utf-8").splitlines()) == valid
    assert len(read_rows(out / "rejected.csv")) == 4
    assert {r["batch"] for r in rows} == {"b0", "b1", "b2"}

    text = capsys.readouterr().out
    # The reasons dict is printed only when something is unscored: a run where the retries recovered every row
    # prints "0 unscored, 4 rejected" (the pattern used to require the dict's leading space, so such runs failed).
    m = re.search(r"graded (\d+) scored, (\d+) unscored(?: (\{.*?\}))?, (\d+) rejected", text)
    assert m, text
    scored, unscored, rejected = int(m.group(1)), int(m.group(2)), int(m.group(4))
    by_reason = ast.literal_eval(m.group(3)) if m.group(3) else {}  # the printed dict of reason -> count
    assert scored == sum(r["status"] == "scored" for r in rows)
    assert unscored == sum(r["status"] == "unscored" for r in rows) == sum(by_reason.values())
    assert scored + unscored == valid and rejected == 4
    assert scored >= 0.9 * valid  # retries and the repair re-ask recover almost everything


def test_concurrency_bounds_requests_in_flight(tmp_path):
    """--concurrency bounds the requests at the endpoint, though more worker threads prepare rows."""
    src = tmp_path / "answers.csv"
    synthetic_csv(src, candidates=6, questions=10, seed=2)
    with serve(latency=0.05) as url:
        rc = main(
            ["grade", str(src), "--out", str(tmp_path / "out"), "--judge", "openai", "--base-url", url, "--model", "m",
             "--mode", "structured", "--concurrency", "4", "--embedder", "fake:hash", "--no-cache"]
        )  # fmt: skip
        stats = url.server.stats()
    assert rc == 0 and stats["requests"] == 60
    assert stats["max_in_flight"] == 4


def grade_args(src, out, url) -> list[str]:
    """The same grading command for the killed run, its resume and the uninterrupted reference."""
    return ["grade", str(src), "--out", str(out), "--judge", "openai", "--base-url", url, "--model", "m",
            "--concurrency", "4", "--embedder", "fake:hash", "--no-cache"]  # fmt: skip


def test_killed_run_resumes_to_the_same_results(tmp_path):
    src = tmp_path / "answers.csv"
    total = synthetic_csv(src, candidates=12, questions=10, seed=1)
    out, ref = tmp_path / "killed", tmp_path / "reference"
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    with serve(latency=0.05) as url:
        cmd = [sys.executable, "-m", "evaluator", *grade_args(src, out, url)]
        log = open(tmp_path / "first.log", "wb")
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        try:
            while finished(out / "results.sqlite3") < 15:
                assert proc.poll() is None, (
                    "the run ended before it could be killed: " + (tmp_path / "first.log").read_text()
                )
                assert time.monotonic() < deadline, "no progress within 60 s"
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=10)
            log.close()
        assert proc.returncode == -signal.SIGKILL
        done = finished(out / "results.sqlite3")
        assert 15 <= done < total
        with sqlite3.connect(out / "results.sqlite3") as c:
            assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert not (out / "results.csv").exists()

        before = url.server.requests
        again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        # Only the rows not saved before the kill were judged again (one structured call each).
        assert url.server.requests - before == total - done

    with serve() as url:
        assert main(grade_args(src, ref, url)) == 0
    resumed, reference = read_rows(out / "results.csv"), read_rows(ref / "results.csv")
    assert len(resumed) == total
    assert resumed == reference
    assert (out / "results.csv").read_bytes() == (ref / "results.csv").read_bytes()
