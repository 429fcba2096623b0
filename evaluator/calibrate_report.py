"""Agreement with human grades: join, metrics with question-resampled intervals, the human ceiling,
breakdowns, bias checks, a fitted mapping, metrics.json and a self-contained report.html."""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import sqlite3
from pathlib import Path

import numpy as np
from scipy import stats

from . import agreement, report_plots
from .calibration import cross_val_predict_grouped, fit_mapping
from .csvio import read_csv
from .errors import CalibrationError, ValidationError
from .mapping import mapping_features, reading_of

METRIC_ORDER = list(agreement.METRICS)


# ---------------------------------------------------------------- inputs


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
    t = read_csv(path)
    lower = {h.lower(): i for i, h in enumerate(t.header)}
    need = list(columns) + ([official] if official else []) + ([group_column] if group_column else [])
    missing = [c for c in need if c.lower() not in lower]
    has_id = id_column.lower() in lower
    if not has_id and not {"candidate_id", "question_id"} <= set(lower):
        missing.append(f"{id_column} (or candidate_id and question_id)")
    if missing:
        raise ValidationError(f"{path}: missing column(s) {', '.join(missing)}; columns found: {', '.join(t.header)}")
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
    problems: list[str] = []
    rows: dict[str, dict] = {}
    first_line: dict[str, int] = {}
    for line, cells in t.rows:
        if len(cells) != len(t.header):
            problems.append(f"{path}:{line}: {len(cells)} cells but the header has {len(t.header)}")
            continue

        def cell(name: str, cells=cells) -> str:
            return cells[lower[name.lower()]].strip()

        key = cell(id_column) if has_id else f"{cell('candidate_id')}|{cell('question_id')}"
        if key in first_line:
            problems.append(f"{path}:{line}: duplicate id {key!r} (first at line {first_line[key]})")
            continue
        first_line[key] = line
        grades = []
        for c in columns + ([official] if official else []):
            raw = cell(c)
            try:
                x = float(raw)
            except ValueError:
                problems.append(f"{path}:{line}: column {c}: {raw!r} is not a number")
                break
            if not (scale_min <= x <= scale_max) or math.isnan(x):
                problems.append(f"{path}:{line}: column {c}: {x:g} is outside the scale {scale_min:g}-{scale_max:g}")
                break
            grades.append(x)
        else:
            off = grades[-1] if official else float(np.mean(grades))
            rows[key] = {
                "grades": grades[: len(columns)],
                "official": off,
                "line": line,
                "question_id": cell("question_id") if "question_id" in lower else "",
                "answer": cell("answer") if "answer" in lower else "",
                "group": cell(group_column) if group_column else None,
                "level": cell("level") if "level" in lower else None,
                "topic": cell("topic") if "topic" in lower else None,
            }
    if problems:
        raise ValidationError(f"{path}: {len(problems)} problem(s) in the human grades", problems[:30])
    return {"rows": rows, "scale_min": float(scale_min), "scale_max": float(scale_max)}


def verdict_row(v: dict) -> dict:
    """A stored verdict's mapping feature row, built by mapping_features as while scoring, keyed by its answer id."""
    return {
        "answer_id": v.get("answer_id") or f"{v.get('candidate_id')}|{v['question_id']}",
        **mapping_features(
            v["question_id"],
            v.get("raw_score", v.get("score")),
            v.get("holistic_level"),
            {c["id"]: c["level"] for c in v.get("criteria", []) if c.get("level") is not None},
            v.get("similarity"),
            v.get("answer_chars", 0),
        ),
    }


# ---------------------------------------------------------------- analysis


def _with_ci(pred, human, groups, lo, hi, n_boot) -> dict:
    point = agreement.metrics(pred, human, lo, hi)
    ci = agreement.bootstrap_ci(pred, human, groups, lo, hi, n_boot=n_boot)
    return {m: {"value": _f(point[m]), "ci95": [_f(ci[m][0]), _f(ci[m][1])] if m in ci else None} for m in METRIC_ORDER}


def _f(x):
    x = float(x)
    return None if math.isnan(x) else round(x, 6)


def _corr(x, y) -> dict:
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return {"spearman": None, "p": None}
    r = stats.spearmanr(x, y)
    return {"spearman": _f(r.statistic), "p": _f(r.pvalue)}


def group_checks(pred, human, groups_q, labels, pass_at, n_boot: int, seed: int = 0) -> dict:
    out: dict = {"pass_at": pass_at, "groups": {}}
    names = sorted({g for g in labels if g not in (None, "")})
    rng = np.random.default_rng(seed)
    q_codes = {q: i for i, q in enumerate(sorted(set(groups_q)))}
    qi = np.array([q_codes[q] for q in groups_q])
    lab = np.array(labels, dtype=object)

    def rates(idx):
        r = {}
        for g in names:
            m = lab[idx] == g
            r[g] = float(np.mean(pred[idx][m] >= pass_at)) if m.any() else float("nan")
        return r

    base = rates(np.arange(len(pred)))
    boot_ratio = []
    by_q = [np.where(qi == k)[0] for k in range(len(q_codes))]
    for _ in range(n_boot):
        idx = np.concatenate([by_q[k] for k in rng.integers(0, len(by_q), len(by_q))])
        r = [v for v in rates(idx).values() if not math.isnan(v)]
        if len(r) >= 2 and max(r) > 0:
            boot_ratio.append(min(r) / max(r))
    for g in names:
        m = lab == g
        out["groups"][g] = {
            "n": int(m.sum()),
            "mean_evaluator": _f(pred[m].mean()),
            "mean_human": _f(human[m].mean()),
            "gap_vs_human": _f((pred[m] - human[m]).mean()),
            "selection_rate": _f(base[g]),
            "human_selection_rate": _f(np.mean(human[m] >= pass_at)),
        }
    vals = [v for v in base.values() if not math.isnan(v)]
    ratio = min(vals) / max(vals) if len(vals) >= 2 and max(vals) > 0 else float("nan")
    out["selection_rate_ratio"] = {
        "value": _f(ratio),
        "ci95": [_f(np.percentile(boot_ratio, 2.5)), _f(np.percentile(boot_ratio, 97.5))] if boot_ratio else None,
        "four_fifths_rule_met": None if math.isnan(ratio) else bool(ratio >= 0.8),
    }
    return out


def run(a: argparse.Namespace) -> int:
    if a.human:
        columns = [c.strip() for c in (a.human_columns or "grade").split(",") if c.strip()]
        human = load_human(Path(a.human), columns, a.official, a.id_column, a.scale_min, a.scale_max, a.group_column)
        official = a.official or f"mean({', '.join(columns)})"
    else:
        given = [f for f, v in (("--human-columns", a.human_columns), ("--official", a.official)) if v]
        given += ["--group-column"] if a.group_column else []
        if given:
            raise ValidationError(f"{', '.join(given)} describe a --human file; pass one, or drop them")
        human = stored_human(Path(a.verdicts))
        columns, official = ["grade"], "latest human grade (evaluator review)"
    verdicts = load_verdicts(Path(a.verdicts))
    report, plots = analyse(
        verdicts, human, columns, official, Path(a.out), a.bootstrap, bool(a.group_column), a.pass_at
    )
    _print_summary(report)
    return 0


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


def analyse(
    verdicts: list[dict],
    human: dict,
    columns: list[str],
    official_label: str,
    out: Path,
    n_boot: int = 1000,
    by_group: bool = False,
    pass_at: float | None = None,
) -> tuple[dict, dict[str, Path]]:
    """Joins verdicts to human grades, measures agreement, fits a mapping; writes metrics.json, mapping.json, the
    plots and report.html into `out`. Returns the report and the plots' paths."""
    lo, hi = human["scale_min"], human["scale_max"]
    hrows = human["rows"]
    joined, unscored, unmatched_v = [], 0, []
    for v in verdicts:
        key = v.get("answer_id") or f"{v.get('candidate_id')}|{v['question_id']}"
        if key not in hrows:
            unmatched_v.append(key)
            continue
        if v["status"] != "scored":
            unscored += 1
            continue
        joined.append((verdict_row(v), hrows[key], v))
    vkeys = {v.get("answer_id") or f"{v.get('candidate_id')}|{v['question_id']}" for v in verdicts}
    unmatched_h = [k for k in hrows if k not in vkeys]
    if len(joined) < 10:
        raise CalibrationError(
            f"only {len(joined)} scored verdicts joined the human grades (need 10+); {len(unmatched_v)} verdicts "
            f"had no grade (e.g. {unmatched_v[:3]}), {len(unmatched_h)} grades had no verdict. Check --id-column, or grade more answers in `evaluator review`."
        )
    rows = [j[0] for j in joined]
    official = np.array([j[1]["official"] for j in joined])
    groups = np.array([j[0]["question_id"] for j in joined])
    # The raw evaluator score on the human scale: a linear change of scale, nothing fitted.
    raw = np.array([lo + (j[2]["score_100"] / 100.0) * (hi - lo) for j in joined])

    report: dict = {
        "n_joined": len(joined),
        "unscored_excluded": unscored,
        "verdicts_without_grade": len(unmatched_v),
        "grades_without_verdict": len(unmatched_h),
        "scale": [lo, hi],
        "human_columns": columns,
        "official": official_label,
    }
    report["uncalibrated"] = _with_ci(raw, official, groups, lo, hi, n_boot)
    if len(columns) >= 2:
        g1 = np.array([j[1]["grades"][0] for j in joined])
        g2 = np.array([j[1]["grades"][1] for j in joined])
        report["human_ceiling"] = {"between": columns[:2], **_with_ci(g1, g2, groups, lo, hi, n_boot)}
    readings = {json.dumps(reading_of(j[2].get("provenance") or {}), sort_keys=True) for j in joined}
    mapping = fit_mapping(
        rows, official, groups, lo, hi, fitted_for=json.loads(readings.pop()) if len(readings) == 1 else None
    )
    cal = cross_val_predict_grouped(rows, official, groups, mapping.kind, 5, 0, "group", lo, hi)
    within = cross_val_predict_grouped(rows, official, groups, mapping.kind, 5, 0, "within", lo, hi)
    report["calibrated_question_grouped_cv"] = {"kind": mapping.kind, **_with_ci(cal, official, groups, lo, hi, n_boot)}
    report["calibrated_seen_questions_cv"] = {
        "kind": mapping.kind,
        **_with_ci(within, official, groups, lo, hi, n_boot),
    }
    report["mapping_candidates_cv"] = mapping.cv_metrics

    # Breakdowns
    per_q = {}
    for q in sorted(set(groups)):
        m = groups == q
        res = cal[m] - official[m]
        per_q[q] = {
            "n": int(m.sum()),
            "pearson": _f(stats.pearsonr(cal[m], official[m]).statistic)
            if m.sum() > 2 and np.std(cal[m]) > 0 and np.std(official[m]) > 0
            else None,
            "mae": _f(np.abs(res).mean()),
            "bias": _f(res.mean()),
            "mae_uncalibrated": _f(np.abs(raw[m] - official[m]).mean()),
        }
    report["per_question"] = per_q
    for field in ("level", "topic"):
        vals = [j[1][field] for j in joined]
        if any(vals):
            report[f"per_{field}"] = {
                str(k): {
                    "n": int(sum(1 for x in vals if x == k)),
                    "mae": _f(np.mean([abs(cal[i] - official[i]) for i, x in enumerate(vals) if x == k])),
                }
                for k in sorted(set(vals), key=str)
            }
    worst = sorted(per_q, key=lambda q: -(per_q[q]["mae"] or 0))[:5]
    examples = {}
    for q in worst:
        idx = [i for i in range(len(joined)) if groups[i] == q]
        idx.sort(key=lambda i: -abs(cal[i] - official[i]))
        examples[q] = [
            {
                "answer_id": rows[i]["answer_id"],
                "human": _f(official[i]),
                "evaluator": _f(cal[i]),
                "answer": joined[i][1]["answer"][:300],
            }
            for i in idx[:2]
        ]
    report["most_disagreement"] = examples

    # Bias checks
    lengths = np.array([r["answer_chars"] for r in rows], dtype=float)
    positions = np.array([j[1]["line"] for j in joined], dtype=float)
    report["bias"] = {
        "residual_vs_length_uncalibrated": _corr(lengths, raw - official),
        "residual_vs_length_calibrated": _corr(lengths, cal - official),
        "residual_vs_position": _corr(positions, cal - official),
    }
    if by_group:
        pass_at = pass_at if pass_at is not None else (lo + hi) / 2
        report["bias"]["groups"] = group_checks(
            cal, official, groups, [j[1]["group"] for j in joined], pass_at, min(n_boot, 500)
        )

    out.mkdir(parents=True, exist_ok=True)
    mapping_path = mapping.save(out / "mapping.json")
    report["mapping"] = {
        "path": str(mapping_path),
        "id": mapping.id,
        "kind": mapping.kind,
        "training_hash": mapping.training_hash,
    }
    (out / "metrics.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    plots = {
        "scatter_uncalibrated": report_plots.scatter(raw, official, out / "scatter_uncalibrated.png"),
        "scatter_calibrated": report_plots.scatter(cal, official, out / "scatter_calibrated.png"),
        "confusion": report_plots.confusion_heatmap(cal, official, lo, hi, out / "confusion.png"),
        "residuals_vs_length": report_plots.residuals_vs_length(cal, official, lengths, out / "residuals_length.png"),
        "per_question": report_plots.per_question_bars(
            {q: per_q[q]["mae"] or 0 for q in per_q}, out / "per_question.png", label="MAE (calibrated)"
        ),
        "calibration_curve": report_plots.calibration_curve(raw, cal, official, out / "calibration_curve.png"),
    }
    (out / "report.html").write_text(_html(report, plots), encoding="utf-8")
    return report, plots


def _print_summary(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(
        "metric",
        "evaluator (raw)",
        f"calibrated ({report['mapping']['kind']}, question-grouped CV)",
        *(["human vs human"] if "human_ceiling" in report else []),
        title=f"Agreement with the official grade on {report['n_joined']} answers (95% CI resampled by question)",
    )
    for m in METRIC_ORDER[:-1]:
        cells = [_fmt(report["uncalibrated"][m]), _fmt(report["calibrated_question_grouped_cv"][m])]
        if "human_ceiling" in report:
            cells.append(_fmt(report["human_ceiling"][m]))
        t.add_row(m, *cells)
    console.print(t)
    nv, nh, nu = report["verdicts_without_grade"], report["grades_without_verdict"], report["unscored_excluded"]
    if nv or nh or nu:
        console.print(
            f"not joined: {nv} verdicts without a grade, {nh} grades without a verdict; {nu} unscored verdicts excluded"
        )
    out = Path(report["mapping"]["path"]).parent
    console.print(
        f"wrote {out / 'metrics.json'}, {report['mapping']['path']} (id {report['mapping']['id']}), "
        f"{out / 'report.html'}"
    )


def _fmt(cell: dict) -> str:
    v, ci = cell["value"], cell["ci95"]
    if v is None:
        return "-"
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and None not in ci else f"{v:.3f}"


def _img(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def _html(r: dict, plots: dict) -> str:
    e = html.escape
    heads = ["evaluator (raw)", "calibrated, question-grouped CV", "calibrated, seen questions"]
    keys = ["uncalibrated", "calibrated_question_grouped_cv", "calibrated_seen_questions_cv"]
    if "human_ceiling" in r:
        heads.append("human vs human (ceiling)")
        keys.append("human_ceiling")
    rows = "".join(
        f"<tr><td>{m}</td>" + "".join(f"<td>{e(_fmt(r[k][m]))}</td>" for k in keys) + "</tr>" for m in METRIC_ORDER
    )
    perq = "".join(
        f"<tr><td>{e(q)}</td><td>{d['n']}</td><td>{d['pearson']}</td><td>{d['mae']}</td><td>{d['bias']}</td></tr>"
        for q, d in r["per_question"].items()
    )
    worst = "".join(
        f"<tr><td>{e(q)}</td><td>{x['human']}</td><td>{x['evaluator']}</td><td>{e(x['answer'])}</td></tr>"
        for q, xs in r["most_disagreement"].items()
        for x in xs
    )
    imgs = "".join(
        f'<figure><img src="{_img(p)}" alt="{k}"><figcaption>{k}</figcaption></figure>' for k, p in plots.items()
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Agreement with human grades</title>
<style>body{{font-family:sans-serif;max-width:1150px;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px;vertical-align:top}}figure{{display:inline-block;margin:.5em}}
img{{max-width:520px}}</style></head><body>
<h1>Agreement with human grades</h1>
<p>{r["n_joined"]} answers joined; scale {r["scale"][0]:g}-{r["scale"][1]:g}; official grade: {e(r["official"])};
{r["unscored_excluded"]} unscored excluded; {r["verdicts_without_grade"]} verdicts without a grade,
{r["grades_without_verdict"]} grades without a verdict. Intervals: 95% bootstrap, resampling questions.
Calibrated figures are out of sample (the mapping never saw the question it scores).</p>
<table><tr><th>metric</th>{"".join(f"<th>{h}</th>" for h in heads)}</tr>{rows}</table>
<p>Mapping: {e(r["mapping"]["kind"])}, id {e(r["mapping"]["id"])}, saved to {e(r["mapping"]["path"])}.</p>
<h2>Plots</h2>{imgs}
<h2>Bias checks</h2><pre>{e(json.dumps(r["bias"], indent=2))}</pre>
<h2>Questions with the most disagreement</h2><table><tr><th>question</th><th>human</th><th>evaluator</th>
<th>answer</th></tr>{worst}</table>
<h2>Per question</h2><table><tr><th>question</th><th>n</th><th>pearson</th><th>MAE</th><th>bias</th></tr>{perq}</table>
</body></html>"""
