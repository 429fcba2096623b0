"""Batch grading: CSV in, validated before any call, graded concurrently into a SQLite store that
survives crashes, outputs regenerated from the store."""

from __future__ import annotations

import argparse
import json
import queue
import re
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .backends import JudgeAborted, JudgeUnavailableError, is_final
from .config import DEFAULT_CONCURRENCY
from .csvio import read_csv
from .errors import InputError, ValidationError
from .models import Verdict
from .resources import LoadedEvalSet, unknown_question_message
from .scoring import Evaluator, build_evaluator

REQUIRED = ("candidate_id", "question_id", "answer")


@dataclass
class Row:
    key: str
    line: int
    candidate_id: str
    question_id: str
    answer_id: str
    answer: str
    extra: dict = field(default_factory=dict)


@dataclass
class Rejected:
    line: int
    candidate_id: str
    question_id: str
    reason: str


# ---------------------------------------------------------------- reading and validation


def load_rows(
    path: Path, les: LoadedEvalSet, columns: dict[str, str], max_chars: int
) -> tuple[list[Row], list[Rejected], list[str]]:
    table = read_csv(path)
    header = table.header
    lower = {h.lower(): i for i, h in enumerate(header)}
    idx = {}
    missing = []
    for role in REQUIRED:
        name = columns.get(role, role)
        if name.lower() not in lower:
            missing.append(name)
        else:
            idx[role] = lower[name.lower()]
    if missing:
        raise ValidationError(
            f"{path}: missing column(s) {', '.join(missing)}; columns found: {', '.join(header)}. "
            "Rename them or map them with --candidate-column / --question-column / --answer-column."
        )
    aid_name = columns.get("answer_id", "answer_id").lower()
    i_aid = lower.get(aid_name)
    rows: list[Row] = []
    rejected: list[Rejected] = []
    seen: dict[tuple[str, str], int] = {}
    seen_ids: dict[str, int] = {}
    known = list(les.by_id)
    for line, cells in table.rows:
        cand = cells[idx["candidate_id"]].strip() if idx["candidate_id"] < len(cells) else ""
        qid = cells[idx["question_id"]].strip() if idx["question_id"] < len(cells) else ""

        def reject(reason: str, cand=cand, qid=qid, line=line) -> None:
            rejected.append(Rejected(line, cand, qid, reason))

        if len(cells) != len(header):
            reject(f"row has {len(cells)} cells but the header has {len(header)} (check quoting and delimiters)")
            continue
        answer = cells[idx["answer"]]
        aid = cells[i_aid].strip() if i_aid is not None else ""
        if not cand:
            reject("candidate_id is empty")
            continue
        if qid not in les.by_id:
            reject(unknown_question_message(qid, known))
            continue
        if not answer.strip():
            reject("answer is empty")
            continue
        if len(answer.strip()) > max_chars:
            reject(f"answer has {len(answer.strip())} characters, over the limit of {max_chars} (raise --max-chars)")
            continue
        pair = (cand, qid)
        if pair in seen:
            reject(f"duplicate answer by candidate {cand} to question {qid} (first at line {seen[pair]})")
            continue
        if aid and aid in seen_ids:
            reject(f"duplicate answer_id {aid} (first at line {seen_ids[aid]})")
            continue
        seen[pair] = line
        if aid:
            seen_ids[aid] = line
        extra = {h: cells[i] for i, h in enumerate(header) if i not in idx.values() and i != i_aid}
        rows.append(Row(aid or f"{cand}|{qid}", line, cand, qid, aid, answer, extra))
    return rows, rejected, table.warnings


# ---------------------------------------------------------------- the results store


class ResultStore:
    """One row per answer; a finished row is committed before the next is counted."""

    def __init__(self, path: Path):
        self.path = path
        self.conn = sqlite3.connect(path, timeout=30.0, check_same_thread=False)
        self.lock = threading.Lock()
        with self.conn:
            self.conn.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a commit survives the process being killed (no fsync per row, which cost ~3 ms of
            # the single result-saving thread per answer); only an OS crash may lose the last rows, which a
            # re-run grades again.
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, line INTEGER, candidate_id TEXT, "
                "question_id TEXT, answer_id TEXT, answer TEXT, extra TEXT, status TEXT, verdict TEXT, "
                "finished REAL)"
            )

    def register(self, rows: list[Row]) -> None:
        """Adds the rows as pending; a row already stored takes the current CSV's text, line and columns, and
        becomes pending again if its answer or question changed (its old verdict judged other text)."""
        same = "(results.answer IS excluded.answer AND results.question_id IS excluded.question_id)"
        with self.lock, self.conn:
            self.conn.executemany(
                "INSERT INTO results (key, line, candidate_id, question_id, answer_id, answer, extra, status)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'pending') ON CONFLICT(key) DO UPDATE SET line=excluded.line, "
                "candidate_id=excluded.candidate_id, question_id=excluded.question_id, answer_id=excluded.answer_id, "
                f"answer=excluded.answer, extra=excluded.extra, status=CASE WHEN {same} THEN results.status ELSE "
                f"'pending' END, verdict=CASE WHEN {same} THEN results.verdict END, "
                f"finished=CASE WHEN {same} THEN results.finished END",
                [
                    (r.key, r.line, r.candidate_id, r.question_id, r.answer_id, r.answer, json.dumps(r.extra))
                    for r in rows
                ],
            )

    def absent(self, keys: set[str]) -> list[str]:
        """Stored rows whose key is not in `keys` (rows of an earlier CSV)."""
        with self.lock:
            return [k for (k,) in self.conn.execute("SELECT key FROM results ORDER BY line") if k not in keys]

    def prune(self, keys: list[str]) -> None:
        with self.lock, self.conn:
            self.conn.executemany("DELETE FROM results WHERE key=?", [(k,) for k in keys])

    def finished_keys(self) -> dict[str, str | None]:
        """Rows whose verdict is final, and the cache key of the settings that graded them (None for rows without
        one). Unscored rows are graded again on a re-run, unless the judge refused the answer itself."""
        with self.lock:
            found = self.conn.execute(
                "SELECT key, status, json_extract(verdict, '$.reason'), json_extract(verdict, '$.retryable'), "
                "json_extract(verdict, '$.provenance.cache_key') FROM results WHERE status != 'pending'"
            ).fetchall()
        return {k: ck for k, status, reason, retry, ck in found if is_final(status, reason or "", bool(retry))}

    def save(self, key: str, verdict: Verdict) -> None:
        with self.lock, self.conn:
            self.conn.execute(
                "UPDATE results SET status=?, verdict=?, finished=? WHERE key=?",
                (verdict.status, verdict.model_dump_json(), time.time(), key),
            )

    def all(self) -> list[dict]:
        with self.lock:
            cur = self.conn.execute(
                "SELECT key, line, candidate_id, question_id, answer_id, answer, extra, status, verdict "
                "FROM results ORDER BY line"
            )
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


# ---------------------------------------------------------------- grading


@dataclass
class Progress:
    total: int
    done: int = 0
    scored: int = 0
    unscored: int = 0
    flagged: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    price_in: float = 0.0
    price_out: float = 0.0
    regraded: int = 0  # finished rows graded again because the settings changed since

    @property
    def cost(self) -> float:
        return (self.prompt_tokens * self.price_in + self.completion_tokens * self.price_out) / 1e6

    def add(self, v: Verdict) -> None:
        self.done += 1
        if v.status == "scored":
            self.scored += 1
        else:
            self.unscored += 1
        if v.review_flags:
            self.flagged += 1
        self.prompt_tokens += v.usage.prompt_tokens
        self.completion_tokens += v.usage.completion_tokens
        self.calls += v.usage.calls


def grade_rows(
    ev: Evaluator,
    les: LoadedEvalSet,
    rows: list[Row],
    store: ResultStore,
    concurrency: int | None,
    progress: Progress,
    on_done=None,
    stop: threading.Event | None = None,
) -> None:
    """Grades pending rows, at most `concurrency` judge requests at once (default: 8 for endpoints, 1 for the
    embedded judge). The embedded judge takes rows grouped by question, so its cached prompt prefix is reused."""
    local = ev.judge.backend_name == "local"
    concurrency = concurrency or (1 if local else DEFAULT_CONCURRENCY)
    ev.judge.limit_in_flight(concurrency)
    # The judge holds at most `concurrency` requests in flight; extra workers build the next prompts and finish
    # verdicts meanwhile, so no request slot waits on that work (measured: 1000 answers at 32 x 200 ms went
    # from 7.9 s to 7.2 s with half as many workers again).
    workers = concurrency if local else concurrency + max(2, concurrency // 2)
    # --refresh regrades every row, whatever the store holds.
    done = {} if ev.refresh else store.finished_keys()
    # A finished row counts only if the same settings graded it (same rubric, prompts, judge, calibration...):
    # re-running with anything changed grades it again instead of keeping a stale verdict.
    stale = [
        r for r in rows if r.key in done and done[r.key] not in (None, ev.answer_key(les, r.question_id, r.answer))
    ]
    progress.regraded = len(stale)
    stale_keys = {r.key for r in stale}
    pending = [r for r in rows if r.key not in done or r.key in stale_keys]
    if local:
        pending.sort(key=lambda r: (r.question_id, r.line))  # the embedded judge reuses the question's prefix
    else:
        # Endpoints cache prefixes across requests in any order; answers of similar length embed in batches
        # with little padding, so chunks of any size encode as fast as one call over the whole batch.
        pending.sort(key=lambda r: (len(r.answer), r.line))
    progress.done = len(rows) - len(pending)
    stop = stop or threading.Event()

    def work(r: Row) -> tuple[Row, Verdict]:
        return r, ev.score(les, les.by_id[r.question_id], r.answer)

    failure: BaseException | None = None
    aborted = False

    def halt() -> None:
        """Stops the run: no new row starts, queued rows are dropped, requests in flight end. Rows that finish
        meanwhile are still saved; the others stay pending."""
        nonlocal aborted
        stop.set()
        if not aborted:
            aborted = True
            for f in running:
                f.cancel()
            abort = getattr(ev.judge.backend, "abort", None)
            if abort:
                abort()

    running: set = set()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        # The embedded judge and the embedding model would share the same cores: llama.cpp's threads slow down
        # badly when preempted, so its rows are all embedded first (measured on 300 Mohler answers: 2.04 -> 2.12
        # answers/s).
        it = embedded_ahead(ev, les, pending, stop, [len(pending)] if local else chunk_sizes(len(pending)))
        # Finished futures arrive on a queue: waiting on the whole running set each time costs O(running).
        finished: queue.Queue = queue.Queue()
        try:
            while True:
                while len(running) < max(1, workers) * 2 and not stop.is_set():
                    r = next(it, None)
                    if r is None:
                        break
                    fut = pool.submit(work, r)
                    running.add(fut)
                    fut.add_done_callback(finished.put)
                if stop.is_set():
                    halt()
                if not running:
                    break
                try:
                    # A timeout, so that a signal's stop is seen while every request is still in flight.
                    fut = finished.get(timeout=0.2)
                except queue.Empty:
                    continue
                running.discard(fut)
                try:
                    r, v = fut.result()
                except (JudgeAborted, CancelledError):
                    continue
                except Exception as e:  # noqa: BLE001 - the first failure stops the batch and is raised below
                    if not aborted:  # once stopping, requests cut short fail in any way: their rows stay pending
                        failure = e
                        halt()
                    continue
                store.save(r.key, v)
                progress.add(v)
                if on_done:
                    on_done(progress)
        except BaseException:
            halt()
            raise
        finally:
            # Ends the embedding thread before returning: a thread still inside the embedding model when the
            # interpreter exits aborts the process ("terminate called without an active exception").
            it.close()
    if failure is not None:
        raise failure


def chunk_sizes(n: int, largest: int = 512, smallest: int = 64) -> list[int]:
    """How many rows each embedding step takes: `smallest` first so the first verdicts come soon, doubling up to
    `largest`, then halving toward the end so few rows are judged after the last step."""
    sizes: list[int] = []
    grow = smallest
    while n > 0:
        sizes.append(min(n, grow, largest, max(smallest, n // 2)))
        n -= sizes[-1]
        grow *= 2
    return sizes


def embedded_ahead(
    ev: Evaluator, les: LoadedEvalSet, rows: list[Row], stop: threading.Event, sizes: list[int]
) -> Iterator[Row]:
    """Yields `rows` in order once their answers are embedded. The references and key points are encoded first;
    then a background thread encodes the answers (with their sentences, in one pass) `sizes[i]` rows at a time
    while the rows before are judged; it runs at most two steps ahead."""
    if not rows:
        return
    ev.use_bank_vectors(les)
    refs = [t for qid in dict.fromkeys(r.question_id for r in rows) for t in les.by_id[qid].reference_texts]
    ev.embedder.encode(list(dict.fromkeys(refs)))
    ready: queue.Queue = queue.Queue(maxsize=2)
    done = threading.Event()  # the consumer is gone: the producer stops at its next step

    def halted() -> bool:
        return stop.is_set() or done.is_set()

    def put(item) -> bool:
        while not halted():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            i = 0
            for size in sizes:
                part = rows[i : i + size]
                i += size
                answers = list(dict.fromkeys(a for a in (ev.prepare_answer(r.answer)[0] for r in part) if a))
                # In steps of 64, so a stopping run waits for one small step, not a whole chunk.
                for j in range(0, len(answers), 64):
                    if halted():
                        return
                    ev.embedder.encode_answers(answers[j : j + 64])
                if not put(part):
                    return
            put(None)
        except BaseException as e:  # handed to the consumer, which raises it where the batch can report it
            put(e)

    producer = threading.Thread(target=produce, name="embed-ahead", daemon=True)
    producer.start()
    try:
        while True:
            try:
                item = ready.get(timeout=0.2)
            except queue.Empty:
                if stop.is_set():
                    return
                continue
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield from item
    finally:
        done.set()
        producer.join()


# ---------------------------------------------------------------- CLI glue


def add_grade_parsers(sub, add_judge_flags, add_data_dir) -> None:
    g = sub.add_parser(
        "grade",
        help="batch-grade a CSV of candidates' answers",
        description="Grade every answer in a CSV (columns candidate_id, question_id, answer; optional answer_id; "
        "extra columns are carried through). Re-running the same command resumes and skips finished rows.",
    )
    g.add_argument("csv", help="answers CSV (UTF-8 with or without BOM; delimiter detected)")
    g.add_argument("--out", required=True, help="output folder (results store, CSVs, report)")
    g.add_argument("--eval-set", default="ml-screening", help="eval set name or path (default ml-screening)")
    g.add_argument("--candidate-column", default="candidate_id")
    g.add_argument("--question-column", default="question_id")
    g.add_argument("--answer-column", default="answer")
    g.add_argument("--answer-id-column", default="answer_id")
    g.add_argument("--strict", action="store_true", help="stop before grading if any row is rejected")
    g.add_argument(
        "--prune", action="store_true", help="drop rows of an earlier CSV from the output folder's results store"
    )
    g.add_argument(
        "--concurrency",
        type=int,
        help=f"judge requests in flight at once (default {DEFAULT_CONCURRENCY} for endpoints, 1 local)",
    )
    g.add_argument("--max-chars", type=int, default=8000, help="answers longer than this are rejected")
    g.add_argument("--dry-run", action="store_true", help="print calls, tokens and cost a run would take")
    g.add_argument("--price-in", type=float, default=0.0, help="USD per million prompt tokens (for the cost figure)")
    g.add_argument("--price-out", type=float, default=0.0, help="USD per million generated tokens")
    g.add_argument("--advance-at", type=float, default=70.0, help="scorecard: recommend 'advance' at this mean /100")
    g.add_argument("--reject-below", type=float, default=40.0, help="scorecard: recommend 'reject' below this")
    g.add_argument(
        "--export-batch",
        metavar="REQUESTS.jsonl",
        help="write the judge requests in the OpenAI Batch API format instead of calling the judge",
    )
    add_judge_flags(g)
    add_data_dir(g)
    ib = sub.add_parser(
        "import-batch",
        help="ingest OpenAI Batch API responses into a grading folder",
        description="Read the responses of a batch exported with `grade --export-batch` and write verdicts and "
        "outputs into the same folder.",
    )
    ib.add_argument("responses", help="responses .jsonl (OpenAI Batch API output or vLLM run-batch output)")
    ib.add_argument("--out", required=True, help="the folder the batch was exported from")
    ib.add_argument("--advance-at", type=float, default=70.0)
    ib.add_argument("--reject-below", type=float, default=40.0)
    add_data_dir(ib)


def run_grade_command(a: argparse.Namespace, evaluator_kw: dict) -> int:
    """`evaluator_kw`: build_evaluator's arguments from the shared flags (cli._evaluator_kw)."""
    from .outputs import write_outputs
    from .scaleout import export_batch, import_batch

    if a.command == "import-batch":
        return import_batch(a)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    kw = dict(evaluator_kw)
    if a.export_batch and not kw.get("judge"):
        kw["judge"] = "openai"
    # Batches skip the explanation pass unless asked: it never changes a score and costs a generation per row.
    ev = build_evaluator(explain=a.explain if a.explain is not None else False, **kw)
    les = ev.resources.load_eval_set(a.eval_set)
    columns = {
        "candidate_id": a.candidate_column,
        "question_id": a.question_column,
        "answer": a.answer_column,
        "answer_id": a.answer_id_column,
    }
    rows, rejected, warnings = load_rows(Path(a.csv), les, columns, a.max_chars)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    _write_rejected(out / "rejected.csv", rejected)
    if rejected:
        print(f"{len(rejected)} row(s) rejected (see {out / 'rejected.csv'}):", file=sys.stderr)
        for r in rejected[:10]:
            print(f"  line {r.line}: {r.reason}", file=sys.stderr)
        if a.strict:
            raise ValidationError(f"{a.csv}: {len(rejected)} invalid row(s); fix them or drop --strict")
    if not rows:
        raise InputError(f"{a.csv}: no valid rows to grade")
    if a.dry_run:
        return _dry_run(ev, les, rows, a)
    if a.export_batch:
        store = ResultStore(out / "results.sqlite3")
        store.register(rows)
        n = export_batch(ev, les, rows, Path(a.export_batch))
        print(
            f"wrote {n} requests to {a.export_batch}; after the batch runs: evaluator import-batch RESPONSES "
            f"--out {out}"
        )
        return 0
    store = ResultStore(out / "results.sqlite3")
    store.register(rows)
    _report_absent(store, rows, a)
    progress = Progress(total=len(rows), price_in=a.price_in, price_out=a.price_out)
    stop = threading.Event()
    signals: list[int] = []

    def on_signal(signum, _frame) -> None:
        if signals:  # a second signal: stop waiting for the requests in flight
            raise KeyboardInterrupt
        signals.append(signum)
        stop.set()

    old = _install(on_signal)
    t0 = time.perf_counter()
    try:
        _with_progress_bar(lambda cb: grade_rows(ev, les, rows, store, a.concurrency, progress, cb, stop), progress)
    except KeyboardInterrupt:
        if not signals:
            signals.append(signal.SIGINT)
    except JudgeUnavailableError as e:
        write_outputs(store, les, ev.resources, out, a.advance_at, a.reject_below, rejected)
        left = summarise(store)["pending"]
        raise JudgeUnavailableError(
            f"{e}.\nThe batch stopped: {len(rows) - left} of {len(rows)} rows are saved in {out / 'results.sqlite3'}, "
            f"{left} stay pending and nothing was cached for them. Fix the above, then run the same command to resume."
        ) from e
    finally:
        _install(old)
    secs = time.perf_counter() - t0
    paths = write_outputs(store, les, ev.resources, out, a.advance_at, a.reject_below, rejected)
    summary = summarise(store)
    reasons = f" {summary['unscored_by_reason']}" if summary["unscored_by_reason"] else ""
    pending = f", {summary['pending']} pending" if summary["pending"] else ""
    print(
        f"graded {summary['scored']} scored, {summary['unscored']} unscored{reasons}, {len(rejected)} rejected"
        f"{pending}, {summary['flagged']} flagged for review in {secs:.1f} s; {progress.calls} judge calls, "
        f"{progress.prompt_tokens + progress.completion_tokens} tokens, est. cost ${progress.cost:.4f}"
    )
    if progress.regraded:
        print(
            f"{progress.regraded} rows finished in an earlier run with other settings (rubric, prompts, judge, "
            "calibration...) were graded again"
        )
    if summary["retry"]:
        print(
            f"{summary['retry']} unscored rows failed for a reason other than the answer: the same command grades them again"
        )
    for p in paths:
        print(f"wrote {p}")
    if signals:
        name = signal.Signals(signals[0]).name
        print(
            f"\nstopped by {name}: {progress.done} of {progress.total} rows are saved in {out / 'results.sqlite3'}, "
            f"{progress.total - progress.done} pending (the outputs say so). To resume, run the same command.",
            file=sys.stderr,
        )
        return 128 + signals[0]
    return 0


def _install(handlers) -> dict:
    """Sets a handler for SIGINT and SIGTERM (a callable, or a dict of them as returned); returns the previous ones.
    Off the main thread (the library used from a worker) signals cannot be caught, and nothing is changed."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        h = handlers.get(sig) if isinstance(handlers, dict) else handlers
        if h is not None:
            old[sig] = signal.signal(sig, h)
    return old


def _report_absent(store: ResultStore, rows: list[Row], a: argparse.Namespace) -> None:
    absent = store.absent({r.key for r in rows})
    if not absent:
        return
    if a.prune:
        store.prune(absent)
        print(f"pruned {len(absent)} rows of an earlier CSV that {a.csv} no longer has", file=sys.stderr)
    else:
        print(
            f"warning: {len(absent)} rows in {Path(a.out) / 'results.sqlite3'} are not in {a.csv} (from an earlier "
            f"CSV, e.g. {absent[0]}); they stay in the outputs. Add --prune to drop them.",
            file=sys.stderr,
        )


def summarise(store: ResultStore) -> dict:
    rows = store.all()
    by_reason: dict[str, int] = {}
    flagged = retry = 0
    for r in rows:
        if r["verdict"]:
            v = json.loads(r["verdict"])
            if v["status"] != "scored":
                key = re.split(r"[:(;]", v["reason"])[0].strip()[:60]
                by_reason[key] = by_reason.get(key, 0) + 1
                retry += not is_final(v["status"], v["reason"], v.get("retryable", False))
            flagged += bool(v["review_flags"])
    return {
        "total": len(rows),
        "scored": sum(r["status"] == "scored" for r in rows),
        "unscored": sum(r["status"] == "unscored" for r in rows),
        "pending": sum(r["status"] == "pending" for r in rows),
        "unscored_by_reason": by_reason,
        "retry": retry,
        "flagged": flagged,
    }


def _write_rejected(path: Path, rejected: list[Rejected]) -> None:
    from .csvio import write_csv

    write_csv(
        path,
        ["line", "candidate_id", "question_id", "reason"],
        [[r.line, r.candidate_id, r.question_id, r.reason] for r in rejected],
    )


def _dry_run(ev: Evaluator, les: LoadedEvalSet, rows: list[Row], a) -> int:
    calls = 0
    tokens = 0
    for r in rows:
        q = les.by_id[r.question_id]
        rubric = ev.resources.rubric(les.rubric_id_for(q)).rubric
        text = ev.render_prompt(les, q, r.answer)
        n = len(ev.judge.read_plan(q, rubric, r.answer, ev.prompts))
        calls += n
        tokens += n * len(text) // 4
    cost = tokens * a.price_in / 1e6
    print(
        f"dry run: {len(rows)} answers, about {calls} judge calls and {tokens} prompt tokens "
        f"(chars/4 estimate, before prefix caching), est. cost ${cost:.4f} at ${a.price_in}/M prompt tokens"
    )
    return 0


def _with_progress_bar(run, progress: Progress) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as Bar

    with Bar(
        TextColumn("grading"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[extra]}"),
        transient=False,
        # Each redraw takes a core from llama.cpp's threads, which stall when one is preempted. At rich's default
        # of 10 redraws/s the bar used 1.9% of a core in a terminal; 2/s uses 0.5% and still looks live.
        refresh_per_second=2,
    ) as bar:
        task = bar.add_task("grade", total=progress.total, rate="", extra="")
        t0 = time.perf_counter()
        start_done: list[int] = []

        def cb(p: Progress) -> None:
            if not start_done:
                start_done.append(p.done - 1)
            secs = max(1e-6, time.perf_counter() - t0)
            bar.update(
                task,
                completed=p.done,
                rate=f"{(p.done - start_done[0]) / secs:.2f} rows/s",
                extra=f"{p.prompt_tokens + p.completion_tokens} tok ${p.cost:.4f} review:{p.flagged}",
            )

        run(cb)
