"""The results store of a batch folder (results.sqlite3): one row per answer, pending until its verdict is saved.

It survives crashes (a finished row is committed before the next is counted) and is read back as typed rows with
their `Verdict`. What resume needs (status, reason, retryable, cache key) is kept in columns of its own, so a
re-run never digs into the verdict's JSON; a store written before those columns existed gets them on open.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .backends import is_final
from .csvio import write_csv
from .models import Verdict

STORE_NAME = "results.sqlite3"

_COLUMNS = (
    "key TEXT PRIMARY KEY, line INTEGER, candidate_id TEXT, question_id TEXT, answer_id TEXT, answer TEXT, "
    "extra TEXT, status TEXT, verdict TEXT, finished REAL, reason TEXT, retryable INTEGER, cache_key TEXT"
)
# Columns added after the first layout, and how a store of that layout fills them from its verdicts.
_ADDED = {
    "reason": "json_extract(verdict, '$.reason')",
    "retryable": "json_extract(verdict, '$.retryable')",
    "cache_key": "json_extract(verdict, '$.provenance.cache_key')",
}


@dataclass
class Row:
    """One valid answer of a CSV, as it is stored before grading."""

    key: str
    line: int
    candidate_id: str
    question_id: str
    answer_id: str
    answer: str
    extra: dict = field(default_factory=dict)


@dataclass
class Rejected:
    """A CSV row refused before grading, with the reason shown to the user."""

    line: int
    candidate_id: str
    question_id: str
    reason: str


@dataclass
class StoredRow(Row):
    """A row of the store: the answer as registered, its status and (once graded) its verdict."""

    status: str = "pending"  # pending | scored | unscored
    verdict: Verdict | None = None


@dataclass
class StoreCounts:
    """The store's rows by outcome; `retry`: unscored rows a re-run grades again."""

    total: int
    scored: int
    unscored: int
    pending: int
    unscored_by_reason: dict[str, int]
    retry: int
    flagged: int


class CountedRun:
    """What a run's summary shares: the store's counts afterwards, with shortcuts to the three outcomes."""

    counts: StoreCounts

    @property
    def scored(self) -> int:
        return self.counts.scored

    @property
    def unscored(self) -> int:
        return self.counts.unscored

    @property
    def pending(self) -> int:
        return self.counts.pending


class ResultStore:
    """One row per answer; a finished row is committed before the next is counted."""

    def __init__(self, path: Path):
        self.path = path
        self.conn = sqlite3.connect(path, timeout=30.0, check_same_thread=False)
        self.lock = threading.Lock()
        with self.conn:
            self.conn.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a commit survives the process being killed (no fsync per row, which cost the single
            # result-saving thread a few ms per answer); only an OS crash may lose the last rows, which a re-run
            # grades again.
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute(f"CREATE TABLE IF NOT EXISTS results ({_COLUMNS})")
        self._migrate()

    def _migrate(self) -> None:
        """Adds the resume columns to a store of the first layout, filled from its verdicts once."""
        if set(_ADDED) <= self._columns():
            return
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")  # two processes opening the same old store: one migrates
            missing = [c for c in _ADDED if c not in self._columns()]
            for c in missing:
                self.conn.execute(f"ALTER TABLE results ADD COLUMN {c} {'INTEGER' if c == 'retryable' else 'TEXT'}")
            if missing:
                fill = ", ".join(f"{c} = {_ADDED[c]}" for c in missing)
                self.conn.execute(f"UPDATE results SET {fill} WHERE verdict IS NOT NULL")

    def _columns(self) -> set[str]:
        return {r[1] for r in self.conn.execute("PRAGMA table_info(results)")}

    def register(self, rows: list[Row]) -> None:
        """Adds the rows as pending; a row already stored takes the current CSV's text, line and columns, and
        becomes pending again if its answer or question changed (its old verdict judged other text)."""
        same = "(results.answer IS excluded.answer AND results.question_id IS excluded.question_id)"
        kept = ", ".join(f"{c}=CASE WHEN {same} THEN results.{c} END" for c in ("verdict", "finished", *_ADDED))
        with self.lock, self.conn:
            self.conn.executemany(
                "INSERT INTO results (key, line, candidate_id, question_id, answer_id, answer, extra, status)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'pending') ON CONFLICT(key) DO UPDATE SET line=excluded.line, "
                "candidate_id=excluded.candidate_id, question_id=excluded.question_id, answer_id=excluded.answer_id, "
                f"answer=excluded.answer, extra=excluded.extra, status=CASE WHEN {same} THEN results.status ELSE "
                f"'pending' END, {kept}",
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
                "SELECT key, status, reason, retryable, cache_key FROM results WHERE status != 'pending'"
            ).fetchall()
        return {k: ck for k, status, reason, retry, ck in found if is_final(status, reason or "", bool(retry))}

    def save(self, key: str, verdict: Verdict) -> None:
        with self.lock, self.conn:
            self.conn.execute(
                "UPDATE results SET status=?, verdict=?, finished=?, reason=?, retryable=?, cache_key=? WHERE key=?",
                (
                    verdict.status,
                    verdict.model_dump_json(),
                    time.time(),
                    verdict.reason,
                    int(verdict.retryable),
                    verdict.provenance.cache_key,
                    key,
                ),
            )

    def all(self) -> list[StoredRow]:
        with self.lock:
            found = self.conn.execute(
                "SELECT key, line, candidate_id, question_id, answer_id, answer, extra, status, verdict "
                "FROM results ORDER BY line"
            ).fetchall()
        return [
            StoredRow(k, line, cand, qid, aid, answer, json.loads(extra or "{}"), status, _verdict(v))
            for k, line, cand, qid, aid, answer, extra, status, v in found
        ]


def _verdict(text: str | None) -> Verdict | None:
    return Verdict.model_validate_json(text) if text else None


def summarise(store: ResultStore) -> StoreCounts:
    rows = store.all()
    by_reason: dict[str, int] = {}
    flagged = retry = 0
    for r in rows:
        v = r.verdict
        if v is None:
            continue
        if v.status != "scored":
            key = re.split(r"[:(;]", v.reason)[0].strip()[:60]
            by_reason[key] = by_reason.get(key, 0) + 1
            retry += not is_final(v.status, v.reason, v.retryable)
        flagged += bool(v.review_flags)
    return StoreCounts(
        total=len(rows),
        scored=sum(r.status == "scored" for r in rows),
        unscored=sum(r.status == "unscored" for r in rows),
        pending=sum(r.status == "pending" for r in rows),
        unscored_by_reason=by_reason,
        retry=retry,
        flagged=flagged,
    )


def write_rejected(path: Path, rejected: list[Rejected]) -> None:
    write_csv(
        path,
        ["line", "candidate_id", "question_id", "reason"],
        [[r.line, r.candidate_id, r.question_id, r.reason] for r in rejected],
    )
