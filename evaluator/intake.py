"""Reading a CSV of candidates' answers for grading: which columns hold what, and every row checked before any
judge call, each refused row (in rejected.csv) with its line number and the reason shown to the user."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import DEFAULT_EVAL_SET
from .csvio import CsvTable, read_csv
from .errors import DataValidationError, InputError
from .resources import LoadedEvalSet, unknown_question_message
from .scoring import Evaluator
from .store import Rejected, Row, write_rejected

REQUIRED = ("candidate_id", "question_id", "answer")


def load_rows(
    path: Path, les: LoadedEvalSet, columns: dict[str, str], max_chars: int
) -> tuple[list[Row], list[Rejected], list[str]]:
    table = read_csv(path)
    idx, i_aid = _column_roles(path, table, columns)
    rows: list[Row] = []
    rejected: list[Rejected] = []
    seen: dict[tuple[str, str], int] = {}
    seen_ids: dict[str, int] = {}
    for line, cells in table.rows:
        cand = cells[idx["candidate_id"]].strip() if idx["candidate_id"] < len(cells) else ""
        qid = cells[idx["question_id"]].strip() if idx["question_id"] < len(cells) else ""
        aid = cells[i_aid].strip() if i_aid is not None and len(cells) == len(table.header) else ""
        reason = _row_problem(table, cells, idx, les, cand, qid, max_chars)
        if reason is None and (cand, qid) in seen:
            reason = f"duplicate answer by candidate {cand} to question {qid} (first at line {seen[cand, qid]})"
        if reason is None and aid and aid in seen_ids:
            reason = f"duplicate answer_id {aid} (first at line {seen_ids[aid]})"
        if reason is not None:
            rejected.append(Rejected(line, cand, qid, reason))
            continue
        seen[cand, qid] = line
        if aid:
            seen_ids[aid] = line
        extra = {h: cells[i] for i, h in enumerate(table.header) if i not in idx.values() and i != i_aid}
        rows.append(Row(aid or f"{cand}|{qid}", line, cand, qid, aid, cells[idx["answer"]], extra))
    return rows, rejected, table.warnings


def _column_roles(path: Path, table: CsvTable, columns: dict[str, str]) -> tuple[dict[str, int], int | None]:
    """The index of each required column (matched without case) and of the optional answer id column."""
    lower = {h.lower(): i for i, h in enumerate(table.header)}
    idx = {}
    missing = []
    for role in REQUIRED:
        name = columns.get(role, role)
        if name.lower() not in lower:
            missing.append(name)
        else:
            idx[role] = lower[name.lower()]
    if missing:
        raise DataValidationError(
            f"{path}: missing column(s) {', '.join(missing)}; columns found: {', '.join(table.header)}. "
            "Rename them or map them with --candidate-column / --question-column / --answer-column."
        )
    return idx, lower.get(columns.get("answer_id", "answer_id").lower())


def _row_problem(
    table: CsvTable, cells: list[str], idx: dict[str, int], les: LoadedEvalSet, cand: str, qid: str, max_chars: int
) -> str | None:
    """Why a row cannot be graded on its own (duplicates are checked across rows), or None."""
    if len(cells) != len(table.header):
        return f"row has {len(cells)} cells but the header has {len(table.header)} (check quoting and delimiters)"
    answer = cells[idx["answer"]].strip()
    if not cand:
        return "candidate_id is empty"
    if qid not in les.by_id:
        return unknown_question_message(qid, list(les.by_id))
    if not answer:
        return "answer is empty"
    if len(answer) > max_chars:
        return f"answer has {len(answer)} characters, over the limit of {max_chars} (raise --max-chars)"
    return None


@dataclass
class Loaded:
    """A CSV read and checked against an eval set: the rows to grade and the rows refused (written to
    `rejected_path`), with the reader's warnings (encoding guessed, rows swallowed by quoting...)."""

    les: LoadedEvalSet
    rows: list[Row]
    rejected: list[Rejected]
    warnings: list[str]
    rejected_path: Path


def load_answers(
    csv_path: Path,
    out_dir: Path,
    evaluator: Evaluator,
    *,
    eval_set: str | Path = DEFAULT_EVAL_SET,
    columns: dict[str, str] | None = None,
    strict: bool = False,
    on_loaded: Callable[[Loaded], None] | None = None,
) -> Loaded:
    """Reads and checks the CSV, writes rejected.csv into `out_dir`, calls `on_loaded`, then raises if there is
    nothing to grade (or, with `strict`, if any row was rejected). Answers longer than the evaluator's
    `max_chars` are rejected."""
    csv_path, out_dir = Path(csv_path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    les = evaluator.resources.load_eval_set(eval_set)
    rows, rejected, warnings = load_rows(csv_path, les, columns or {}, evaluator.max_chars)
    loaded = Loaded(les, rows, rejected, warnings, out_dir / "rejected.csv")
    write_rejected(loaded.rejected_path, rejected)
    if on_loaded:
        on_loaded(loaded)
    if rejected and strict:
        raise DataValidationError(f"{csv_path}: {len(rejected)} invalid row(s); fix them or drop --strict")
    if not rows:
        raise InputError(f"{csv_path}: no valid rows to grade")
    return loaded
