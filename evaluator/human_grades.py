"""Human grades, stored append-only beside the verdicts in a batch folder's results store.

Every grade a reviewer enters is a new row (who, when, the grade it replaced and the new one); nothing is ever
updated or deleted, so re-grading a batch (which rewrites the `results` table's verdicts) never loses them and two
reviewers grading the same answer at once both stay in the history. The final grade of an answer is its latest
human grade, else the model's score.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import DataValidationError, InputError
from .models import Verdict

MAX_NOTE_CHARS = 2000
MAX_REVIEWER_CHARS = 80

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS human_grades (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, "
    "grade REAL NOT NULL, old_grade REAL, old_source TEXT, note TEXT NOT NULL DEFAULT '', reviewer TEXT NOT NULL, "
    "at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS human_grades_by_key ON human_grades (key, id)",
    # Append-only is enforced by the database itself, not only by this module's habits.
    "CREATE TRIGGER IF NOT EXISTS human_grades_no_update BEFORE UPDATE ON human_grades "
    "BEGIN SELECT RAISE(ABORT, 'human grades are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS human_grades_no_delete BEFORE DELETE ON human_grades "
    "BEGIN SELECT RAISE(ABORT, 'human grades are append-only'); END",
)


class GradeInputError(InputError):
    """A grade form that cannot be stored as given (nothing was written)."""


class UnknownAnswerError(GradeInputError):
    pass


@dataclass(frozen=True)
class GradeEntry:
    id: int
    key: str
    grade: float
    old_grade: float | None
    old_source: str | None  # 'human', 'model' or None (no grade before: an unscored or pending answer)
    note: str
    reviewer: str
    at: float

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "key": self.key,
            "grade": self.grade,
            "old_grade": self.old_grade,
            "old_source": self.old_source,
            "note": self.note,
            "reviewer": self.reviewer,
            "at": self.at,
        }


_COLUMNS = "id, key, grade, old_grade, old_source, note, reviewer, at"


def store_path(folder: Path) -> Path:
    """The results store of a batch folder (written by `evaluator grade --out FOLDER`)."""
    p = Path(folder) / "results.sqlite3"
    if not p.is_file():
        raise DataValidationError(
            f"{folder}: no results store (results.sqlite3); grade answers into it first with "
            f"`evaluator grade ANSWERS.csv --out {folder}`"
        )
    return p


class HumanGrades:
    """The `human_grades` table of one results store. Thread-safe (a lock around its connection); writers in other
    processes are serialised by SQLite's write lock (BEGIN IMMEDIATE)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False, isolation_level=None)
        self._lock = threading.RLock()  # one connection, shared by the server's threads
        self.conn.execute("PRAGMA journal_mode=WAL")
        for sql in _SCHEMA:
            self.conn.execute(sql)

    def close(self) -> None:
        self.conn.close()

    def add(
        self, key: str, grade: float | str, note: str | None, reviewer: str | None, scale: tuple[float, float]
    ) -> GradeEntry:
        """Validates, then appends one grade. The old value is the final grade just before this one, read in the
        same transaction, so of two reviewers saving at once each row names the grade it really replaced."""
        grade, note, reviewer = validate(grade, note, reviewer, scale)
        with self._lock:
            return self._append(key, grade, note, reviewer)

    def _append(self, key: str, grade: float, note: str, reviewer: str) -> GradeEntry:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            row = self.conn.execute("SELECT verdict FROM results WHERE key = ?", (key,)).fetchone()
            if row is None:
                raise UnknownAnswerError(f"unknown answer id {key!r}: it is not in {self.path}")
            last = self.conn.execute(
                "SELECT grade FROM human_grades WHERE key = ? ORDER BY id DESC LIMIT 1", (key,)
            ).fetchone()
            source: str | None
            if last is not None:
                old, source = last[0], "human"
            else:
                model = json.loads(row[0]).get("score") if row[0] else None
                old, source = model, ("model" if model is not None else None)
            at = time.time()
            cur = self.conn.execute(
                "INSERT INTO human_grades (key, grade, old_grade, old_source, note, reviewer, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, grade, old, source, note, reviewer, at),
            )
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        assert cur.lastrowid is not None  # an INSERT always sets it
        return GradeEntry(cur.lastrowid, key, grade, old, source, note, reviewer, at)

    def latest(self) -> dict[str, GradeEntry]:
        """The latest grade of every answer that has one (last write wins: the highest id)."""
        with self._lock:
            rows = self.conn.execute(
                f"SELECT {_COLUMNS} FROM human_grades WHERE id IN (SELECT MAX(id) FROM human_grades GROUP BY key)"
            ).fetchall()
        return {r[1]: GradeEntry(*r) for r in rows}

    def history(self, key: str | None = None) -> list[GradeEntry]:
        """Every grade, oldest first (of one answer when `key` is given)."""
        with self._lock:
            if key is None:
                rows = self.conn.execute(f"SELECT {_COLUMNS} FROM human_grades ORDER BY id").fetchall()
            else:
                rows = self.conn.execute(
                    f"SELECT {_COLUMNS} FROM human_grades WHERE key = ? ORDER BY id", (key,)
                ).fetchall()
        return [GradeEntry(*r) for r in rows]

    def entry(self, grade_id: int) -> GradeEntry | None:
        with self._lock:
            row = self.conn.execute(f"SELECT {_COLUMNS} FROM human_grades WHERE id = ?", (grade_id,)).fetchone()
        return GradeEntry(*row) if row else None

    def version(self) -> int:
        """The id of the newest grade (0 when none): changes whenever a grade is added."""
        with self._lock:
            return self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM human_grades").fetchone()[0]


def validate(
    grade: float | str, note: str | None, reviewer: str | None, scale: tuple[float, float]
) -> tuple[float, str, str]:
    """The cleaned (grade, note, reviewer), or GradeInputError saying which field is wrong and how to fix it."""
    lo, hi = scale
    try:
        g = float(str(grade).strip())
    except ValueError:
        raise GradeInputError(
            f"grade {str(grade)[:40]!r} is not a number; enter a number from {lo:g} to {hi:g}"
        ) from None
    if not math.isfinite(g) or not (lo <= g <= hi):
        raise GradeInputError(f"grade {g:g} is outside the scale; enter a number from {lo:g} to {hi:g}")
    note = (note or "").replace("\r\n", "\n").strip()
    if len(note) > MAX_NOTE_CHARS:
        raise GradeInputError(f"the note has {len(note)} characters, over the limit of {MAX_NOTE_CHARS}; shorten it")
    reviewer = (reviewer or "").strip()
    if not reviewer:
        raise GradeInputError("the reviewer's name is empty; enter who is grading")
    if len(reviewer) > MAX_REVIEWER_CHARS:
        raise GradeInputError(f"the reviewer's name is over {MAX_REVIEWER_CHARS} characters; shorten it")
    if any(ord(c) < 32 for c in reviewer) or any(ord(c) < 32 and c not in "\n\t" for c in note):
        raise GradeInputError("the reviewer's name or the note holds control characters; remove them")
    return g, note, reviewer


def latest_grades(db_path: Path) -> dict[str, GradeEntry]:
    """The latest human grade per answer key, or {} for a store without any (only reads: creates nothing)."""
    if not Path(db_path).is_file():
        return {}
    conn = sqlite3.connect(db_path, timeout=30.0)
    try:
        has = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'human_grades'").fetchone()
        if not has:
            return {}
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM human_grades WHERE id IN (SELECT MAX(id) FROM human_grades GROUP BY key)"
        ).fetchall()
        return {r[1]: GradeEntry(*r) for r in rows}
    finally:
        conn.close()


def final_grade(verdict: Verdict | None, human: GradeEntry | None) -> tuple[float | None, float | None, str]:
    """(final grade on the answer's scale, the same /100, its source: 'human', 'model' or '')."""
    if verdict is None and human is None:
        return None, None, ""
    lo = verdict.scale_min if verdict is not None else None
    hi = verdict.scale_max if verdict is not None else None
    if human is not None:
        g = human.grade
        g100 = round(100 * (g - lo) / (hi - lo), 2) if lo is not None and hi is not None and hi > lo else None
        return g, g100, "human"
    if verdict is None or verdict.score is None:
        return None, None, ""
    return verdict.score, verdict.score_100, "model"
