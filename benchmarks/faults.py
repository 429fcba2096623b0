"""Fault benchmark: a 1000-row batch against the fake server with every fault kind mixed in.

    .venv/bin/python benchmarks/faults.py [--rows 1000] [--modes structured,probability]

For each judging mode, the same CSV is graded three times by `evaluator grade` (a new process each, as users run
it; the fake:hash embedder, so the judge calls are what is measured; no verdict cache):

- fault-free: the server answers every request;
- faulty: HTTP 500 and 429, timeouts (the server sleeps past the client's --timeout), cut-off JSON, empty bodies
  and HTML error pages served with status 200, connections closed without a reply, and valid JSON of the wrong
  schema, each a fixed fraction of requests, decided by (seed, request number);
- re-run: the same command again against the faulty server, which grades the rows left unscored.

It prints rows scored, unscored by reason, lost (must be 0), duplicated (must be 0), retries (requests beyond the
fault-free run's) and wall time against the fault-free run. Then the endpoint-down case: the same 1000 rows against
a port nothing listens on; the time until `grade` exits (non-zero), process start included (must be under 15 s).

The fake server runs in a child process, as a real endpoint would.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluator.resources import Resources  # noqa: E402

FAULTS = {
    "http500": 0.04,
    "http429": 0.03,
    "timeout": 0.02,
    "malformed": 0.03,
    "empty": 0.03,
    "html": 0.03,
    "disconnect": 0.03,
    "wrong-schema": 0.03,
}
WORDS = (
    "model data training validation overfitting regularisation loss gradient feature label precision recall "
    "bias variance split leakage test metric cross fold tree forest threshold sample noise pipeline"
).split()


@contextlib.contextmanager
def fake_server(latency: float, faults: dict[str, float], seed: int = 11):
    args = [sys.executable, str(ROOT / "tests" / "fake_server.py"), "--latency", str(latency), "--seed", str(seed)]
    for k, v in faults.items():
        args += [f"--{k}", str(v)]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http"), url
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def stats(url: str) -> dict:
    with urllib.request.urlopen(url + "/fake/stats", timeout=10) as r:
        return json.loads(r.read())


def write_csv(path: Path, n: int) -> None:
    qids = [q.id for q in Resources.locate().load_eval_set("ml-screening").eval_set.questions]
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["candidate_id", "question_id", "answer"])
        for i in range(n):
            words = " ".join(WORDS[(i * 7 + k * 5) % len(WORDS)] for k in range(8 + i % 23))
            w.writerow([f"cand{i // len(qids):04d}", qids[i % len(qids)], f"Answer {i}: {words}."])


def grade(src: Path, out: Path, url: str, mode: str, timeout: float = 0.5) -> tuple[int, float, str]:
    cmd = [sys.executable, "-m", "evaluator", "grade", str(src), "--out", str(out), "--judge", "openai",
           "--base-url", url, "--model", "m", "--mode", mode, "--embedder", "fake:hash", "--no-cache",
           "--concurrency", "16", "--timeout", str(timeout)]  # fmt: skip
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    return p.returncode, time.perf_counter() - t0, p.stdout + p.stderr


def outcome(out: Path, valid: int) -> dict:
    with open(out / "results.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    keys = [(r["candidate_id"], r["question_id"]) for r in rows]
    reasons = Counter(re.split(r"[:(;]", r["reason"])[0].strip() for r in rows if r["status"] == "unscored")
    return {
        "scored": sum(r["status"] == "scored" for r in rows),
        "unscored": dict(reasons),
        "pending": sum(r["status"] == "pending" for r in rows),
        "lost": valid - len(set(keys)),
        "duplicated": len(keys) - len(set(keys)),
    }


def run_mode(mode: str, src: Path, n: int, work: Path, latency: float) -> None:
    with fake_server(latency, {}) as url:
        rc0, t_clean, _ = grade(src, work / f"{mode}-clean", url, mode)
        clean_requests = stats(url)["requests"]
    assert rc0 == 0
    with fake_server(latency, FAULTS) as url:
        rc1, t_faulty, log = grade(src, work / f"{mode}-faulty", url, mode)
        s1 = stats(url)
        first = outcome(work / f"{mode}-faulty", n)
        rc2, t_rerun, _ = grade(src, work / f"{mode}-faulty", url, mode)
        s2 = stats(url)
        second = outcome(work / f"{mode}-faulty", n)
    assert rc1 == 0, log
    faults = {k: v for k, v in s1.items() if k not in ("requests", "max_in_flight", "ok") and not k.startswith("form:")}
    print(f"\n## {mode} mode, {n} rows, latency {latency * 1000:.0f} ms, concurrency 16, --timeout 0.5 s")
    print(f"faults served in the faulty run: {faults} of {s1['requests']} requests")
    print("| run | exit | rows scored | unscored by reason | lost | duplicated | requests | retries | wall time |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| fault-free | {rc0} | {n} | - | 0 | 0 | {clean_requests} | - | {t_clean:.1f} s |")
    print(
        f"| faulty | {rc1} | {first['scored']} | {first['unscored'] or '-'} | {first['lost']} | {first['duplicated']} | "
        f"{s1['requests']} | {s1['requests'] - clean_requests} | {t_faulty:.1f} s ({t_faulty / t_clean:.2f}x) |"
    )
    print(
        f"| re-run (same command) | {rc2} | {second['scored']} | {second['unscored'] or '-'} | {second['lost']} | "
        f"{second['duplicated']} | {s2['requests'] - s1['requests']} | - | {t_rerun:.1f} s |"
    )


def endpoint_down(src: Path, work: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    print(f"\n## endpoint down ({url}, nothing listening), {sum(1 for _ in open(src)) - 1} rows")
    for mode in ("structured", "probability"):
        rc, secs, log = grade(src, work / f"down-{mode}", url, mode, timeout=120)
        first_error = next((x for x in log.splitlines() if x.startswith("error:")), log.strip()[-300:])
        print(f"- {mode}: exit {rc} after {secs:.1f} s (process start included): {first_error}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--modes", default="structured,probability")
    ap.add_argument("--latency", type=float, default=0.02)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        src = work / "answers.csv"
        write_csv(src, a.rows)
        for mode in a.modes.split(","):
            run_mode(mode, src, a.rows, work, a.latency)
        endpoint_down(src, work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
