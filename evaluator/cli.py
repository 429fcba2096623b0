"""Command line: parses arguments, calls the library, prints. Errors become messages and exit codes here."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._version import __version__
from .errors import EvaluatorError, InputError


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="folder holding rubrics/, prompts/ and eval_sets/ (env EVALUATOR_DATA_DIR)")


def _add_judge_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("judge (flags override EVALUATOR_* / OPENAI_* variables)")
    g.add_argument(
        "--judge",
        help="local (default without an endpoint), local:/path/model.gguf, openai, openai:MODEL, fake:overlap (tests)",
    )
    g.add_argument(
        "--mode",
        choices=["probability", "structured"],
        help="judging mode (default: probability for the embedded model, structured for endpoints)",
    )
    g.add_argument("--base-url", help="OpenAI-compatible endpoint (env EVALUATOR_BASE_URL or OPENAI_BASE_URL)")
    g.add_argument("--model", help="model name at the endpoint (env EVALUATOR_MODEL)")
    g.add_argument("--temperature", type=float, help="default 0")
    g.add_argument("--seed", type=int, help="default 0, where the backend allows")
    g.add_argument("--timeout", type=float, help="seconds per request (default 120)")
    g.add_argument("--max-tokens", type=int, help="for structured replies (default 1024)")
    g.add_argument(
        "--dialect",
        choices=["auto", "json_schema", "llama_cpp", "json_object"],
        help="structured-output form the endpoint understands (default: detect)",
    )
    g.add_argument(
        "--explain",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="generate evidence quotes and a rationale after scoring (never changes the score)",
    )
    g.add_argument("--embedder", default="minilm", help="minilm (default) or fake:hash (tests)")
    g.add_argument("--no-cache", action="store_true", help="neither read nor write the verdict cache")
    g.add_argument("--refresh", action="store_true", help="ignore cached verdicts and overwrite them")
    g.add_argument("--calibration", help="a fitted mapping (JSON from `evaluator calibrate`) to apply to scores")
    g.add_argument(
        "--no-calibration",
        action="store_true",
        help="raw scores: do not apply a rubric's shipped mapping (reference-only ships one fitted on the Mohler data "
        "for the embedded judge)",
    )


def _evaluator_kw(a: argparse.Namespace) -> dict:
    """build_evaluator's arguments from the flags `score` and `grade` share (explain differs by command)."""
    return dict(
        data_dir=a.data_dir,
        use_cache=not a.no_cache,
        refresh=a.refresh,
        calibration=a.calibration,
        rubric_calibration=not a.no_calibration,
        embedder=a.embedder,
        max_chars=a.max_chars,
        **_judge_kw(a),
    )


def _judge_kw(a: argparse.Namespace) -> dict:
    return dict(
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="evaluator",
        description="Grade written answers to screening questions against a reference and a rubric.",
    )
    p.add_argument("--version", action="version", version=f"evaluator {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    q = sub.add_parser(
        "questions",
        help="list, show, validate and import question banks",
        description="Work with the question banks (eval sets).",
    )
    qs = q.add_subparsers(dest="qcommand", metavar="ACTION")
    ql = qs.add_parser("list", help="list the questions of the eval sets", description="List bank questions.")
    ql.add_argument("--eval-set", help="only this eval set (name or path)")
    ql.add_argument("--level", choices=["junior", "mid", "senior"])
    ql.add_argument("--topic")
    _add_data_dir(ql)
    qsh = qs.add_parser("show", help="show one question in full", description="Show one question in full.")
    qsh.add_argument("id")
    qsh.add_argument("--eval-set")
    qsh.add_argument("--json", action="store_true", help="print the question as JSON")
    _add_data_dir(qsh)
    qv = qs.add_parser(
        "validate",
        help="validate rubrics and eval sets",
        description="Validate the rubrics and eval sets (or the files given).",
    )
    qv.add_argument("files", nargs="*", help="eval set files (default: every eval set in the data folder)")
    _add_data_dir(qv)
    qi = qs.add_parser(
        "import",
        help="turn a CSV of questions into an eval set",
        description="Turn a CSV with question id, question and reference answer (optional level, "
        "topic, key_points separated by ';') into a valid eval set file. Rows repeating a question "
        "id (one row per answer, as in graded data) are merged.",
    )
    qi.add_argument("csv", help="the CSV file")
    qi.add_argument("--out", required=True, help="the eval set file to write (.yaml)")
    qi.add_argument("--id", dest="set_id", help="eval set id (default: the output file's name)")
    qi.add_argument("--rubric", default="reference-only", help="rubric id for the questions (default reference-only)")
    qi.add_argument("--level", default="mid", help="level for rows without one (default mid)")
    qi.add_argument("--topic", default="general", help="topic for rows without one")
    qi.add_argument("--question-id-column")
    qi.add_argument("--question-column")
    qi.add_argument("--reference-column")
    _add_data_dir(qi)
    qvec = qs.add_parser(
        "vectors",
        help="encode an eval set's references and key points into a file shipped beside it",
        description="Encode the reference answers and key points of an eval set with the embedding model and write "
        "them beside it (NAME.vectors.npz), so graders on other machines skip encoding the bank. Run it again "
        "after editing references or key points; texts without a vector are encoded at grading time.",
    )
    qvec.add_argument("--eval-set", default="ml-screening", help="eval set name or path (default ml-screening)")
    qvec.add_argument("--embedder", default="minilm", help="embedding model (default minilm)")
    _add_data_dir(qvec)
    qsc = qs.add_parser(
        "schema",
        help="write the JSON Schemas of the rubric and eval-set files",
        description="Write rubric.schema.json and eval_set.schema.json for editors.",
    )
    qsc.add_argument("--out", help="folder (default: next to the files, in rubrics/ and eval_sets/)")
    _add_data_dir(qsc)

    s = sub.add_parser("score", help="score one written answer", description="Score one answer to a bank question.")
    s.add_argument("--question", "-q", required=True, help="question id (see `evaluator questions list`)")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--answer", "-a", help="the answer text")
    src.add_argument("--answer-file", help="read the answer from a UTF-8 file ('-' for stdin)")
    src.add_argument("-", dest="stdin", action="store_true", help="read the answer from standard input")
    s.add_argument("--eval-set", help="look the question up in this eval set only")
    s.add_argument("--json", action="store_true", help="print the verdict as JSON")
    s.add_argument("--dry-run", action="store_true", help="print the rendered prompt; make no judge call")
    s.add_argument("--max-chars", type=int, default=8000, help="answers longer than this are truncated and flagged")
    _add_judge_flags(s)
    _add_data_dir(s)

    from .batch import add_grade_parsers

    add_grade_parsers(sub, _add_judge_flags, _add_data_dir)
    from .calibrate_cmd import add_calibrate_parser

    add_calibrate_parser(sub)
    from .review_cmd import add_review_parser

    add_review_parser(sub, _add_data_dir)
    return p


# ---------------------------------------------------------------- commands


def cmd_questions(a: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from .resources import Resources

    console = Console()
    if a.qcommand == "import":
        from .bank_import import import_questions, write_eval_set

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
        res = Resources.locate(a.data_dir)
        res.rubric(es.rubric)
        write_eval_set(es, out)
        print(f"wrote {out}: {len(es.questions)} questions, rubric {es.rubric}")
        return 0
    res = Resources.locate(a.data_dir)
    if a.qcommand == "schema":
        from .resources import export_schemas

        if a.out:
            paths = export_schemas(Path(a.out))
        else:
            paths = export_schemas(res.root / "rubrics", res.root / "eval_sets")
        for p in paths:
            print(f"wrote {p}")
        return 0
    if a.qcommand == "vectors":
        from .embeddings import bank_vectors_path, get_embedder, write_bank_vectors

        les = res.load_eval_set(a.eval_set)
        texts = [t for q in les.eval_set.questions for t in q.reference_texts]
        path = bank_vectors_path(les.path)
        n = write_bank_vectors(path, get_embedder(a.embedder), texts)
        print(f"wrote {path}: {n} texts of {les.eval_set.id}")
        return 0
    if a.qcommand == "validate":
        rubrics = res.rubrics()
        files = [Path(f) for f in a.files] or res.eval_set_paths()
        total = 0
        for f in files:
            les = res.load_eval_set(f, rubrics)
            total += len(les.eval_set.questions)
            print(f"ok  {f}: {len(les.eval_set.questions)} questions")
        print(f"ok  {len(rubrics)} rubrics: {', '.join(sorted(rubrics))}; {total} questions in {len(files)} eval sets")
        return 0
    if a.qcommand == "show":
        les, q = res.find_question(a.id, a.eval_set)
        if a.json:
            print(json.dumps(q.model_dump(mode="json"), indent=2, ensure_ascii=False))
            return 0
        console.print(
            f"[bold]{q.id}[/bold]  ({les.eval_set.id}, {q.level.value}, {q.topic}, rubric {les.rubric_id_for(q)})"
        )
        console.print(f"\n[bold]Question[/bold]\n{q.question}")
        for i, r in enumerate(q.references, 1):
            console.print(f"\n[bold]Reference {i}[/bold]\n{r}")
        from .key_points import key_points_of

        source = "" if q.key_points else " (derived from the reference: list them under key_points to edit)"
        console.print(f"\n[bold]Key points[/bold]{source}", markup=True)
        for i, k in enumerate(key_points_of(q), 1):
            console.print(f"  {i}. {k}", markup=False)
        if q.red_flags:
            console.print("\n[bold]Red flags[/bold]")
            for f in q.red_flags:
                console.print(f"  - [red]{f.id}[/red] ({f.effect.value} {f.value:g}): {f.description}")
                if f.claim:
                    console.print(f"      claim: {f.claim}", markup=False)
        for e in q.exemplars:
            console.print(
                f"\n[bold]Exemplar ({e.band.value}, {e.score_range[0]:g}-{e.score_range[1]:g})[/bold]\n{e.answer}"
            )
        return 0
    # list
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
    console.print(t)
    console.print(f"{n} questions")
    return 0


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
    ev = build_evaluator(explain=a.explain, **_evaluator_kw(a))
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        if a.command == "questions":
            if not a.qcommand:
                parser.parse_args(["questions", "--help"])
            return cmd_questions(a)
        if a.command == "score":
            return cmd_score(a)
        if a.command in ("grade", "import-batch"):
            from .batch import run_grade_command

            return run_grade_command(a, _evaluator_kw(a) if a.command == "grade" else {})
        if a.command == "calibrate":
            from .calibrate_cmd import run_calibrate

            return run_calibrate(a)
        if a.command == "review":
            from .review_cmd import run_review

            return run_review(a)
        parser.print_help()
        return 0
    except EvaluatorError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
