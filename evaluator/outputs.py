"""Outputs regenerated from the results store: results.csv, verdicts.jsonl, scorecards.csv, report.html."""

from __future__ import annotations

import html
import json
from pathlib import Path
from statistics import mean

from . import svg_charts
from .csvio import atomic_open, write_csv
from .human_grades import final_grade, latest_grades
from .resources import LoadedEvalSet, Resources


def _records(store) -> list[dict]:
    human = latest_grades(store.path)  # reviewers' grades (evaluator review) live beside the verdicts
    out = []
    for r in store.all():
        v = json.loads(r["verdict"]) if r["verdict"] else None
        out.append({**r, "v": v, "extra": json.loads(r["extra"] or "{}"), "human": human.get(r["key"])})
    return out


def write_outputs(
    store, les: LoadedEvalSet, resources: Resources, out: Path, advance_at: float, reject_below: float, rejected=None
) -> list[Path]:
    recs = _records(store)
    crit_ids: list[str] = []
    for q in les.eval_set.questions:
        for c in resources.rubric(les.rubric_id_for(q)).rubric.criteria:
            if c.id not in crit_ids:
                crit_ids.append(c.id)
    extra_cols = sorted({k for r in recs for k in r["extra"]})

    header = [
        "line",
        "answer_id",
        "candidate_id",
        "question_id",
        "status",
        "score",
        "scale_max",
        "score_100",
        "holistic_level",
        *[f"level_{c}" for c in crit_ids],
        "red_flags",
        "review_flags",
        "similarity",
        "key_point_coverage",
        "reason",
        "human_score",
        "human_reviewer",
        "human_note",
        "final_score",
        "final_score_100",
        "final_source",
        *extra_cols,
    ]
    rows = []
    for r in recs:
        v = r["v"] or {}
        levels = {c["id"]: c["level"] for c in v.get("criteria", [])}
        sim = v.get("similarity") or {}
        h = r.get("human")
        final, final_100, source = final_grade(r["v"], h)
        rows.append(
            [
                r["line"],
                r["answer_id"],
                r["candidate_id"],
                r["question_id"],
                r["status"],
                v.get("score"),
                v.get("scale_max"),
                v.get("score_100"),
                v.get("holistic_level"),
                *[levels.get(c) for c in crit_ids],
                ";".join(f["id"] for f in v.get("red_flags", []) if f.get("hit", True)),
                ";".join(f["code"] for f in v.get("review_flags", [])),
                sim.get("best_reference"),
                sim.get("key_point_coverage"),
                v.get("reason", ""),
                h.grade if h else None,
                h.reviewer if h else "",
                h.note if h else "",
                final,
                final_100,
                source,
                *[r["extra"].get(k, "") for k in extra_cols],
            ]
        )
    paths = []
    p = out / "results.csv"
    write_csv(p, header, rows)
    paths.append(p)

    p = out / "verdicts.jsonl"
    with atomic_open(p) as f:
        for r in recs:
            if r["v"]:
                f.write(
                    json.dumps(
                        {"answer_id": r["answer_id"], "candidate_id": r["candidate_id"], "line": r["line"], **r["v"]},
                        ensure_ascii=False,
                    )
                    + "\n"
                )
    paths.append(p)

    cards = scorecards(recs, les, advance_at, reject_below)
    p = out / "scorecards.csv"
    write_csv(p, list(cards[0].keys()) if cards else ["candidate_id"], [list(c.values()) for c in cards])
    paths.append(p)

    p = out / "report.html"
    with atomic_open(p) as f:
        f.write(report_html(recs, les, cards, rejected or []))
    paths.append(p)
    return paths


def scorecards(recs: list[dict], les: LoadedEvalSet, advance_at: float, reject_below: float) -> list[dict]:
    by_cand: dict[str, list[dict]] = {}
    for r in recs:
        by_cand.setdefault(r["candidate_id"], []).append(r)
    cards = []
    for cand, rs in sorted(by_cand.items()):
        scored = [r for r in rs if r["v"] and r["v"]["status"] == "scored"]
        overall = round(mean(r["v"]["score_100"] for r in scored), 1) if scored else None
        per_level = {}
        for lvl in ("junior", "mid", "senior"):
            xs = [r["v"]["score_100"] for r in scored if les.by_id[r["question_id"]].level.value == lvl]
            per_level[f"{lvl}_score_100"] = round(mean(xs), 1) if xs else None
        reviews = sum(bool(r["v"] and r["v"]["review_flags"]) for r in rs)
        # The final grade: a reviewer's where there is one, else the model's. The recommendation follows it.
        finals = [f for f in (final_grade(r["v"], r.get("human"))[1] for r in rs) if f is not None]
        final_overall = round(mean(finals), 1) if finals else None
        human_graded = sum(r.get("human") is not None for r in rs)
        unreviewed = sum(bool(r["v"] and r["v"]["review_flags"]) and r.get("human") is None for r in rs)
        pending = sum(r["status"] == "pending" for r in rs)
        if pending:
            rec = "pending"  # no recommendation from part of the answers
        elif final_overall is None:
            rec = "review"
        elif final_overall >= advance_at:
            rec = "advance"
        elif final_overall < reject_below:
            rec = "reject"
        else:
            rec = "hold"
        if rec not in ("review", "pending") and unreviewed:
            rec += " (check flagged answers)"
        cards.append(
            {
                "candidate_id": cand,
                "overall_score_100": overall,
                **per_level,
                "questions_answered": len(rs),
                "scored": len(scored),
                "unscored": sum(bool(r["v"]) and r["v"]["status"] != "scored" for r in rs),
                "pending": pending,
                "red_flags": sum(sum(f.get("hit", True) for f in r["v"]["red_flags"]) for r in scored),
                "review_count": reviews,
                "human_graded": human_graded,
                "final_overall_score_100": final_overall,
                "recommendation": rec,
            }
        )
    return cards


def report_html(recs: list[dict], les: LoadedEvalSet, cards: list[dict], rejected: list) -> str:
    scored = [r for r in recs if r["v"] and r["v"]["status"] == "scored"]
    unscored = [r for r in recs if r["v"] and r["v"]["status"] != "scored"]
    flagged = [r for r in recs if r["v"] and r["v"]["review_flags"]]
    pending = sum(r["status"] == "pending" for r in recs)

    def e(value) -> str:
        return html.escape(str(value).replace("\x00", ""))

    charts = []
    if scored:
        charts.append(
            svg_charts.histogram([r["v"]["score_100"] for r in scored], 0, 100, 20, "Score distribution", "score /100")
        )
        per_q: dict[str, list[float]] = {}
        for r in scored:
            per_q.setdefault(r["question_id"], []).append(r["v"]["score_100"])
        qs = sorted(per_q, key=lambda k: mean(per_q[k]))
        charts.append(
            svg_charts.hbars(
                qs, [mean(per_q[q]) for q in qs], 0, 100, "Per-question difficulty", "mean score /100 (lower = harder)"
            )
        )
    card_rows = "".join(
        f"<tr><td>{e(str(c['candidate_id']))}</td><td>{c['overall_score_100']}</td><td>{c['questions_answered']}</td>"
        f"<td>{c['pending']}</td><td>{c['red_flags']}</td><td>{c['review_count']}</td><td>{e(c['recommendation'])}</td></tr>"
        for c in cards
    )
    flag_rows = "".join(
        f"<tr><td>{e(str(r['candidate_id']))}</td><td>{e(r['question_id'])}</td><td>{r['v'].get('score_100')}</td>"
        f"<td>{e('; '.join(f['code'] + ': ' + f['reason'] for f in r['v']['review_flags']))}</td>"
        f"<td>{e(r['answer'][:300])}</td></tr>"
        for r in flagged
    )
    rej_rows = "".join(
        f"<tr><td>{x.line}</td><td>{e(x.candidate_id)}</td><td>{e(x.question_id)}</td><td>{e(x.reason)}</td></tr>"
        for x in rejected
    )
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
<h1>Grading report: {e(les.eval_set.id)} v{e(les.eval_set.version)}</h1>
<p>{len(recs)} answers: <b>{len(scored)}</b> scored, <b>{len(unscored)}</b> unscored, <b>{pending}</b> pending,
<b>{len(rejected)}</b> rejected, <b>{len(flagged)}</b> flagged for review.</p>{pending_note}
<div class="charts">{"".join(charts)}</div>
<h2>Scorecards</h2><table><tr><th>candidate</th><th>overall /100</th><th>answers</th><th>pending</th><th>red flags</th>
<th>review</th><th>recommendation</th></tr>{card_rows}</table>
<h2>Flagged for review</h2><table><tr><th>candidate</th><th>question</th><th>score /100</th><th>reasons</th>
<th>answer (start)</th></tr>{flag_rows}</table>
<h2>Rejected rows</h2><table><tr><th>line</th><th>candidate</th><th>question</th><th>reason</th></tr>{rej_rows}</table>
</body></html>"""
