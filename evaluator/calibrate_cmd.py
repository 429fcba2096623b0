"""`evaluator calibrate`: argument parsing for the calibration report (the work is in calibrate_report)."""

from __future__ import annotations

import argparse


def add_calibrate_parser(sub) -> None:
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


def run_calibrate(a: argparse.Namespace) -> int:
    from .calibrate_report import run

    return run(a)
