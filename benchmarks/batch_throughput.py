"""Batch grading throughput against the fake OpenAI-compatible server.

    .venv/bin/python benchmarks/batch_throughput.py [--answers 500] [--concurrent-answers 1000]

(a) answers/s of `grade` end to end (in-process; structured mode against an instant fake server; the real
    MiniLM embedder; a fresh verdict cache) beside the bare MiniLM encode rate on the same answers, measured
    just before each case (this machine's speed drifts by up to ~20% over minutes), in three cases: the bank's
    first batch on this machine with the vectors shipped beside it (ml-screening.vectors.npz), its first
    batch without them (as for an imported bank: references and key points are encoded too), and a
    later batch (they are in the on-disk vector cache);
(b) 1000 answers at --concurrency 32 against a server with 200 ms latency: wall time against the ideal
    N * latency / concurrency;
(c) a re-run of the finished batch: judge calls made (must be 0);
(d) the embedded default judge (probability mode, reference-only rubric) on real short answers (the Mohler
    set in ../shared/datasets, questions imported with `evaluator questions import`), rows grouped by question:
    answers/s of a warm batch (model loaded, verdict cache off) end to end and in the grading phase, beside
    the judge alone on the same answers in the same order just before (the machine's speed drifts).

The fake server runs in a child process, as a real endpoint would, so its work does not compete with
the client for the interpreter lock. (b) and (c) run `evaluator grade` as a new process each, as users do
(so they do not depend on what ran before them), with the fake:hash embedder so that they measure the judge
calls, not the embedding model.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluator import GradeSummary, build_evaluator, grade_csv  # noqa: E402
from evaluator.bank_import import import_questions, write_eval_set  # noqa: E402
from evaluator.embeddings import MiniLMEmbedder, get_embedder, sentence_spans  # noqa: E402


def split_sentences(text: str) -> list[str]:
    return [text[a:b] for a, b in sentence_spans(text)]


from evaluator.resources import Resources  # noqa: E402


@contextlib.contextmanager
def fake_server(latency: float):
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "fake_server.py"), "--latency", str(latency)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"the fake server did not start: {url!r}")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def server_requests(url: str) -> int:
    with urllib.request.urlopen(url + "/fake/stats", timeout=10) as r:
        return json.loads(r.read())["requests"]


FILLERS = (
    "in practice",
    "usually",
    "as far as I know",
    "in my last project",
    "roughly speaking",
    "for example",
    "honestly",
    "in most cases",
    "at work",
    "I think",
)


def make_answers(n: int, seed: int) -> list[tuple[str, str, str]]:
    """(candidate, question, answer): answers stitched from sentences of the bank's references and exemplars,
    so their length and sentence structure look like real answers (3-6 sentences); each sentence gets a
    filler phrase and a candidate tag so no sentence repeats across answers (as with real candidates)."""
    les = Resources.locate().load_eval_set("ml-screening")
    rng = random.Random(seed)
    qs = les.eval_set.questions
    rows = []
    for i in range(n):
        q = qs[i % len(qs)]
        pool = [s for t in list(q.references) + [e.answer for e in q.exemplars] for s in split_sentences(t)]
        picked = rng.sample(pool, min(rng.randint(3, 6), len(pool)))
        text = " ".join(
            f"{rng.choice(FILLERS).capitalize()} (#{i}.{j}), {s[0].lower()}{s[1:]}" for j, s in enumerate(picked)
        )
        rows.append((f"c{seed}-{i // len(qs):03d}", q.id, text[:2000]))
    return rows


def grader_texts(rows) -> list[str]:
    """What `grade` encodes besides the answers (see batch.embedded_ahead): the references and key points of the
    questions answered. Sentence vectors come from the answers' own pass (pooled token spans)."""
    les = Resources.locate().load_eval_set("ml-screening")
    return list(dict.fromkeys(t for qid in dict.fromkeys(r[1] for r in rows) for t in les.by_id[qid].reference_texts))


def write_csv(path: Path, rows) -> None:
    import csv

    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["candidate_id", "question_id", "answer"])
        w.writerows(rows)


def grading_secs(stdout: str) -> float:
    """The grading phase's seconds, as `grade` prints them in its summary."""
    m = re.search(r" in ([0-9.]+) s;", stdout)
    return float(m.group(1)) if m else float("nan")


def run_grade(src: Path, out: Path, judge: dict, **grade_kw) -> tuple[float, float, GradeSummary]:
    """Grades in-process through the library as `evaluator grade` does (a new evaluator, no explanation pass, no
    verdict cache); returns (wall seconds, grading-phase seconds, the summary)."""
    t0 = time.perf_counter()
    ev = build_evaluator(explain=False, use_cache=False, **judge)
    summary = grade_csv(src, out, ev, **grade_kw)
    return time.perf_counter() - t0, summary.seconds, summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--answers", type=int, default=500, help="answers for (a)")
    p.add_argument("--concurrent-answers", type=int, default=1000, help="answers for (b) and (c)")
    p.add_argument("--latency", type=float, default=0.2, help="server latency for (b), seconds")
    p.add_argument("--concurrency", type=int, default=32, help="concurrency for (b)")
    p.add_argument("--parts", default="abcd", help="which parts to run: any of a, b, c, d (c needs b)")
    p.add_argument("--local-answers", type=int, default=300, help="answers for (d)")
    p.add_argument("--mohler", type=Path, default=ROOT.parent / "shared" / "datasets" / "mohler" / "answers.csv")
    p.add_argument(
        "--no-cache",
        dest="extra",
        action="store_const",
        const=["--no-cache"],
        default=[],
        help="(b) and (c) without the verdict cache (it is on by default, as for users)",
    )
    a = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="batch-bench-"))
    os.environ["EVALUATOR_CACHE_DIR"] = str(work / "cache")  # a fresh verdict cache
    results: list[tuple[str, str]] = []

    if "a" in a.parts:
        results += part_a(a, work)
    calls_c = 0
    if "b" in a.parts:
        rb, calls_c = part_bc(a, work, "c" in a.parts)
        results += rb
    if "d" in a.parts:
        results += part_d(a, work)

    w = max(len(k) for k, _ in results)
    print(
        f"\nbatch throughput (cpu cores: {os.cpu_count()}, load average: "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())})"
    )
    print("-" * (w + 50))
    for k, v in results:
        print(f"{k:<{w}}  {v}")
    print("-" * (w + 50))
    if calls_c != 0:
        print("FAIL: the re-run made judge calls")
        return 1
    return 0


def part_a(a, work: Path) -> list[tuple[str, str]]:
    """End to end against the bare encode rate."""
    rows = make_answers(a.answers, seed=1)
    answers = [r[2] for r in rows]
    refs = grader_texts(rows)
    t0 = time.perf_counter()
    bare = MiniLMEmbedder()
    bare.encode(["warm up"])  # model load is a one-off, outside both rates
    load_secs = time.perf_counter() - t0

    def bare_secs(texts: list[str]) -> float:
        t0 = time.perf_counter()
        bare.encode(texts)
        return time.perf_counter() - t0

    refs_secs = bare_secs(refs)
    get_embedder("minilm").encode(["warm up"])  # load the grader's (process-wide) model instance too

    src = work / "a.csv"
    write_csv(src, rows)
    # The same bank without its shipped vectors file, as an imported bank would be.
    bare_bank = work / "bank-without-vectors" / "ml-screening.yaml"
    bare_bank.parent.mkdir()
    shutil.copy(Resources.locate().eval_set_path("ml-screening"), bare_bank)
    grader = get_embedder("minilm")
    cases = {  # name: (eval set, vector cache folder)
        "first batch, bank vectors shipped": ("ml-screening", work / "vc-shipped"),
        "first batch, no bank vectors": (str(bare_bank), work / "vc-bare"),
        "later batch (references in the vector cache)": (str(bare_bank), work / "vc-bare"),
    }
    runs = {}
    with fake_server(0.0) as url:
        for name, (eval_set, vector_cache) in cases.items():
            # The machine's speed drifts by up to ~20% over minutes: each case is compared with a bare encode
            # of the same answers measured just before it.
            bare_answers = bare_secs(answers)
            # As a new process would start: nothing in memory; the on-disk vector cache as the case says.
            grader._cache.clear()
            grader._answers.clear()
            grader._known.clear()
            os.environ["EVALUATOR_CACHE_DIR"] = str(vector_cache)
            judge = dict(judge="openai", base_url=url, model="m", mode="structured", embedder="minilm")
            runs[name] = bare_answers, run_grade(src, work / f"a-{len(runs)}", judge, eval_set=eval_set, concurrency=8)
        calls_a = server_requests(url) // len(cases)
    os.environ["EVALUATOR_CACHE_DIR"] = str(work / "cache")
    n = len(answers)
    out = [
        (
            "(a) answers graded",
            f"{n} ({calls_a} judge requests per run, structured, instant server; model load {load_secs:.1f} s excluded)",
        ),
    ]
    for name, (bare_answers, (wall, grading, _)) in runs.items():
        e2e_rate, encode_rate = n / wall, n / bare_answers
        out += [
            (f"(a) {name}", f"{e2e_rate:8.1f} answers/s = {e2e_rate / encode_rate:4.0%} of the bare encode just "
                            f"before it ({encode_rate:.1f} answers/s; target >= 80%; {wall:.2f} s, grading phase "
                            f"{grading:.2f} s)"),
        ]  # fmt: skip
    out.append(
        ("(a) encode references + key points", f"{refs_secs:8.2f} s ({len(refs)} texts; what shipped or cached "
                                               "vectors skip)")
    )  # fmt: skip
    return out


def run_grade_process(args: list[str]) -> tuple[float, float, str, float]:
    """Runs `evaluator grade` as users do, in a new process; returns (wall seconds including interpreter start
    and imports, grading seconds as printed, stdout, the process's CPU seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "evaluator", "grade", *args], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the fake server is still running: not counted yet
    if p.returncode != 0:
        raise RuntimeError(f"grade exited {p.returncode}: {p.stdout[-2000:]} {p.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, grading_secs(p.stdout), p.stdout, cpu


def part_bc(a, work: Path, rerun: bool) -> tuple[list[tuple[str, str]], int]:
    """Concurrency against latency, then (c) the same command again; each a new `evaluator grade` process."""
    n = a.concurrent_answers
    src_b = work / "b.csv"
    write_csv(src_b, make_answers(n, seed=2))
    out_b = work / "b"
    ideal = n * a.latency / a.concurrency
    judge = ["--judge", "openai", "--model", "m", "--mode", "structured", "--embedder", "fake:hash", *a.extra]
    args = [str(src_b), "--out", str(out_b), *judge, "--concurrency", str(a.concurrency)]
    with fake_server(a.latency) as url:
        wall_b, grading_b, _, cpu_b = run_grade_process([*args, "--base-url", url])
        calls_b = server_requests(url)
        if rerun:
            wall_c, _, out_c, _ = run_grade_process([*args, "--base-url", url])
            calls_c = server_requests(url) - calls_b
        server_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the server has exited and been reaped
    server_cpu = (server_after.ru_utime - server_before.ru_utime) + (server_after.ru_stime - server_before.ru_stime)
    n_req = calls_b + (calls_c if rerun else 0)
    results = [
        (
            "(b) CPU per request: grade process / fake server",
            f"{1000 * cpu_b / max(1, calls_b):.1f} ms / {1000 * server_cpu / max(1, n_req):.1f} ms "
            f"(the grade process: start, imports and outputs included; {os.cpu_count()} cores shared)",
        ),
        (
            "(b) answers / concurrency / latency",
            f"{n} / {a.concurrency} / {a.latency * 1000:.0f} ms ({calls_b} judge requests)",
        ),
        ("(b) ideal N*latency/concurrency", f"{ideal:8.2f} s"),
        ("(b) grading phase wall", f"{grading_b:8.2f} s = {grading_b / ideal:.2f}x ideal (target <= 1.2x)"),
        ("(b) whole process wall", f"{wall_b:8.2f} s = {wall_b / ideal:.2f}x ideal (with interpreter start, "
                                   "imports, outputs and report)"),
    ]  # fmt: skip
    if not rerun:
        return results, 0
    printed_c = re.search(r"(\d+) judge calls", out_c)
    results.append(
        (
            "(c) re-run: judge requests at the server",
            f"{calls_c:8d}  (printed: {printed_c.group(1) if printed_c else '?'} judge calls; "
            f"{wall_c:.2f} s, outputs rewritten)",
        )
    )
    return results, calls_c


def part_d(a, work: Path) -> list[tuple[str, str]]:
    """The embedded judge, warm, on short real answers grouped by question."""
    import csv

    if not a.mohler.exists():
        return [("(d) embedded judge", f"skipped: {a.mohler} not found")]
    with open(a.mohler, encoding="utf-8", newline="") as f:
        every = sorted(csv.DictReader(f), key=lambda r: r["question_id"])
    rows, warmup = every[: a.local_answers], every[-5:]
    src, src_warm, src_all = work / "d.csv", work / "d-warm.csv", work / "d-all.csv"
    for path, part in ((src, rows), (src_warm, warmup), (src_all, every)):
        with open(path, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["question_id", "question", "reference_answer", "answer_id", "answer"])
            w.writerows(
                [r["question_id"], r["question"], r["reference_answer"], r["answer_id"], r["answer"]] for r in part
            )
    bank = work / "d-bank.yaml"
    write_eval_set(import_questions(src_all, set_id="bench-d"), bank)
    judge = dict(judge="local")
    kw = dict(eval_set=str(bank), columns={"candidate_id": "answer_id"})
    t0 = time.perf_counter()
    run_grade(src_warm, work / "d-cold", judge, **kw)  # loads the model and the embedder
    load = time.perf_counter() - t0
    # Like (a)'s bare encode: the judge alone just before the batch shows what the machine allows right now.
    alone = judge_alone_secs(bank, rows)
    wall, grading, _ = run_grade(src, work / "d", judge, **kw)
    with open(work / "d" / "verdicts.jsonl", encoding="utf-8") as f:
        in_batch = sum(json.loads(line)["usage"]["seconds"] for line in f)
    n = len(rows)
    return [
        (
            "(d) embedded judge, reference-only",
            f"{n} answers, {len({r['question_id'] for r in rows})} questions; "
            f"first load and 5 answers {load:.1f} s (excluded)",
        ),
        ("(d) the judge alone just before", f"{n / alone:8.2f} answers/s ({alone:.1f} s; the same reads in the "
                                            "same order, without embedding, store or outputs)"),
        ("(d) warm batch end to end", f"{n / wall:8.2f} answers/s ({wall:.1f} s)  (target >= 2; "
                                      f"{alone / wall:.0%} of the judge alone)"),
        ("(d) warm grading phase", f"{n / grading:8.2f} answers/s ({grading:.1f} s; the judge's calls in it "
                                   f"{in_batch:.1f} s)"),
    ]  # fmt: skip


def judge_alone_secs(bank: Path, rows: list[dict]) -> float:
    """Seconds the embedded judge takes for `rows` in the grader's order (grouped by question), called directly on
    the answers as the grader prepares them."""
    from evaluator.scoring import build_evaluator

    ev = build_evaluator("local", use_cache=False)  # the grader's judge instance: the model is loaded once
    les = ev.resources.load_eval_set(bank)
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["question_id"], i))
    t0 = time.perf_counter()
    for i in order:
        q = les.by_id[rows[i]["question_id"]]
        rubric = ev.resources.rubric_for(les, q).rubric
        result = ev.judge.judge(q, rubric, ev.prepare_answer(rows[i]["answer"])[0], ev.prompts)
        if result.status != "scored":
            raise RuntimeError(f"the judge alone did not score row {i}: {result.reason}")
    return time.perf_counter() - t0


if __name__ == "__main__":
    raise SystemExit(main())
