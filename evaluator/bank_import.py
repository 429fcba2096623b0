"""Turns a CSV of questions (id, question, reference answer, optional level/topic/key points/points required) into
a valid eval set file, so a team can grade its own questions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from .csvio import CsvTable, read_csv
from .errors import DataValidationError
from .key_points import MAX_POINTS, asked_count, derive_key_points
from .models import EvalSet, Level

ID_COLUMNS = ("question_id", "id")
QUESTION_COLUMNS = ("question", "question_text")
REFERENCE_COLUMNS = ("reference_answer", "reference", "answer_key")


def _pick(header: list[str], wanted: str | None, options: tuple[str, ...], what: str, path: Path) -> int:
    names = [wanted] if wanted else list(options)
    lower = [h.lower() for h in header]
    for n in names:
        if n.lower() in lower:
            return lower.index(n.lower())
    raise DataValidationError(
        f"{path}: no {what} column (looked for {', '.join(names)}); columns found: {', '.join(header)}. "
        f"Rename the column or pass --{what.replace(' ', '-')}-column NAME."
    )


@dataclass(frozen=True)
class _Columns:
    """Where each field sits in the CSV header (None: the optional column is absent)."""

    id: int
    question: int
    reference: int
    level: int | None
    topic: int | None
    key_points: int | None
    points_required: int | None


def _columns(
    table: CsvTable, id_column: str | None, question_column: str | None, reference_column: str | None
) -> _Columns:
    h = table.header
    lower = [x.lower() for x in h]
    return _Columns(
        id=_pick(h, id_column, ID_COLUMNS, "question id", table.path),
        question=_pick(h, question_column, QUESTION_COLUMNS, "question", table.path),
        reference=_pick(h, reference_column, REFERENCE_COLUMNS, "reference", table.path),
        level=lower.index("level") if "level" in lower else None,
        topic=lower.index("topic") if "topic" in lower else None,
        key_points=lower.index("key_points") if "key_points" in lower else None,
        points_required=lower.index("points_required") if "points_required" in lower else None,
    )


def _add_row(
    questions: dict[str, dict], cols: _Columns, where: str, source: str, cells: list[str], defaults: tuple[str, str]
) -> str | None:
    """Adds one CSV row to `questions` (a new question, or one more reference of an earlier one); the problem with
    the row if it has one."""
    qid, qtext, ref = cells[cols.id].strip(), cells[cols.question].strip(), cells[cols.reference].strip()
    if not qid or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", qid):
        return f"{where}: question id {qid!r} is empty or has characters other than letters, digits, . _ -"
    if not qtext or not ref:
        return f"{where} (question {qid}): {'question' if not qtext else 'reference answer'} is empty"
    default_level, default_topic = defaults
    level = (cells[cols.level].strip().lower() if cols.level is not None else "") or default_level
    if level not in {lv.value for lv in Level}:
        return f"{where} (question {qid}): level {level!r} is not junior, mid or senior"
    kps = [k.strip() for k in re.split(r"[;|]", cells[cols.key_points])] if cols.key_points is not None else []
    kps = [k for k in kps if k][:MAX_POINTS] or derive_key_points(ref)
    required = cells[cols.points_required].strip() if cols.points_required is not None else ""
    if required and not (required.isdigit() and 1 <= int(required) <= len(kps)):
        return (
            f"{where} (question {qid}), column points_required: {required!r} is not a whole number from 1 to "
            f"{len(kps)} (the question's key points); leave it empty when every key point is required"
        )
    entry = questions.setdefault(
        qid,
        {
            "id": qid,
            "level": level,
            "topic": (cells[cols.topic].strip() if cols.topic is not None else "") or default_topic,
            "question": qtext,
            "references": [],
            # Without a key_points column they are derived from the reference, written out for the user to edit.
            "key_points": kps,
            # "State at least 4 of the differences": how many points the question asks for, from the column, else
            # from the question's wording when it asks for fewer than the reference lists (written out to edit).
            "points_required": int(required) if required else asked_count(qtext, len(kps)),
            "sources": [source],
        },
    )
    if ref not in entry["references"]:
        entry["references"].append(ref)
    if entry["question"] != qtext:
        return (
            f"{where} (question {qid}): question text differs from the one at {entry['sources'][0]} with the same id;"
            " give each distinct question its own id"
        )
    return None


def import_questions(
    csv_path: Path,
    *,
    set_id: str,
    rubric: str = "reference-only",
    default_level: str = "mid",
    default_topic: str = "general",
    id_column: str | None = None,
    question_column: str | None = None,
    reference_column: str | None = None,
) -> EvalSet:
    table = read_csv(csv_path)
    cols = _columns(table, id_column, question_column, reference_column)
    width = len(table.header)
    problems: list[str] = []
    questions: dict[str, dict] = {}
    for line, cells in table.rows:
        if len(cells) != width:
            problems.append(f"{table.path}:{line}: {len(cells)} cells but the header has {width}")
            continue
        where, source = f"{table.path}:{line}", f"{table.path.name}:{line}"
        problem = _add_row(questions, cols, where, source, cells, (default_level, default_topic))
        if problem:
            problems.append(problem)
    if problems:
        raise DataValidationError(f"{table.path}: {len(problems)} problem(s)", problems[:50])
    if not questions:
        raise DataValidationError(f"{table.path}: no question rows found")
    return EvalSet.model_validate(
        {
            "id": set_id,
            "version": "1",
            "title": f"Imported from {table.path.name}",
            "rubric": rubric,
            "questions": list(questions.values()),
        }
    )


def write_eval_set(es: EvalSet, path: Path) -> None:
    data = es.model_dump(mode="json", exclude_none=True, exclude_defaults=True, by_alias=True)
    data = {"id": es.id, "version": es.version, "rubric": es.rubric, **data}
    text = "# yaml-language-server: $schema=eval_set.schema.json\n" + yaml.safe_dump(
        data, sort_keys=False, allow_unicode=True, width=110
    )
    Path(path).write_text(text, encoding="utf-8")
