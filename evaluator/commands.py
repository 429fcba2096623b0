"""The subcommands: one function each, from the parsed arguments to the library call, what it prints and the exit
code. Nothing here grades or fits; errors are left to cli.main, which turns them into messages and exit codes."""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InputError

if TYPE_CHECKING:
    from .batch import GradeSummary
    from .intake import Loaded
    from .resources import Resources
    from .review_data import Folder
    from .scoring import Evaluator


# ---------------------------------------------------------------- questions


def cmd_questions(a: argparse.Namespace) -> int:
    if a.qcommand == "import":
        return _questions_import(a)
    from .resources import Resources

    res = Resources.locate(a.data_dir)
    run = {
        "schema": _questions_schema,
        "vectors": _questions_vectors,
        "validate": _questions_validate,
        "show": _questions_show,
    }.get(a.qcommand, _questions_list)
    return run(a, res)


def _questions_import(a: argparse.Namespace) -> int:
    from .bank_import import import_questions, write_eval_set
    from .resources import Resources

    out = Path(a.out)
    es = import_questions(
        Path(a.csv),
        set_id=a.set_id or out.stem,
        rubric=a.rubric,
        default_level=a.level,
        default_topic=a.topic,
        id_column=a.question_id_column,
        question_column=a.question_column,
        reference_column=a.reference_column,
    )
    Resources.locate(a.data_dir).rubric(es.rubric)  # the rubric named must exist before the file is written
    write_eval_set(es, out)
    print(f"wrote {out}: {len(es.questions)} questions, rubric {es.rubric}")
    return 0


def _questions_schema(a: argparse.Namespace, res: Resources) -> int:
    from .resources import export_schemas

    if a.out:
        paths = export_schemas(Path(a.out))
    else:
        paths = export_schemas(res.root / "rubrics", res.root / "eval_sets")
    for p in paths:
        print(f"wrote {p}")
    return 0


def _questions_vectors(a: argparse.Namespace, res: Resources) -> int:
    from .embeddings import bank_vectors_path, get_embedder, write_bank_vectors

    les = res.load_eval_set(a.eval_set)
    texts = [t for q in les.eval_set.questions for t in q.reference_texts]
    path = bank_vectors_path(les.path)
    n = write_bank_vectors(path, get_embedder(a.embedder), texts)
    print(f"wrote {path}: {n} texts of {les.eval_set.id}")
    return 0


def _questions_validate(a: argparse.Namespace, res: Resources) -> int:
    rubrics = res.rubrics()
    files = [Path(f) for f in a.files] or res.eval_set_paths()
    total = 0
    for f in files:
        les = res.load_eval_set(f, rubrics)
        total += len(les.eval_set.questions)
        print(f"ok  {f}: {len(les.eval_set.questions)} questions")
    print(f"ok  {len(rubrics)} rubrics: {', '.join(sorted(rubrics))}; {total} questions in {len(files)} eval sets")
    return 0


def _questions_show(a: argparse.Namespace, res: Resources) -> int:
    les, q = res.find_question(a.id, a.eval_set)
    if a.json:
        print(json.dumps(q.model_dump(mode="json"), indent=2, ensure_ascii=False))
        return 0
    from .render import print_question

    print_question(les, q)
    return 0


def _questions_list(a: argparse.Namespace, res: Resources) -> int:
    from rich.console import Console
    from rich.table import Table

    names = [a.eval_set] if a.eval_set else [p.stem for p in res.eval_set_paths()]
    t = Table("id", "level", "topic", "question", "eval set")
    n = 0
    for name in names:
        les = res.load_eval_set(name)
        for q in les.eval_set.questions:
            if (a.level and q.level.value != a.level) or (a.topic and q.topic != a.topic):
                continue
            t.add_row(q.id, q.level.value, q.topic, q.question, les.eval_set.id)
            n += 1
    console = Console()
    console.print(t)
    console.print(f"{n} questions")
    return 0


# ---------------------------------------------------------------- score


def evaluator_kw(a: argparse.Namespace) -> dict:
    """build_evaluator's arguments from the flags `score` and `grade` share (explain differs by command)."""
    return dict(
        data_dir=a.data_dir,
        use_cache=not a.no_cache,
        refresh=a.refresh,
        calibration=a.calibration,
        rubric_calibration=not a.no_calibration,
        embedder=a.embedder,
        max_chars=a.max_chars,
        judge=a.judge,
        mode=a.mode,
        base_url=a.base_url,
        model=a.model,
        temperature=a.temperature,
        seed=a.seed,
        timeout=a.timeout,
        max_tokens=a.max_tokens,
        dialect=a.dialect,
    )


def _read_answer(a: argparse.Namespace) -> str:
    if a.answer is not None:
        return a.answer
    if a.stdin or a.answer_file == "-":
        data = sys.stdin.buffer.read()
        where = "standard input"
    else:
        p = Path(a.answer_file)
        if not p.exists():
            raise InputError(f"answer file not found: {p}")
        data = p.read_bytes()
        where = str(p)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{where} is not UTF-8 text (byte {e.start}); save it as UTF-8 and try again") from e


def cmd_score(a: argparse.Namespace) -> int:
    from .render import print_verdict
    from .scoring import build_evaluator

    answer = _read_answer(a)
    if not answer.strip():
        raise InputError("the answer is empty: give the candidate's text with --answer, --answer-file or stdin")
    ev = build_evaluator(explain=a.explain, **evaluator_kw(a))
    les, q = ev.resources.find_question(a.question, a.eval_set)
    if a.dry_run:
        print(ev.render_prompt(les, q, answer))
        return 0
    verdict = ev.score(les, q, answer)
    if a.json:
        print(verdict.model_dump_json(indent=2))
    else:
        print_verdict(verdict, q)
    return 0 if verdict.status == "scored" else 10


# ---------------------------------------------------------------- grade and import-batch


def cmd_grade(a: argparse.Namespace) -> int:
    from .intake import load_answers
    from .scoring import build_evaluator

    kw = evaluator_kw(a)
    if a.export_batch and not kw.get("judge"):
        kw["judge"] = "openai"
    # Batches skip the explanation pass unless asked: it never changes a score and costs a generation per row.
    ev = build_evaluator(explain=a.explain if a.explain is not None else False, **kw)
    if not (a.dry_run or a.export_batch):
        return _grade(a, ev)
    loaded = load_answers(
        Path(a.csv), Path(a.out), ev, eval_set=a.eval_set, columns=_columns(a), strict=a.strict, on_loaded=_loaded
    )
    return _dry_run(a, ev, loaded) if a.dry_run else _export_batch(a, ev, loaded)


def _columns(a: argparse.Namespace) -> dict[str, str]:
    return {
        "candidate_id": a.candidate_column,
        "question_id": a.question_column,
        "answer": a.answer_column,
        "answer_id": a.answer_id_column,
    }


def _loaded(loaded: Loaded) -> None:
    for w in loaded.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if loaded.rejected:
        print(f"{len(loaded.rejected)} row(s) rejected (see {loaded.rejected_path}):", file=sys.stderr)
        for r in loaded.rejected[:10]:
            print(f"  line {r.line}: {r.reason}", file=sys.stderr)


def _dry_run(a: argparse.Namespace, ev: Evaluator, loaded: Loaded) -> int:
    from .batch import estimate

    calls, tokens = estimate(ev, loaded.les, loaded.rows)
    cost = tokens * a.price_in / 1e6
    print(
        f"dry run: {len(loaded.rows)} answers, about {calls} judge calls and {tokens} prompt tokens "
        f"(chars/4 estimate, before prefix caching), est. cost ${cost:.4f} at ${a.price_in}/M prompt tokens"
    )
    return 0


def _export_batch(a: argparse.Namespace, ev: Evaluator, loaded: Loaded) -> int:
    from .batch import open_store
    from .scaleout import export_batch

    out = Path(a.out)
    open_store(out, loaded.rows)
    n = export_batch(ev, loaded.les, loaded.rows, Path(a.export_batch))
    print(f"wrote {n} requests to {a.export_batch}; after the batch runs: evaluator import-batch RESPONSES --out {out}")
    return 0


def _grade(a: argparse.Namespace, ev: Evaluator) -> int:
    from .batch import grade_csv
    from .render import ProgressBar

    with _StopOnSignal() as sig, ProgressBar() as bar:
        summary = grade_csv(
            Path(a.csv),
            Path(a.out),
            ev,
            eval_set=a.eval_set,
            columns=_columns(a),
            concurrency=a.concurrency,
            strict=a.strict,
            prune=a.prune,
            advance_at=a.advance_at,
            reject_below=a.reject_below,
            price_in=a.price_in,
            price_out=a.price_out,
            on_loaded=_loaded,
            on_absent=lambda keys, pruned: _absent(a, keys, pruned),
            on_progress=bar.update,
            stop=sig.stop,
        )
    if summary.interrupted and not sig.signals:
        sig.signals.append(signal.SIGINT)
    _print_graded(summary)
    if not sig.signals:
        return 0
    p = summary.progress
    print(
        f"\nstopped by {signal.Signals(sig.signals[0]).name}: {p.done} of {p.total} rows are saved in "
        f"{summary.store}, {p.total - p.done} pending (the outputs say so). To resume, run the same command.",
        file=sys.stderr,
    )
    return 128 + sig.signals[0]


def _absent(a: argparse.Namespace, keys: list[str], pruned: bool) -> None:
    if pruned:
        print(f"pruned {len(keys)} rows of an earlier CSV that {a.csv} no longer has", file=sys.stderr)
    else:
        print(
            f"warning: {len(keys)} rows in {Path(a.out) / 'results.sqlite3'} are not in {a.csv} (from an earlier "
            f"CSV, e.g. {keys[0]}); they stay in the outputs. Add --prune to drop them.",
            file=sys.stderr,
        )


class _StopOnSignal:
    """Inside the block, SIGINT or SIGTERM sets `stop` (the run ends once the requests in flight are done, rows
    saved); a second signal raises KeyboardInterrupt to stop waiting for them."""

    def __init__(self):
        self.stop = threading.Event()
        self.signals: list[int] = []

    def _on_signal(self, signum, _frame) -> None:
        if self.signals:
            raise KeyboardInterrupt
        self.signals.append(signum)
        self.stop.set()

    def __enter__(self) -> _StopOnSignal:
        self.old = _install(self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        _install(self.old)


def _print_graded(summary: GradeSummary) -> None:
    c, p = summary.counts, summary.progress
    reasons = f" {c.unscored_by_reason}" if c.unscored_by_reason else ""
    pending = f", {c.pending} pending" if c.pending else ""
    print(
        f"graded {c.scored} scored, {c.unscored} unscored{reasons}, {len(summary.rejected)} rejected"
        f"{pending}, {c.flagged} flagged for review in {summary.seconds:.1f} s; {p.calls} judge calls, "
        f"{p.prompt_tokens + p.completion_tokens} tokens, est. cost ${p.cost:.4f}"
    )
    if p.regraded:
        print(
            f"{p.regraded} rows finished in an earlier run with other settings (rubric, prompts, judge, "
            "calibration...) were graded again"
        )
    if c.retry:
        print(f"{c.retry} unscored rows failed for a reason other than the answer: the same command grades them again")
    for path in summary.paths:
        print(f"wrote {path}")


def _install(handlers) -> dict:
    """Sets a handler for SIGINT and SIGTERM (a callable, or a dict of them as returned); returns the previous ones.
    Off the main thread (the command run from a worker) signals cannot be caught, and nothing is changed."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        h = handlers.get(sig) if isinstance(handlers, dict) else handlers
        if h is not None:
            old[sig] = signal.signal(sig, h)
    return old


def cmd_import_batch(a: argparse.Namespace) -> int:
    from .scaleout import import_responses

    s = import_responses(
        Path(a.out), Path(a.responses), data_dir=a.data_dir, advance_at=a.advance_at, reject_below=a.reject_below
    )
    print(
        f"imported {s.imported} responses: {s.scored} scored, {s.unscored} unscored, {s.pending} still pending"
        + (f"; {len(s.unknown)} responses matched no exported row (e.g. {s.unknown[0]})" if s.unknown else "")
    )
    for p in s.paths:
        print(f"wrote {p}")
    return 0


# ---------------------------------------------------------------- calibrate and review


def cmd_calibrate(a: argparse.Namespace) -> int:
    from rich.console import Console

    from .calibrate_report import calibrate, summary_lines, summary_table

    result = calibrate(
        Path(a.verdicts),
        Path(a.out),
        human=Path(a.human) if a.human else None,
        human_columns=[c.strip() for c in a.human_columns.split(",") if c.strip()] if a.human_columns else None,
        official=a.official,
        id_column=a.id_column,
        scale_min=a.scale_min,
        scale_max=a.scale_max,
        group_column=a.group_column,
        pass_at=a.pass_at,
        bootstrap=a.bootstrap,
    )
    console = Console()
    console.print(summary_table(result))
    for line in summary_lines(result):
        console.print(line)
    return 0


def cmd_review(a: argparse.Namespace) -> int:
    from .resources import Resources
    from .review_data import Folder

    folder = Folder(
        Path(a.folder),
        Resources.locate(a.data_dir),
        eval_set=a.eval_set,
        advance_at=a.advance_at,
        reject_below=a.reject_below,
    )
    if a.export:
        from .review_export import export

        for p in export(folder, Path(a.export)):
            print(f"wrote {p}")
        return 0
    if not 0 < a.port < 65536:
        raise InputError(f"--port {a.port} is not a port number (1-65535)")
    return _serve_review(a, folder)


def _serve_review(a: argparse.Namespace, folder: Folder) -> int:
    import uvicorn

    from .review_app import create_app, is_loopback

    local = is_loopback(a.host)
    token = None if local else secrets.token_urlsafe(24)
    snap = folder.snapshot()  # fail here, with a clear message, rather than on the first page
    app = create_app(folder, token=token, local_only=local, bound_host=a.host)
    # An unspecified address listens everywhere: reviewers reach it by this machine's name.
    shown = socket.gethostname() if a.host in ("0.0.0.0", "::") else f"[{a.host}]" if ":" in a.host else a.host
    url = f"http://{shown}:{a.port}/" + (f"?token={token}" if token else "")
    print(f"review workspace for {a.folder}: {len(snap.answers)} answers, {len(snap.cards)} candidates")
    print(f"open {url}")
    if token:
        print("bound beyond this machine: every request needs the token above (keep it private)", file=sys.stderr)
    print("stop with Ctrl+C; grades are saved as they are entered")
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning")
    return 0
