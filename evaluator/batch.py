"""Batch grading: CSV in, validated before any call, graded concurrently into a SQLite store that
survives crashes, outputs regenerated from the store. `grade_csv` is the library entry point; it prints nothing."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .backends import JudgeAborted, JudgeUnavailableError
from .config import DEFAULT_ADVANCE_AT, DEFAULT_CONCURRENCY, DEFAULT_EVAL_SET, DEFAULT_REJECT_BELOW
from .intake import Loaded, load_answers
from .models import Verdict
from .outputs import write_outputs
from .resources import LoadedEvalSet
from .scoring import Evaluator
from .store import STORE_NAME, CountedRun, Rejected, ResultStore, Row, StoreCounts, summarise

# ---------------------------------------------------------------- the store, the dry run


def open_store(out_dir: Path, rows: list[Row]) -> ResultStore:
    """The folder's results store with `rows` registered (pending unless already graded with the same text)."""
    store = ResultStore(Path(out_dir) / STORE_NAME)
    store.register(rows)
    return store


def estimate(ev: Evaluator, les: LoadedEvalSet, rows: list[Row]) -> tuple[int, int]:
    """(judge calls, prompt tokens) grading `rows` would take: tokens as characters / 4, before prefix caching."""
    calls = 0
    tokens = 0
    for r in rows:
        q = les.by_id[r.question_id]
        rubric = ev.resources.rubric_for(les, q).rubric
        text = ev.render_prompt(les, q, r.answer)
        n = len(ev.judge.read_plan(q, rubric, r.answer, ev.prompts))
        calls += n
        tokens += n * len(text) // 4
    return calls, tokens


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
    on_progress: Callable[[Progress], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Grades pending rows, at most `concurrency` judge requests at once (default: 8 for endpoints, 1 for the
    embedded judge). The embedded judge takes rows grouped by question, so its cached prompt prefix is reused.
    `on_progress` is called once before the first row and after every row saved."""
    local = ev.judge.backend_name == "local"
    concurrency = concurrency or (1 if local else DEFAULT_CONCURRENCY)
    ev.judge.limit_in_flight(concurrency)
    # The judge holds at most `concurrency` requests in flight; extra workers build the next prompts and finish
    # verdicts meanwhile, so no request slot waits on that work.
    workers = concurrency if local else concurrency + max(2, concurrency // 2)
    pending = _pending(ev, les, rows, store, progress, local)

    def save(r: Row, v: Verdict) -> None:
        store.save(r.key, v)
        progress.add(v)
        if on_progress:
            on_progress(progress)

    if on_progress:
        on_progress(progress)
    # The embedded judge and the embedding model would share the same cores: llama.cpp's threads slow down
    # badly when preempted, so its rows are all embedded first.
    sizes = [len(pending)] if local else chunk_sizes(len(pending))
    _Pool(ev, les, stop or threading.Event(), max(1, workers)).run(pending, sizes, save)


def _pending(
    ev: Evaluator, les: LoadedEvalSet, rows: list[Row], store: ResultStore, progress: Progress, local: bool
) -> list[Row]:
    """The rows to grade, in the order that grades them fastest; sets `progress.done` and `progress.regraded`."""
    # --refresh regrades every row, whatever the store holds.
    done = {} if ev.refresh else store.finished_keys()
    # A finished row counts only if the same settings graded it (same rubric, prompts, judge, calibration...):
    # re-running with anything changed grades it again instead of keeping a stale verdict.
    stale = {
        r.key for r in rows if r.key in done and done[r.key] not in (None, ev.answer_key(les, r.question_id, r.answer))
    }
    progress.regraded = len(stale)
    pending = [r for r in rows if r.key not in done or r.key in stale]
    if local:
        pending.sort(key=lambda r: (r.question_id, r.line))  # the embedded judge reuses the question's prefix
    else:
        # Endpoints cache prefixes across requests in any order; answers of similar length embed in batches
        # with little padding, so chunks of any size encode as fast as one call over the whole batch.
        pending.sort(key=lambda r: (len(r.answer), r.line))
    progress.done = len(rows) - len(pending)
    return pending


class _Pool:
    """Scores rows on a thread pool, up to twice `workers` submitted at once. A stop (or the first failure) halts
    it: no new row starts, queued rows are dropped, requests in flight end; rows that finish meanwhile are still
    saved, the others stay pending."""

    def __init__(self, ev: Evaluator, les: LoadedEvalSet, stop: threading.Event, workers: int):
        self.ev, self.les, self.stop, self.workers = ev, les, stop, workers
        self.running: set[Future] = set()
        # Finished futures arrive on a queue: waiting on the whole running set each time costs O(running).
        self.finished: queue.Queue = queue.Queue()
        self.aborted = False
        self.failure: BaseException | None = None

    def run(self, pending: list[Row], sizes: list[int], save: Callable[[Row, Verdict], None]) -> None:
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            it = embedded_ahead(self.ev, self.les, pending, self.stop, sizes)
            try:
                while True:
                    self._submit(pool, it)
                    if self.stop.is_set():
                        self.halt()
                    if not self.running:
                        break
                    done = self._next()
                    if done is not None:
                        save(*done)
            except BaseException:
                self.halt()
                raise
            finally:
                # Ends the embedding thread before returning: a thread still inside the embedding model when the
                # interpreter exits aborts the process ("terminate called without an active exception").
                it.close()
        if self.failure is not None:
            raise self.failure

    def _submit(self, pool: ThreadPoolExecutor, it: Iterator[Row]) -> None:
        while len(self.running) < self.workers * 2 and not self.stop.is_set():
            r = next(it, None)
            if r is None:
                return
            fut = pool.submit(self._score, r)
            self.running.add(fut)
            fut.add_done_callback(self.finished.put)

    def _score(self, r: Row) -> tuple[Row, Verdict]:
        return r, self.ev.score(self.les, self.les.by_id[r.question_id], r.answer)

    def _next(self) -> tuple[Row, Verdict] | None:
        """The next finished row, or None (none within 0.2 s, or one that ended without a verdict)."""
        try:
            # A timeout, so that a signal's stop is seen while every request is still in flight.
            fut = self.finished.get(timeout=0.2)
        except queue.Empty:
            return None
        self.running.discard(fut)
        try:
            return fut.result()
        except (JudgeAborted, CancelledError):
            return None
        except Exception as e:  # noqa: BLE001 - the first failure stops the batch and is raised by run()
            if not self.aborted:  # once stopping, requests cut short fail in any way: their rows stay pending
                self.failure = e
                self.halt()
            return None

    def halt(self) -> None:
        self.stop.set()
        if self.aborted:
            return
        self.aborted = True
        for f in self.running:
            f.cancel()
        self.ev.judge.backend.abort()


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
) -> Generator[Row, None, None]:
    """Yields `rows` in order once their answers are embedded. The references and key points are encoded first;
    then a background thread encodes the answers (with their sentences, in one pass) `sizes[i]` rows at a time
    while the rows before are judged; it runs at most two steps ahead."""
    if not rows:
        return
    ev.use_bank_vectors(les)
    refs = [t for qid in dict.fromkeys(r.question_id for r in rows) for t in les.by_id[qid].reference_texts]
    ev.embedder.encode(list(dict.fromkeys(refs)))
    ahead = _EmbedAhead(ev, rows, stop, sizes)
    try:
        yield from ahead.rows()
    finally:
        ahead.close()


class _EmbedAhead:
    """The background thread of `embedded_ahead` and the queue of embedded steps it hands over."""

    def __init__(self, ev: Evaluator, rows: list[Row], stop: threading.Event, sizes: list[int]):
        self.ev, self.all_rows, self.stop, self.sizes = ev, rows, stop, sizes
        self.ready: queue.Queue = queue.Queue(maxsize=2)
        self.done = threading.Event()  # the consumer is gone: the producer stops at its next step
        self.thread = threading.Thread(target=self._produce, name="embed-ahead", daemon=True)
        self.thread.start()

    def _halted(self) -> bool:
        return self.stop.is_set() or self.done.is_set()

    def _put(self, item: list[Row] | BaseException | None) -> bool:
        while not self._halted():
            try:
                self.ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            i = 0
            for size in self.sizes:
                part = self.all_rows[i : i + size]
                i += size
                answers = list(dict.fromkeys(a for a in (self.ev.prepare_answer(r.answer)[0] for r in part) if a))
                # In steps of 64, so a stopping run waits for one small step, not a whole chunk.
                for j in range(0, len(answers), 64):
                    if self._halted():
                        return
                    self.ev.embedder.encode_answers(answers[j : j + 64])
                if not self._put(part):
                    return
            self._put(None)
        except BaseException as e:  # handed to the consumer, which raises it where the batch can report it
            self._put(e)

    def rows(self) -> Iterator[Row]:
        while True:
            try:
                item = self.ready.get(timeout=0.2)
            except queue.Empty:
                if self.stop.is_set():
                    return
                continue
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield from item

    def close(self) -> None:
        self.done.set()
        self.thread.join()


# ---------------------------------------------------------------- the library entry point


@dataclass(frozen=True)
class GradeSummary(CountedRun):
    """What a `grade_csv` run did. `counts` covers the whole store (rows of an earlier CSV included);
    `progress` this run's rows: done, judge calls, tokens, cost, rows graded again for changed settings."""

    counts: StoreCounts
    progress: Progress
    rejected: list[Rejected]
    seconds: float  # the grading phase
    paths: list[Path]  # the outputs written
    store: Path
    interrupted: bool = False  # a KeyboardInterrupt ended the run early: unfinished rows stay pending
    warnings: list[str] = field(default_factory=list)


def grade_csv(
    csv_path: str | Path,
    out_dir: str | Path,
    evaluator: Evaluator,
    *,
    eval_set: str | Path = DEFAULT_EVAL_SET,
    columns: dict[str, str] | None = None,
    concurrency: int | None = None,
    strict: bool = False,
    prune: bool = False,
    advance_at: float = DEFAULT_ADVANCE_AT,
    reject_below: float = DEFAULT_REJECT_BELOW,
    price_in: float = 0.0,
    price_out: float = 0.0,
    on_loaded: Callable[[Loaded], None] | None = None,
    on_absent: Callable[[list[str], bool], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    stop: threading.Event | None = None,
) -> GradeSummary:
    """Grades every valid row of a CSV into `out_dir` (results.sqlite3, rejected.csv, results.csv, verdicts.jsonl,
    scorecards.csv, report.html). Running it again resumes: finished rows graded with the same settings are kept.

    `columns` maps the roles candidate_id / question_id / answer / answer_id to the CSV's column names. `stop` (an
    event) ends the run early; the rows that finished are saved and the outputs say which are pending. Hooks:
    `on_loaded` once the CSV is checked, `on_absent(keys, pruned)` when the store holds rows this CSV lacks
    (dropped with `prune`), `on_progress` as rows finish. Prices are USD per million tokens, for the cost."""
    out_dir = Path(out_dir)
    loaded = load_answers(
        Path(csv_path), out_dir, evaluator, eval_set=eval_set, columns=columns, strict=strict, on_loaded=on_loaded
    )
    store = open_store(out_dir, loaded.rows)
    absent = store.absent({r.key for r in loaded.rows})
    if absent and prune:
        store.prune(absent)
    if absent and on_absent:
        on_absent(absent, prune)
    progress = Progress(total=len(loaded.rows), price_in=price_in, price_out=price_out)

    def outputs() -> list[Path]:
        return write_outputs(store, loaded.les, evaluator.resources, out_dir, advance_at, reject_below, loaded.rejected)

    t0 = time.perf_counter()
    interrupted = _grade_until_done(evaluator, loaded, store, concurrency, progress, on_progress, stop, outputs)
    seconds = time.perf_counter() - t0
    paths = outputs()
    return GradeSummary(
        summarise(store), progress, loaded.rejected, seconds, paths, store.path, interrupted, loaded.warnings
    )


def _grade_until_done(
    ev: Evaluator,
    loaded: Loaded,
    store: ResultStore,
    concurrency: int | None,
    progress: Progress,
    on_progress: Callable[[Progress], None] | None,
    stop: threading.Event | None,
    outputs: Callable[[], list[Path]],
) -> bool:
    """Grades the pending rows; True if a KeyboardInterrupt ended it early. An unavailable judge stops the batch
    with the outputs written (they show the pending rows) and an error saying how far it got."""
    try:
        grade_rows(ev, loaded.les, loaded.rows, store, concurrency, progress, on_progress, stop)
    except KeyboardInterrupt:
        return True
    except JudgeUnavailableError as e:
        outputs()
        left = summarise(store).pending
        raise JudgeUnavailableError(
            f"{e}.\nThe batch stopped: {len(loaded.rows) - left} of {len(loaded.rows)} rows are saved in "
            f"{store.path}, {left} stay pending and nothing was cached for them. Fix the above, then run the same "
            "command to resume."
        ) from e
    return False
