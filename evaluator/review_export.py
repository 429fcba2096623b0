"""`evaluator review DIR --export GRADES.csv`: every answer's final grade with the reviewers' notes, and the
folder's results.csv / scorecards.csv regenerated so they show the human grades too."""

from __future__ import annotations

import time
from pathlib import Path

from .csvio import read_csv, write_csv
from .errors import DataValidationError
from .resources import Resources
from .review_data import Folder

HEADER = [
    "answer_id",
    "candidate_id",
    "question_id",
    "line",
    "status",
    "model_score",
    "human_grade",
    "final_grade",
    "final_source",
    "scale_min",
    "scale_max",
    "reviewer",
    "graded_at",
    "note",
    "human_grades_count",
]


def export(folder: Folder, path: Path) -> list[Path]:
    """Writes `path` and regenerates the folder's outputs; returns the paths written."""
    from .outputs import write_outputs
    from .store import Rejected, ResultStore

    snap = folder.snapshot()
    if snap.eval_set is None:
        raise DataValidationError(f"cannot regenerate the outputs of {folder.folder}: {'; '.join(snap.warnings)}")
    counts: dict[str, int] = {}
    for e in folder.grades.history():
        counts[e.key] = counts.get(e.key, 0) + 1
    rows = []
    for a in snap.answers:
        h = a.human
        rows.append(
            [
                a.answer_id or a.key,
                a.candidate_id,
                a.question_id,
                a.line,
                a.status,
                (a.v or {}).get("score"),
                h.grade if h else None,
                a.final,
                a.final_source,
                a.scale[0] if a.scale else None,
                a.scale[1] if a.scale else None,
                h.reviewer if h else "",
                time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(h.at)) if h else "",
                h.note if h else "",
                counts.get(a.key, 0),
            ]
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(path, HEADER, rows)
    rejected = []
    rej = folder.folder / "rejected.csv"
    if rej.is_file():
        t = read_csv(rej)
        rejected = [Rejected(int(c[0]), c[1], c[2], c[3]) for _, c in t.rows if len(c) == 4 and c[0].isdigit()]
    store = ResultStore(folder.db)
    try:
        paths = write_outputs(
            store,
            snap.eval_set,
            folder.resources or Resources.locate(),
            folder.folder,
            folder.advance_at,
            folder.reject_below,
            rejected,
        )
    finally:
        store.conn.close()
    return [path, *paths]
