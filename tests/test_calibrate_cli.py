"""`evaluator calibrate` end to end on synthetic verdicts, and located errors for malformed grade files."""

import json

import numpy as np
import pytest

from evaluator import calibrate
from evaluator.calibrate_report import summary_lines, summary_table
from evaluator.cli import main
from evaluator.errors import DataValidationError
from evaluator.mapping import load_mapping


def _write(tmp_path, n_q=8, per_q=12, seed=0):
    rng = np.random.default_rng(seed)
    verdicts, grades = [], ["answer_id,question_id,answer,grade_1,grade_2,max_grade,group"]
    for qi in range(n_q):
        for k in range(per_q):
            true = rng.uniform(0, 5)
            aid = f"{qi}.{k}"
            g1 = int(np.clip(round(true + rng.normal(0, 0.6)), 0, 5))
            g2 = int(np.clip(round(true + rng.normal(0, 0.6)), 0, 5))
            s100 = float(np.clip(20 + 12 * true + rng.normal(0, 8), 0, 100))
            verdicts.append(
                {
                    "answer_id": aid,
                    "candidate_id": aid,
                    "question_id": f"q{qi}",
                    "status": "scored",
                    "score": s100 / 20,
                    "raw_score": s100 / 20,
                    "score_100": s100,
                    "holistic_level": s100 / 25,
                    "criteria": [],
                    "similarity": {"best_reference": true / 6},
                    "answer_chars": int(50 + 30 * true),
                    "review_flags": [],
                }
            )
            grades.append(f"{aid},q{qi},answer {aid},{g1},{g2},5,{'a' if k % 2 else 'b'}")
    v = tmp_path / "verdicts.jsonl"
    v.write_text("\n".join(json.dumps(x) for x in verdicts) + "\n")
    h = tmp_path / "grades.csv"
    h.write_text("\n".join(grades) + "\n")
    return v, h


def test_calibrate_writes_metrics_mapping_and_report(tmp_path, capsys):
    v, h = _write(tmp_path)
    out = tmp_path / "calib"
    rc = main(
        [
            "calibrate",
            "--verdicts",
            str(v),
            "--human",
            str(h),
            "--human-columns",
            "grade_1,grade_2",
            "--group-column",
            "group",
            "--out",
            str(out),
            "--bootstrap",
            "200",
        ]
    )
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    for block in ("uncalibrated", "calibrated_question_grouped_cv", "human_ceiling"):
        for metric in (
            "pearson",
            "spearman",
            "kendall",
            "qwk",
            "mae",
            "rmse",
            "exact",
            "within_one",
            "alpha_interval",
            "alpha_ordinal",
            "bias",
        ):
            cell = m[block][metric]
            assert cell["value"] is not None and cell["ci95"][0] <= cell["value"] <= cell["ci95"][1], (block, metric)
    assert m["n_joined"] == 96 and len(m["per_question"]) == 8
    assert "selection_rate_ratio" in m["bias"]["groups"]
    assert (out / "mapping.json").exists() and (out / "report.html").stat().st_size > 10000
    assert "human vs human" in capsys.readouterr().out
    # The fitted mapping is applied by `score --calibration` and named in the verdict.
    capsys.readouterr()
    rc = main(
        [
            "score",
            "-q",
            "overfitting",
            "--answer",
            "Overfitting fits noise in the training data.",
            "--json",
            "--judge",
            "fake:overlap",
            "--embedder",
            "fake:hash",
            "--calibration",
            str(out / "mapping.json"),
        ]
    )
    assert rc == 0
    verdict = json.loads(capsys.readouterr().out)
    mapping = json.loads((out / "mapping.json").read_text())
    assert verdict["provenance"]["calibration"] and verdict["scale_max"] == mapping["scale_max"] == 5
    assert verdict["raw_score"] != verdict["score"]


def test_calibrate_from_python_returns_the_figures_and_prints_nothing(tmp_path, capsys):
    v, h = _write(tmp_path)
    r = calibrate(v, tmp_path / "calib", human=h, human_columns=["grade_1", "grade_2"], bootstrap=50)
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err == ""
    assert r.n_joined == 96 and (r.unscored_excluded, r.verdicts_without_grade, r.grades_without_verdict) == (0, 0, 0)
    assert json.loads(r.metrics_path.read_text())["n_joined"] == 96 == r.report["n_joined"]
    for block in ("uncalibrated", "calibrated_question_grouped_cv", "human_ceiling"):
        assert r.report[block]["pearson"]["value"] is not None, block
    assert load_mapping(r.mapping_path).id == r.mapping_id == r.report["mapping"]["id"]
    assert len(r.plots) == 6 and all(p.is_file() for p in r.files) and r.html_path in r.files
    assert "96 answers" in str(summary_table(r).title) and summary_lines(r) == [
        f"wrote {r.metrics_path}, {r.mapping_path} (id {r.mapping_id}), {r.html_path}"
    ]
    # Options that describe a grades file, without one, are refused rather than ignored.
    with pytest.raises(DataValidationError, match="--official describe a --human file"):
        calibrate(v, tmp_path / "o", official="grade_2")


def calibrate_default(verdicts, grades, out) -> int:
    return main(["calibrate", "--verdicts", str(verdicts), "--human", str(grades),
                 "--human-columns", "grade_1,grade_2", "--out", str(out)])  # fmt: skip


@pytest.mark.parametrize(
    "edit,expect",
    [
        (lambda s: s.replace("grade_2", "second", 1), "missing column(s) grade_2; columns found"),
        (lambda s: s.replace(",3,", ",9,", 1), "is outside the scale 0-5"),
        (lambda s: s.replace(",3,", ",three,", 1), "'three' is not a number"),
        (lambda s: s.replace("1.0,q1", "0.0,q1", 1), "duplicate id '0.0'"),
    ],
)
def test_malformed_grade_files_get_located_errors(tmp_path, capsys, edit, expect):
    v, h = _write(tmp_path)
    h.write_text(edit(h.read_text()))
    rc = calibrate_default(v, h, tmp_path / "o")
    err = capsys.readouterr().err
    assert rc == 3 and expect in err, err
    if "columns found" not in expect:
        assert "grades.csv:" in err


def test_unknown_scale_is_refused(tmp_path, capsys):
    v, h = _write(tmp_path)
    h.write_text(h.read_text().replace(",max_grade", ",maxg"))
    rc = calibrate_default(v, h, tmp_path / "o")
    assert rc == 8 and "scale is unknown" in capsys.readouterr().err
