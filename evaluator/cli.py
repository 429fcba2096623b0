"""Command line: the argument parsers of every subcommand, and `main`, which hands the parsed arguments to
commands.py. Errors become messages and exit codes here."""

from __future__ import annotations

import argparse
import sys

from ._version import __version__
from .config import (
    DEFAULT_ADVANCE_AT,
    DEFAULT_CONCURRENCY,
    DEFAULT_EMBEDDER,
    DEFAULT_EVAL_SET,
    DEFAULT_MAX_ANSWER_CHARS,
    DEFAULT_REJECT_BELOW,
)
from .errors import EvaluatorError


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
    g.add_argument("--embedder", default=DEFAULT_EMBEDDER, help=f"{DEFAULT_EMBEDDER} (default) or fake:hash (tests)")
    g.add_argument("--no-cache", action="store_true", help="neither read nor write the verdict cache")
    g.add_argument("--refresh", action="store_true", help="ignore cached verdicts and overwrite them")
    g.add_argument("--calibration", help="a fitted mapping (JSON from `evaluator calibrate`) to apply to scores")
    g.add_argument(
        "--no-calibration",
        action="store_true",
        help="raw scores: do not apply a rubric's shipped mapping (reference-only ships one fitted on the Mohler data "
        "for the embedded judge)",
    )


def _add_thresholds(p: argparse.ArgumentParser, helped: bool = True) -> None:
    p.add_argument(
        "--advance-at",
        type=float,
        default=DEFAULT_ADVANCE_AT,
        help="scorecard: recommend 'advance' at this mean /100" if helped else None,
    )
    p.add_argument(
        "--reject-below",
        type=float,
        default=DEFAULT_REJECT_BELOW,
        help="scorecard: recommend 'reject' below this" if helped else None,
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="evaluator",
        description="Grade written answers to screening questions against a reference and a rubric.",
    )
    p.add_argument("--version", action="version", version=f"evaluator {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    _add_questions_parser(sub)
    _add_score_parser(sub)
    _add_grade_parser(sub)
    _add_import_batch_parser(sub)
    _add_calibrate_parser(sub)
    _add_review_parser(sub)
    return p


def _add_questions_parser(sub) -> None:
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
    _add_questions_import_parser(qs)
    qvec = qs.add_parser(
        "vectors",
        help="encode an eval set's references and key points into a file shipped beside it",
        description="Encode the reference answers and key points of an eval set with the embedding model and write "
        "them beside it (NAME.vectors.npz), so graders on other machines skip encoding the bank. Run it again "
        "after editing references or key points; texts without a vector are encoded at grading time.",
    )
    qvec.add_argument(
        "--eval-set", default=DEFAULT_EVAL_SET, help=f"eval set name or path (default {DEFAULT_EVAL_SET})"
    )
    qvec.add_argument("--embedder", default=DEFAULT_EMBEDDER, help=f"embedding model (default {DEFAULT_EMBEDDER})")
    _add_data_dir(qvec)
    qsc = qs.add_parser(
        "schema",
        help="write the JSON Schemas of the rubric and eval-set files",
        description="Write rubric.schema.json and eval_set.schema.json for editors.",
    )
    qsc.add_argument("--out", help="folder (default: next to the files, in rubrics/ and eval_sets/)")
    _add_data_dir(qsc)


def _add_questions_import_parser(qs) -> None:
    qi = qs.add_parser(
        "import",
        help="turn a CSV of questions into an eval set",
        description="Turn a CSV with question id, question and reference answer (optional level, "
        "topic, key_points separated by ';', points_required: how many of the key points the question asks for) "
        "into a valid eval set file. Without key_points they are derived from the reference; without "
        "points_required it is read from wording such as 'state at least 4'. Rows repeating a question "
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


def _add_score_parser(sub) -> None:
    s = sub.add_parser("score", help="score one written answer", description="Score one answer to a bank question.")
    s.add_argument("--question", "-q", required=True, help="question id (see `evaluator questions list`)")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--answer", "-a", help="the answer text")
    src.add_argument("--answer-file", help="read the answer from a UTF-8 file ('-' for stdin)")
    src.add_argument("-", dest="stdin", action="store_true", help="read the answer from standard input")
    s.add_argument("--eval-set", help="look the question up in this eval set only")
    s.add_argument("--json", action="store_true", help="print the verdict as JSON")
    s.add_argument("--dry-run", action="store_true", help="print the rendered prompt; make no judge call")
    s.add_argument(
        "--max-chars",
        type=int,
        default=DEFAULT_MAX_ANSWER_CHARS,
        help="answers longer than this are truncated and flagged",
    )
    _add_judge_flags(s)
    _add_data_dir(s)


def _add_grade_parser(sub) -> None:
    g = sub.add_parser(
        "grade",
        help="batch-grade a CSV of candidates' answers",
        description="Grade every answer in a CSV (columns candidate_id, question_id, answer; optional answer_id; "
        "extra columns are carried through). Re-running the same command resumes and skips finished rows.",
    )
    g.add_argument("csv", help="answers CSV (UTF-8 with or without BOM; delimiter detected)")
    g.add_argument("--out", required=True, help="output folder (results store, CSVs, report)")
    g.add_argument("--eval-set", default=DEFAULT_EVAL_SET, help=f"eval set name or path (default {DEFAULT_EVAL_SET})")
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
    g.add_argument(
        "--max-chars", type=int, default=DEFAULT_MAX_ANSWER_CHARS, help="answers longer than this are rejected"
    )
    g.add_argument("--dry-run", action="store_true", help="print calls, tokens and cost a run would take")
    g.add_argument("--price-in", type=float, default=0.0, help="USD per million prompt tokens (for the cost figure)")
    g.add_argument("--price-out", type=float, default=0.0, help="USD per million generated tokens")
    _add_thresholds(g)
    g.add_argument(
        "--export-batch",
        metavar="REQUESTS.jsonl",
        help="write the judge requests in the OpenAI Batch API format instead of calling the judge",
    )
    _add_judge_flags(g)
    _add_data_dir(g)


def _add_import_batch_parser(sub) -> None:
    ib = sub.add_parser(
        "import-batch",
        help="ingest OpenAI Batch API responses into a grading folder",
        description="Read the responses of a batch exported with `grade --export-batch` and write verdicts and "
        "outputs into the same folder.",
    )
    ib.add_argument("responses", help="responses .jsonl (OpenAI Batch API output or vLLM run-batch output)")
    ib.add_argument("--out", required=True, help="the folder the batch was exported from")
    _add_thresholds(ib, helped=False)
    _add_data_dir(ib)


def _add_calibrate_parser(sub) -> None:
    c = sub.add_parser(
        "calibrate",
        help="measure agreement with human grades and fit a mapping to the human scale",
        description="Join verdicts to human grades, report agreement (with 95%% intervals resampled by question) "
        "beside the human-human ceiling, check biases, fit a mapping to the human scale and write metrics.json, "
        "mapping.json and report.html.",
    )
    c.add_argument("--verdicts", required=True, help="a grading folder (with verdicts.jsonl) or a verdicts .jsonl")
    c.add_argument(
        "--human",
        default=None,
        help="CSV of human grades (default: the grades stored by `evaluator review` in the --verdicts folder)",
    )
    c.add_argument(
        "--human-columns", default=None, help="comma-separated grade columns, e.g. grade_1,grade_2 (default: grade)"
    )
    c.add_argument(
        "--official", default=None, help="column holding the official grade (default: the mean of --human-columns)"
    )
    c.add_argument(
        "--id-column",
        default="answer_id",
        help="join key column (default answer_id; falls back to candidate_id + question_id)",
    )
    c.add_argument(
        "--scale-min", type=float, default=None, help="lowest human grade (default: 0 if a max_grade column exists)"
    )
    c.add_argument("--scale-max", type=float, default=None, help="highest human grade (default: the max_grade column)")
    c.add_argument("--group-column", default=None, help="column of the grades CSV naming a group for fairness checks")
    c.add_argument(
        "--pass-at",
        type=float,
        default=None,
        help="pass threshold on the human scale for selection rates (default: the scale's midpoint)",
    )
    c.add_argument("--out", default="calibration", help="output folder (default ./calibration)")
    c.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")


def _add_review_parser(sub) -> None:
    r = sub.add_parser(
        "review",
        help="a local web page to read verdicts, overrule grades and see agreement (or --export the grades)",
        description="Serve a review workspace over a batch folder (from `evaluator grade --out DIR`): candidates "
        "ranked, every answer with its evidence, a review queue with keyboard navigation, and the agreement of "
        "the model with the grades reviewers enter. Grades are stored append-only in DIR/results.sqlite3.",
    )
    r.add_argument("folder", metavar="DIR", help="the batch folder (holds results.sqlite3)")
    r.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need a token)")
    r.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    r.add_argument(
        "--export",
        metavar="GRADES.csv",
        help="write every answer's final grade and reviewers' notes to this CSV, refresh results.csv and "
        "scorecards.csv, and exit",
    )
    r.add_argument("--eval-set", help="eval set name or path (default: the one the verdicts name)")
    _add_thresholds(r)
    _add_data_dir(r)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        if a.command == "questions" and not a.qcommand:
            parser.parse_args(["questions", "--help"])
        if a.command is None:
            parser.print_help()
            return 0
        from . import commands

        run = {
            "questions": commands.cmd_questions,
            "score": commands.cmd_score,
            "grade": commands.cmd_grade,
            "import-batch": commands.cmd_import_batch,
            "calibrate": commands.cmd_calibrate,
            "review": commands.cmd_review,
        }[a.command]
        return run(a)
    except EvaluatorError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
