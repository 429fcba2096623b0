"""Inputs of `evaluator calibrate`: the verdicts of a grading folder, and human grades from a CSV (every bad row
located) or from the grades `evaluator review` stored beside the verdicts."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import numpy as np

from .csvio import CsvTable, read_csv
from .errors import CalibrationError, DataValidationError


def load_verdicts(path: Path) -> list[dict]:
    f = path / "verdicts.jsonl" if path.is_dir() else path
    if not f.exists():
        raise CalibrationError(f"{f}: no verdicts file; pass a grading folder or a verdicts .jsonl")
    out = []
    for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise CalibrationError(f"{f}:{i}: not JSON ({e.msg})") from e
    return out


def load_human(
    path: Path,
    columns: list[str],
    official: str | None,
    id_column: str,
    scale_min: float | None,
    scale_max: float | None,
    group_column: str | None,
) -> dict:
    """A grades CSV: {"rows": {answer key: row}, "scale_min", "scale_max"}; every bad row is reported at once."""
    t = read_csv(path)
    lower = {h.lower(): i for i, h in enumerate(t.header)}
    names = [*columns, *([official] if official else [])]  # the official grade, when named, comes last
    _check_columns(path, t.header, lower, names, id_column, group_column)
    lo, hi = _human_scale(path, t, lower, scale_min, scale_max)
    problems: list[str] = []
    rows: dict[str, dict] = {}
    first_line: dict[str, int] = {}
    for line, cells in t.rows:
        if len(cells) != len(t.header):
            problems.append(f"{path}:{line}: {len(cells)} cells but the header has {len(t.header)}")
            continue
        rec = {h: cells[i].strip() for h, i in lower.items()}
        key = rec[id_column.lower()] if id_column.lower() in lower else f"{rec['candidate_id']}|{rec['question_id']}"
        if key in first_line:
            problems.append(f"{path}:{line}: duplicate id {key!r} (first at line {first_line[key]})")
            continue
        first_line[key] = line
        grades = _grades(rec, names, lo, hi, f"{path}:{line}")
        if isinstance(grades, str):
            problems.append(grades)
            continue
        rows[key] = {
            "grades": grades[: len(columns)],
            "official": grades[-1] if official else float(np.mean(grades)),
            "line": line,
            "question_id": rec.get("question_id", ""),
            "answer": rec.get("answer", ""),
            "group": rec[group_column.lower()] if group_column else None,
            "level": rec.get("level"),
            "topic": rec.get("topic"),
        }
    if problems:
        raise DataValidationError(f"{path}: {len(problems)} problem(s) in the human grades", problems[:30])
    return {"rows": rows, "scale_min": lo, "scale_max": hi}


def _check_columns(
    path: Path, header: list[str], lower: dict, grade_columns: list[str], id_column: str, group_column: str | None
) -> None:
    need = grade_columns + ([group_column] if group_column else [])
    missing = [c for c in need if c.lower() not in lower]
    if id_column.lower() not in lower and not {"candidate_id", "question_id"} <= set(lower):
        missing.append(f"{id_column} (or candidate_id and question_id)")
    if missing:
        raise DataValidationError(f"{path}: missing column(s) {', '.join(missing)}; columns found: {', '.join(header)}")


def _human_scale(
    path: Path, t: CsvTable, lower: dict, scale_min: float | None, scale_max: float | None
) -> tuple[float, float]:
    """The given scale; a missing maximum comes from a max_grade column that holds one value (the minimum then
    defaults to 0)."""
    if scale_max is None:
        if "max_grade" not in lower:
            raise CalibrationError(
                f"{path}: the human scale is unknown; pass --scale-min and --scale-max (or add a max_grade column)"
            )
        maxes = {cells[lower["max_grade"]].strip() for _, cells in t.rows}
        if len(maxes) != 1:
            raise CalibrationError(f"{path}: max_grade differs between rows ({sorted(maxes)[:5]}); pass --scale-max")
        scale_max = float(maxes.pop())
        scale_min = 0.0 if scale_min is None else scale_min
    if scale_min is None:
        raise CalibrationError(f"{path}: pass --scale-min too (the lowest possible human grade)")
    return float(scale_min), float(scale_max)


def _grades(rec: dict[str, str], names: list[str], lo: float, hi: float, where: str) -> list[float] | str:
    """The grades in columns `names`, or the first problem with one."""
    grades = []
    for c in names:
        raw = rec[c.lower()]
        try:
            x = float(raw)
        except ValueError:
            return f"{where}: column {c}: {raw!r} is not a number"
        if not (lo <= x <= hi) or math.isnan(x):
            return f"{where}: column {c}: {x:g} is outside the scale {lo:g}-{hi:g}"
        grades.append(x)
    return grades


def stored_human(verdicts: Path) -> dict:
    """The human grades `evaluator review` stored in a grading folder, shaped like load_human's result: the latest
    grade of each answer is its official grade; the scale is the verdicts' (the bank's)."""
    from .human_grades import latest_grades

    folder = verdicts if verdicts.is_dir() else verdicts.parent
    db = folder / "results.sqlite3"
    latest = latest_grades(db)
    if not latest:
        raise CalibrationError(
            f"no --human file given and no human grades stored in {db}; grade answers in "
            f"`evaluator review {folder}` or pass --human GRADES.csv"
        )
    with sqlite3.connect(db, timeout=30.0) as c:
        rows = c.execute("SELECT key, line, question_id, answer, verdict FROM results").fetchall()
    out, scales = {}, set()
    for key, line, qid, answer, verdict in rows:
        if key not in latest:
            continue
        if verdict:
            v = json.loads(verdict)
            scales.add((float(v["scale_min"]), float(v["scale_max"])))
        g = latest[key].grade
        out[key] = {
            "grades": [g],
            "official": g,
            "line": line,
            "question_id": qid,
            "answer": answer,
            "group": None,
            "level": None,
            "topic": None,
        }
    if len(scales) != 1:
        raise CalibrationError(
            f"{db}: the graded answers' verdicts use {len(scales)} scales ({sorted(scales)}); calibrate needs one. "
            "Export the grades with `evaluator review --export` and pass them per scale with --human"
        )
    lo, hi = scales.pop()
    return {"rows": out, "scale_min": lo, "scale_max": hi}
