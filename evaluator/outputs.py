"""Outputs regenerated from the results store: results.csv, verdicts.jsonl, scorecards.csv, report.html."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Protocol

from . import svg_charts
from .csvio import atomic_open, write_csv
from .human_grades import GradeEntry, final_grade, latest_grades
from .models import Verdict
from .resources import LoadedEvalSet, Resources
from .store import Rejected, ResultStore, StoredRow

LEVELS = ("junior", "mid", "senior")


class Graded(Protocol):
    """What a scorecard needs of one answer (a stored row with its human grade, or a review-workspace answer)."""

    candidate_id: str
    question_id: str
    status: str
    verdict: Verdict | None
    human: GradeEntry | None


@dataclass
class Record(StoredRow):
    """A stored row with the latest human grade of its answer (from `evaluator review`)."""

    human: GradeEntry | None = None


def records(store: ResultStore) -> list[Record]:
    human = latest_grades(store.path)  # reviewers' grades (evaluator review) live beside the verdicts
    return [Record(**vars(r), human=human.get(r.key)) for r in store.all()]


def write_outputs(
    store: ResultStore,
    les: LoadedEvalSet,
    resources: Resources,
    out: Path,
    advance_at: float,
    reject_below: float,
    rejected: list[Rejected] | None = None,
) -> list[Path]:
    recs = records(store)
    header, rows = results_table(recs, _criterion_ids(les, resources))
    paths = [out / "results.csv", out / "verdicts.jsonl", out / "scorecards.csv", out / "report.html"]
    write_csv(paths[0], header, rows)
    _write_verdicts(paths[1], recs)
    cards = scorecards(recs, les, advance_at, reject_below)
    write_csv(paths[2], list(cards[0].keys()) if cards else ["candidate_id"], [list(c.values()) for c in cards])
    with atomic_open(paths[3]) as f:
        f.write(report_html(recs, les, cards, rejected or []))
    return paths


def _criterion_ids(les: LoadedEvalSet, resources: Resources) -> list[str]:
    """Every criterion of the eval set's rubrics, in the order they first appear: one level column each."""
    ids: list[str] = []
    for q in les.eval_set.questions:
        for c in resources.rubric_for(les, q).rubric.criteria:
            if c.id not in ids:
                ids.append(c.id)
    return ids


def results_table(recs: list[Record], crit_ids: list[str]) -> tuple[list[str], list[list]]:
    """results.csv: one row per stored answer, graded or not, with its final grade and the CSV's extra columns."""
    extra_cols = sorted({k for r in recs for k in r.extra})
    header = [
        *("line", "answer_id", "candidate_id", "question_id", "status", "score", "scale_max", "score_100"),
        "holistic_level",
        *[f"level_{c}" for c in crit_ids],
        *("red_flags", "review_flags", "similarity", "key_point_coverage", "reason"),
        *("human_score", "human_reviewer", "human_note", "final_score", "final_score_100", "final_source"),
        *extra_cols,
    ]
    return header, [_result_row(r, crit_ids, extra_cols) for r in recs]


def _result_row(r: Record, crit_ids: list[str], extra_cols: list[str]) -> list:
    v, h = r.verdict, r.human
    levels = {c.id: c.level for c in v.criteria} if v else {}
    sim = v.similarity if v else None
    return [
        *(r.line, r.answer_id, r.candidate_id, r.question_id, r.status),
        *((v.score, v.scale_max, v.score_100, v.holistic_level) if v else (None,) * 4),
        *[levels.get(c) for c in crit_ids],
        ";".join(f.id for f in v.red_flags if f.hit) if v else "",
        ";".join(f.code for f in v.review_flags) if v else "",
        sim.best_reference if sim else None,
        sim.key_point_coverage if sim else None,
        v.reason if v else "",
        *((h.grade, h.reviewer, h.note) if h else (None, "", "")),
        *final_grade(v, h),
        *[r.extra.get(k, "") for k in extra_cols],
    ]


def _write_verdicts(path: Path, recs: list[Record]) -> None:
    with atomic_open(path) as f:
        for r in recs:
            if r.verdict is not None:
                row = {"answer_id": r.answer_id, "candidate_id": r.candidate_id, "line": r.line}
                f.write(json.dumps(row | r.verdict.model_dump(mode="json"), ensure_ascii=False) + "\n")


def scorecards(recs: Sequence[Graded], les: LoadedEvalSet, advance_at: float, reject_below: float) -> list[dict]:
    by_cand: dict[str, list[Graded]] = {}
    for r in recs:
        by_cand.setdefault(r.candidate_id, []).append(r)
    return [_scorecard(cand, rs, les, advance_at, reject_below) for cand, rs in sorted(by_cand.items())]


def _scorecard(cand: str, rs: list[Graded], les: LoadedEvalSet, advance_at: float, reject_below: float) -> dict:
    scored = [r.verdict for r in rs if r.verdict is not None and r.verdict.status == "scored"]
    per_level = {}
    for lvl in LEVELS:
        xs = [s for r in rs if les.by_id[r.question_id].level.value == lvl and (s := _score_100(r)) is not None]
        per_level[f"{lvl}_score_100"] = round(mean(xs), 1) if xs else None
    # The final grade: a reviewer's where there is one, else the model's. The recommendation follows it.
    finals = [f for f in (final_grade(r.verdict, r.human)[1] for r in rs) if f is not None]
    final_overall = round(mean(finals), 1) if finals else None
    pending = sum(r.status == "pending" for r in rs)
    overall = [s for r in rs if (s := _score_100(r)) is not None]
    unreviewed = sum(_flagged(r) and r.human is None for r in rs)
    return {
        "candidate_id": cand,
        "overall_score_100": round(mean(overall), 1) if overall else None,
        **per_level,
        "questions_answered": len(rs),
        "scored": len(scored),
        "unscored": sum(r.verdict is not None and r.verdict.status != "scored" for r in rs),
        "pending": pending,
        "red_flags": sum(sum(f.hit for f in v.red_flags) for v in scored),
        "review_count": sum(_flagged(r) for r in rs),
        "human_graded": sum(r.human is not None for r in rs),
        "final_overall_score_100": final_overall,
        "recommendation": _recommendation(final_overall, pending, unreviewed, advance_at, reject_below),
    }


def _scored(r: Graded) -> bool:
    return r.verdict is not None and r.verdict.status == "scored"


def _score_100(r: Graded) -> float | None:
    """The model's score /100 of a scored answer, else None."""
    v = r.verdict
    return v.score_100 if v is not None and v.status == "scored" else None


def _flagged(r: Graded) -> bool:
    return r.verdict is not None and bool(r.verdict.review_flags)


def _recommendation(
    final_overall: float | None, pending: int, unreviewed: int, advance_at: float, reject_below: float
) -> str:
    if pending:
        return "pending"  # no recommendation from part of the answers
    if final_overall is None:
        return "review"
    if final_overall >= advance_at:
        rec = "advance"
    elif final_overall < reject_below:
        rec = "reject"
    else:
        rec = "hold"
    return rec + " (check flagged answers)" if unreviewed else rec


def _e(value: object) -> str:
    return html.escape(str(value).replace("\x00", ""))


def _charts(scored: list[Record]) -> list[str]:
    if not scored:
        return []
    per_q: dict[str, list[float]] = {}
    values = [(r.question_id, s) for r in scored if (s := _score_100(r)) is not None]
    for qid, s in values:
        per_q.setdefault(qid, []).append(s)
    qs = sorted(per_q, key=lambda k: mean(per_q[k]))
    return [
        svg_charts.histogram([s for _, s in values], 0, 100, 20, "Score distribution", "score /100"),
        svg_charts.hbars(
            qs, [mean(per_q[q]) for q in qs], 0, 100, "Per-question difficulty", "mean score /100 (lower = harder)"
        ),
    ]


def _table_rows(recs: list[Record], cards: list[dict], rejected: list[Rejected]) -> tuple[str, str, str]:
    """The report's scorecard, flagged-answer and rejected-row table bodies."""
    card_rows = "".join(
        f"<tr><td>{_e(str(c['candidate_id']))}</td><td>{c['overall_score_100']}</td><td>{c['questions_answered']}</td>"
        f"<td>{c['pending']}</td><td>{c['red_flags']}</td><td>{c['review_count']}</td><td>{_e(c['recommendation'])}</td></tr>"
        for c in cards
    )
    flag_rows = "".join(
        f"<tr><td>{_e(str(r.candidate_id))}</td><td>{_e(r.question_id)}</td><td>{v.score_100}</td>"
        f"<td>{_e('; '.join(f.code + ': ' + f.reason for f in v.review_flags))}</td>"
        f"<td>{_e(r.answer[:300])}</td></tr>"
        for r in recs
        if (v := r.verdict) is not None and v.review_flags
    )
    rej_rows = "".join(
        f"<tr><td>{x.line}</td><td>{_e(x.candidate_id)}</td><td>{_e(x.question_id)}</td><td>{_e(x.reason)}</td></tr>"
        for x in rejected
    )
    return card_rows, flag_rows, rej_rows


def report_html(recs: list[Record], les: LoadedEvalSet, cards: list[dict], rejected: list[Rejected]) -> str:
    scored = [r for r in recs if _scored(r)]
    unscored = sum(r.verdict is not None and r.verdict.status != "scored" for r in recs)
    flagged = sum(_flagged(r) for r in recs)
    pending = sum(r.status == "pending" for r in recs)
    card_rows, flag_rows, rej_rows = _table_rows(recs, cards, rejected)
    pending_note = (
        f'<p class="pending"><b>Incomplete:</b> {pending} answers are not graded yet (the run was stopped or the '
        "judge was unavailable); candidates with pending answers get no recommendation. Run the same grade command "
        "again to finish.</p>"
        if pending
        else ""
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Grading report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}table{{border-collapse:collapse;
margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top;font-size:14px}}svg{{margin:1em 1em 0 0;vertical-align:top}}
</style></head><body>
<h1>Grading report: {_e(les.eval_set.id)} v{_e(les.eval_set.version)}</h1>
<p>{len(recs)} answers: <b>{len(scored)}</b> scored, <b>{unscored}</b> unscored, <b>{pending}</b> pending,
<b>{len(rejected)}</b> rejected, <b>{flagged}</b> flagged for review.</p>{pending_note}
<div class="charts">{"".join(_charts(scored))}</div>
<h2>Scorecards</h2><table><tr><th>candidate</th><th>overall /100</th><th>answers</th><th>pending</th><th>red flags</th>
<th>review</th><th>recommendation</th></tr>{card_rows}</table>
<h2>Flagged for review</h2><table><tr><th>candidate</th><th>question</th><th>score /100</th><th>reasons</th>
<th>answer (start)</th></tr>{flag_rows}</table>
<h2>Rejected rows</h2><table><tr><th>line</th><th>candidate</th><th>question</th><th>reason</th></tr>{rej_rows}</table>
</body></html>"""
