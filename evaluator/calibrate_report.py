"""`calibrate`, agreement with human grades: join, metrics with question-resampled intervals, the human ceiling,
breakdowns, bias checks, a fitted mapping, metrics.json and report.html; and the console summary of the command."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats

from . import agreement, report_plots
from .calibrate_html import calibration_html, fmt_cell
from .calibrate_inputs import load_human, load_verdicts, stored_human
from .calibration import cross_val_predict_grouped, fit_mapping
from .errors import CalibrationError, DataValidationError
from .mapping import mapping_features, reading_of

if TYPE_CHECKING:
    from rich.table import Table

    from .mapping import Mapping

METRIC_ORDER = list(agreement.METRICS)


@dataclass(frozen=True)
class CalibrationResult:
    """What `calibrate` measured and wrote. `report` is the content of metrics.json; the counts are its join counts."""

    report: dict
    metrics_path: Path
    mapping_path: Path
    html_path: Path
    plots: dict[str, Path]
    mapping_id: str
    mapping_kind: str
    n_joined: int
    unscored_excluded: int
    verdicts_without_grade: int
    grades_without_verdict: int

    @property
    def files(self) -> list[Path]:
        """Every file written: metrics.json, mapping.json, report.html and the plots."""
        return [self.metrics_path, self.mapping_path, self.html_path, *self.plots.values()]


def calibrate(
    verdicts: Path,
    out: Path,
    *,
    human: Path | None = None,
    human_columns: list[str] | None = None,
    official: str | None = None,
    id_column: str = "answer_id",
    scale_min: float | None = None,
    scale_max: float | None = None,
    group_column: str | None = None,
    pass_at: float | None = None,
    bootstrap: int = 1000,
) -> CalibrationResult:
    """Join the verdicts (a grading folder or a verdicts .jsonl) to human grades, measure agreement, fit a mapping
    and write metrics.json, mapping.json, the plots and report.html into `out`. `human`: a grades CSV read with
    `human_columns` (default ["grade"]), `official`, `id_column`, the scale and `group_column`; without one, the grades
    `evaluator review` stored in the grading folder. Prints nothing; problems raise DataValidationError or
    CalibrationError."""
    verdicts, out = Path(verdicts), Path(out)
    if human is not None:
        columns = list(human_columns) if human_columns is not None else ["grade"]
        grades = load_human(Path(human), columns, official, id_column, scale_min, scale_max, group_column)
        official_label = official or f"mean({', '.join(columns)})"
    else:
        given = [f for f, v in (("--human-columns", human_columns is not None), ("--official", official)) if v]
        given += ["--group-column"] if group_column else []
        if given:
            raise DataValidationError(f"{', '.join(given)} describe a --human file; pass one, or drop them")
        grades = stored_human(verdicts)
        columns, official_label = ["grade"], "latest human grade (evaluator review)"
    report, plots = analyse(
        load_verdicts(verdicts), grades, columns, official_label, out, bootstrap, bool(group_column), pass_at
    )
    return CalibrationResult(
        report=report,
        metrics_path=out / "metrics.json",
        mapping_path=Path(report["mapping"]["path"]),
        html_path=out / "report.html",
        plots=plots,
        mapping_id=report["mapping"]["id"],
        mapping_kind=report["mapping"]["kind"],
        n_joined=report["n_joined"],
        unscored_excluded=report["unscored_excluded"],
        verdicts_without_grade=report["verdicts_without_grade"],
        grades_without_verdict=report["grades_without_verdict"],
    )


def summary_table(result: CalibrationResult) -> Table:
    """The agreement table `evaluator calibrate` prints: raw, calibrated and (with two graders) human vs human."""
    from rich.table import Table

    report = result.report
    t = Table(
        "metric",
        "evaluator (raw)",
        f"calibrated ({result.mapping_kind}, question-grouped CV)",
        *(["human vs human"] if "human_ceiling" in report else []),
        title=f"Agreement with the official grade on {result.n_joined} answers (95% CI resampled by question)",
    )
    for m in METRIC_ORDER[:-1]:
        cells = [fmt_cell(report["uncalibrated"][m]), fmt_cell(report["calibrated_question_grouped_cv"][m])]
        if "human_ceiling" in report:
            cells.append(fmt_cell(report["human_ceiling"][m]))
        t.add_row(m, *cells)
    return t


def summary_lines(result: CalibrationResult) -> list[str]:
    """The lines printed under the table: what did not join (when anything did not), and the files written."""
    nv, nh, nu = result.verdicts_without_grade, result.grades_without_verdict, result.unscored_excluded
    lines = []
    if nv or nh or nu:
        lines.append(
            f"not joined: {nv} verdicts without a grade, {nh} grades without a verdict; {nu} unscored verdicts excluded"
        )
    lines.append(f"wrote {result.metrics_path}, {result.mapping_path} (id {result.mapping_id}), {result.html_path}")
    return lines


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


@dataclass
class _Joined:
    """The scored verdicts that have a human grade, in verdict order, and what did not join."""

    rows: list[dict]  # verdict_row of each
    grades: list[dict]  # its human row
    verdicts: list[dict]
    unscored: int
    without_grade: list[str]
    without_verdict: list[str]
    official: np.ndarray
    groups: np.ndarray  # question ids
    lengths: np.ndarray  # answer characters


def _answer_key(v: dict) -> str:
    return v.get("answer_id") or f"{v.get('candidate_id')}|{v['question_id']}"


def _join(verdicts: list[dict], hrows: dict[str, dict]) -> _Joined:
    joined, unscored, unmatched_v = [], 0, []
    for v in verdicts:
        key = _answer_key(v)
        if key not in hrows:
            unmatched_v.append(key)
            continue
        if v["status"] != "scored":
            unscored += 1
            continue
        joined.append((verdict_row(v), hrows[key], v))
    vkeys = {_answer_key(v) for v in verdicts}
    unmatched_h = [k for k in hrows if k not in vkeys]
    if len(joined) < 10:
        raise CalibrationError(
            f"only {len(joined)} scored verdicts joined the human grades (need 10+); {len(unmatched_v)} verdicts "
            f"had no grade (e.g. {unmatched_v[:3]}), {len(unmatched_h)} grades had no verdict. Check --id-column, or grade more answers in `evaluator review`."
        )
    rows = [j[0] for j in joined]
    return _Joined(
        rows=rows,
        grades=[j[1] for j in joined],
        verdicts=[j[2] for j in joined],
        unscored=unscored,
        without_grade=unmatched_v,
        without_verdict=unmatched_h,
        official=np.array([j[1]["official"] for j in joined]),
        groups=np.array([r["question_id"] for r in rows]),
        lengths=np.array([r["answer_chars"] for r in rows], dtype=float),
    )


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
    j = _join(verdicts, human["rows"])
    # The raw evaluator score on the human scale: a linear change of scale, nothing fitted.
    raw = np.array([lo + (v["score_100"] / 100.0) * (hi - lo) for v in j.verdicts])
    report: dict = {
        "n_joined": len(j.rows),
        "unscored_excluded": j.unscored,
        "verdicts_without_grade": len(j.without_grade),
        "grades_without_verdict": len(j.without_verdict),
        "scale": [lo, hi],
        "human_columns": columns,
        "official": official_label,
    }
    mapping, cal = _agreement(report, j, raw, columns, lo, hi, n_boot)
    report["per_question"] = _per_question(j, raw, cal)
    for field in ("level", "topic"):
        vals = [g[field] for g in j.grades]
        if any(vals):
            report[f"per_{field}"] = _per_value(vals, cal, j.official)
    report["most_disagreement"] = _most_disagreement(report["per_question"], j, cal)
    report["bias"] = {
        "residual_vs_length_uncalibrated": _corr(j.lengths, raw - j.official),
        "residual_vs_length_calibrated": _corr(j.lengths, cal - j.official),
        "residual_vs_position": _corr(np.array([g["line"] for g in j.grades], dtype=float), cal - j.official),
    }
    if by_group:
        pass_at = pass_at if pass_at is not None else (lo + hi) / 2
        report["bias"]["groups"] = group_checks(
            cal, j.official, j.groups, [g["group"] for g in j.grades], pass_at, min(n_boot, 500)
        )
    plots = _write(report, mapping, out, j, raw, cal)
    return report, plots


def _agreement(
    report: dict, j: _Joined, raw: np.ndarray, columns: list[str], lo: float, hi: float, n_boot: int
) -> tuple[Mapping, np.ndarray]:
    """Adds the raw, human-ceiling and calibrated figures to `report`; returns the mapping fitted on every answer and
    the question-grouped out-of-fold predictions."""
    official, groups = j.official, j.groups
    report["uncalibrated"] = _with_ci(raw, official, groups, lo, hi, n_boot)
    if len(columns) >= 2:
        g1 = np.array([g["grades"][0] for g in j.grades])
        g2 = np.array([g["grades"][1] for g in j.grades])
        report["human_ceiling"] = {"between": columns[:2], **_with_ci(g1, g2, groups, lo, hi, n_boot)}
    readings = {json.dumps(reading_of(v.get("provenance") or {}), sort_keys=True) for v in j.verdicts}
    mapping = fit_mapping(
        j.rows, official, groups, lo, hi, fitted_for=json.loads(readings.pop()) if len(readings) == 1 else None
    )
    cal = cross_val_predict_grouped(j.rows, official, groups, mapping.kind, 5, 0, "group", lo, hi)
    within = cross_val_predict_grouped(j.rows, official, groups, mapping.kind, 5, 0, "within", lo, hi)
    report["calibrated_question_grouped_cv"] = {"kind": mapping.kind, **_with_ci(cal, official, groups, lo, hi, n_boot)}
    report["calibrated_seen_questions_cv"] = {
        "kind": mapping.kind,
        **_with_ci(within, official, groups, lo, hi, n_boot),
    }
    report["mapping_candidates_cv"] = mapping.cv_metrics
    return mapping, cal


def _per_question(j: _Joined, raw: np.ndarray, cal: np.ndarray) -> dict:
    official, groups = j.official, j.groups
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
    return per_q


def _per_value(vals: list, cal: np.ndarray, official: np.ndarray) -> dict:
    """Calibrated MAE for each value of a label column (level, topic)."""
    return {
        str(k): {
            "n": int(sum(1 for x in vals if x == k)),
            "mae": _f(np.mean([abs(cal[i] - official[i]) for i, x in enumerate(vals) if x == k])),
        }
        for k in sorted(set(vals), key=str)
    }


def _most_disagreement(per_q: dict, j: _Joined, cal: np.ndarray) -> dict:
    """The two answers furthest from their human grade in each of the five questions with the highest MAE."""
    worst = sorted(per_q, key=lambda q: -(per_q[q]["mae"] or 0))[:5]
    examples = {}
    for q in worst:
        idx = [i for i in range(len(j.rows)) if j.groups[i] == q]
        idx.sort(key=lambda i: -abs(cal[i] - j.official[i]))
        examples[q] = [
            {
                "answer_id": j.rows[i]["answer_id"],
                "human": _f(j.official[i]),
                "evaluator": _f(cal[i]),
                "answer": j.grades[i]["answer"][:300],
            }
            for i in idx[:2]
        ]
    return examples


def _write(report: dict, mapping: Mapping, out: Path, j: _Joined, raw: np.ndarray, cal: np.ndarray) -> dict[str, Path]:
    """Saves mapping.json (and names it in the report), metrics.json, the plots and report.html; returns the plots."""
    official, (lo, hi), per_q = j.official, report["scale"], report["per_question"]
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
        "residuals_vs_length": report_plots.residuals_vs_length(cal, official, j.lengths, out / "residuals_length.png"),
        "per_question": report_plots.per_question_bars(
            {q: per_q[q]["mae"] or 0 for q in per_q}, out / "per_question.png", label="MAE (calibrated)"
        ),
        "calibration_curve": report_plots.calibration_curve(raw, cal, official, out / "calibration_curve.png"),
    }
    (out / "report.html").write_text(calibration_html(report, plots), encoding="utf-8")
    return plots
