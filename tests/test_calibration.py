"""Calibration mappings on synthetic data, their files, and the report figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.impute import SimpleImputer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from evaluator import agreement, calibration, report_plots
from evaluator.errors import CalibrationError
from evaluator.mapping import Mapping, feature_matrix, feature_names, load_mapping, mapping_features, training_hash

ROOT = Path(__file__).resolve().parents[1]
Data = tuple[list[dict[str, Any]], np.ndarray, np.ndarray]


def linear_data(n_groups: int = 10, per_group: int = 20, seed: int = 0) -> Data:
    """Human = latent quality + noise. The evaluator's features track the latent linearly; its final score is
    compressed and biased (0.5 * latent + 1.5), so the raw score disagrees with humans."""
    rng = np.random.default_rng(seed)
    rows, human, groups = [], [], []
    for q in range(n_groups):
        for j in range(per_group):
            latent = rng.uniform(0, 4)

            def level(noise: float, latent: float = latent) -> float:
                return float(np.clip(np.round(latent + rng.normal(0, noise)), 0, 4))

            rows.append(
                {
                    "answer_id": f"q{q}-a{j}",
                    "question_id": f"q{q}",
                    "score": float(np.clip(0.5 * latent + 1.5 + rng.normal(0, 0.6), 0, 4)),
                    "holistic": None if j % 7 == 0 else level(0.5),  # some missing: imputed by the training mean
                    "criteria": {"depth": level(0.7), "correctness": level(0.7)},
                    "similarity": float(np.clip(0.5 + 0.1 * latent + rng.normal(0, 0.1), 0, 1)),
                    "key_point_coverage": None if j % 5 == 0 else float(np.clip(latent / 4 + rng.normal(0, 0.2), 0, 1)),
                    "answer_chars": int(rng.integers(50, 3000)),
                }
            )
            human.append(float(np.clip(latent + rng.normal(0, 0.4), 0, 4)))
            groups.append(f"q{q}")
    return rows, np.array(human), np.array(groups)


def step_data(n_groups: int = 10, per_group: int = 20, seed: int = 0) -> Data:
    """Human is a steep sigmoid of the score alone (monotone, far from linear); every other feature is noise."""
    rng = np.random.default_rng(seed)
    rows, human, groups = [], [], []
    for q in range(n_groups):
        for j in range(per_group):
            score = rng.uniform(0, 10)
            rows.append(
                {
                    "answer_id": f"q{q}-a{j}",
                    "question_id": f"q{q}",
                    "score": score,
                    "holistic": int(rng.integers(0, 5)),
                    "criteria": {"depth": float(rng.integers(0, 5))},
                    "similarity": float(rng.uniform()),
                    "key_point_coverage": float(rng.uniform()),
                    "answer_chars": int(rng.integers(50, 3000)),
                }
            )
            human.append(float(np.clip(4 / (1 + np.exp(-2.5 * (score - 5))) + rng.normal(0, 0.15), 0, 4)))
            groups.append(f"q{q}")
    return rows, np.array(human), np.array(groups)


@pytest.fixture(scope="module")
def linear() -> Data:
    return linear_data()


@pytest.fixture(scope="module")
def linear_mapping(linear: Data) -> Mapping:
    rows, human, groups = linear
    return calibration.fit_mapping(rows, human, groups, 0, 4)


def test_feature_names_and_matrix(linear: Data) -> None:
    rows, _, _ = linear
    names = feature_names(rows)
    assert names == [
        "score",
        "holistic",
        "criterion:correctness",
        "criterion:depth",
        "similarity",
        "key_point_coverage",
        "lexical_overlap",
        "log1p_answer_chars",
        "log_length_ratio",
    ]
    x = feature_matrix(rows[:1], names)
    row = rows[0]
    assert np.isnan(x[0, 1])  # row 0 has no holistic level
    assert x[0, 2] == row["criteria"]["correctness"]
    assert x[0, -2] == pytest.approx(np.log1p(row["answer_chars"]))
    with_ref = {**row, "reference_chars": 99}
    ratio = feature_matrix([with_ref], names)[0, -1]
    assert ratio == pytest.approx(np.log1p(row["answer_chars"]) - np.log1p(99))


def test_feature_row_carries_every_feature() -> None:
    """Scoring and `evaluator calibrate` both build the row with mapping_features: given every input, it yields
    a value for every feature a mapping can use, so no feature is silently imputed."""
    sim = {"model": "fake:hash", "best_reference": 0.5, "key_point_coverage": 0.4, "lexical_overlap": 0.3}
    row = mapping_features("q1", 2.0, 3.0, {"depth": 1.0}, sim | {"reference_chars": 200}, 120)
    names = feature_names([row])
    assert names[:3] == ["score", "holistic", "criterion:depth"]
    assert not np.isnan(feature_matrix([row], names)).any()
    # Without similarity figures the similarity features are missing, not an error.
    assert np.isnan(feature_matrix([mapping_features("q1", 2.0, None, {}, None, 120)], ["similarity"])).all()


def test_missing_score_is_an_error() -> None:
    with pytest.raises(CalibrationError, match="a7"):
        feature_matrix([{"answer_id": "a7", "score": None}], ["score"])


def test_mapping_improves_rmse_out_of_sample(linear: Data, linear_mapping: Mapping) -> None:
    rows, human, groups = linear
    raw = np.array([r["score"] for r in rows])
    oof = calibration.cross_val_predict_grouped(rows, human, groups, linear_mapping.kind, scale_min=0, scale_max=4)
    raw_rmse = agreement.metrics(raw, human, 0, 4)["rmse"]
    cal_rmse = agreement.metrics(oof, human, 0, 4)["rmse"]
    assert cal_rmse < 0.7 * raw_rmse
    # Features carry more than the score here, so ridge wins, and the stored CV metrics say the same.
    assert linear_mapping.kind == "ridge" and linear_mapping.selection == "auto"
    assert linear_mapping.cv_metrics["ridge"]["rmse"] == pytest.approx(cal_rmse)
    assert linear_mapping.cv_metrics["ridge"]["rmse"] < linear_mapping.cv_metrics["isotonic"]["rmse"]
    assert linear_mapping.raw_metrics["rmse"] == pytest.approx(raw_rmse)


def test_ridge_apply_equals_full_fit_prediction(linear: Data, linear_mapping: Mapping) -> None:
    rows, human, _ = linear
    x = feature_matrix(rows, linear_mapping.features)
    assert linear_mapping.ridge is not None
    reference = make_pipeline(SimpleImputer(strategy="mean"), StandardScaler(), Ridge(alpha=linear_mapping.ridge.alpha))
    expected = np.clip(reference.fit(x, human).predict(x), 0, 4)
    applied = np.array([linear_mapping.apply(r) for r in rows])
    np.testing.assert_allclose(applied, expected, atol=1e-9)
    np.testing.assert_allclose(linear_mapping.predict(rows), applied)


def test_isotonic_chosen_for_monotone_nonlinear_score() -> None:
    rows, human, groups = step_data()
    mapping = calibration.fit_mapping(rows, human, groups, 0, 4)
    assert mapping.kind == "isotonic"
    assert mapping.features == ["score"]
    assert mapping.cv_metrics["isotonic"]["rmse"] < 0.5 * mapping.cv_metrics["ridge"]["rmse"]
    # apply() is exactly sklearn's isotonic fit on all rows, including beyond the training range (clipped).
    score = np.array([r["score"] for r in rows])
    reference = IsotonicRegression(y_min=0, y_max=4, out_of_bounds="clip").fit(score, human)
    probe = np.concatenate([score, [-3.0, 0.0, 5.0, 12.0]])
    applied = [mapping.apply({"score": s}) for s in probe]
    np.testing.assert_allclose(applied, reference.predict(probe), atol=1e-12)


def test_requested_kind_is_kept(linear: Data) -> None:
    rows, human, groups = linear
    mapping = calibration.fit_mapping(rows, human, groups, 0, 4, kind="isotonic")
    assert mapping.kind == "isotonic" and mapping.selection == "requested"
    assert set(mapping.cv_metrics) == {"isotonic", "ridge", "quadratic"}


def test_save_load_round_trip(tmp_path: Path, linear: Data, linear_mapping: Mapping) -> None:
    rows, _, _ = linear
    path = linear_mapping.save(tmp_path / "sub" / "mapping.json")
    loaded = load_mapping(path)
    np.testing.assert_array_equal(loaded.predict(rows), linear_mapping.predict(rows))
    assert loaded.id == linear_mapping.id and len(loaded.id) == 12
    assert json.loads(path.read_text())["version"] == "1"


def test_metadata(linear: Data, linear_mapping: Mapping) -> None:
    rows, human, _ = linear
    assert linear_mapping.n_train == 200 and linear_mapping.n_groups == 10 and linear_mapping.folds == 5
    assert linear_mapping.training_hash == training_hash(rows, human)
    # Same data in another order: same hash. One changed grade: another hash.
    order = np.random.default_rng(1).permutation(len(rows))
    assert training_hash([rows[i] for i in order], human[order]) == linear_mapping.training_hash
    changed = human.copy()
    changed[3] += 1
    assert training_hash(rows, changed) != linear_mapping.training_hash


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"version": "0"}', "version '0' is not supported"),
        ('{"version": "1", "kind": "ridge"}', "invalid calibration mapping: selection"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_load_errors_name_file_and_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(CalibrationError, match=message) as info:
        load_mapping(path)
    assert str(path) in str(info.value)


def test_load_rejects_params_that_do_not_match(tmp_path: Path, linear_mapping: Mapping) -> None:
    data = json.loads(linear_mapping.model_dump_json())
    data["ridge"]["coef"] = data["ridge"]["coef"][:-1]
    path = tmp_path / "short.json"
    path.write_text(json.dumps(data))
    with pytest.raises(CalibrationError, match="ridge coef has 8 values"):
        load_mapping(path)
    with pytest.raises(CalibrationError, match="not found"):
        load_mapping(tmp_path / "missing.json")


def test_group_folds_never_share_a_group(linear: Data) -> None:
    _, _, groups = linear
    folds = calibration.fold_indices(groups, folds=5, seed=3)
    assert len(folds) == 5
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested.tolist()) == list(range(len(groups)))  # every row is held out exactly once
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])


def test_within_split_shares_groups(linear: Data) -> None:
    rows, human, groups = linear
    folds = calibration.fold_indices(groups, folds=5, split="within")
    assert any(set(groups[train]) & set(groups[test]) for train, test in folds)
    oof = calibration.cross_val_predict_grouped(rows, human, groups, "ridge", split="within")
    assert oof.shape == human.shape and np.isfinite(oof).all()


def test_input_errors(linear: Data) -> None:
    rows, human, groups = linear
    with pytest.raises(CalibrationError, match="differ in length"):
        calibration.fit_mapping(rows, human[:-1], groups, 0, 4)
    with pytest.raises(CalibrationError, match="at least 2 questions"):
        calibration.fit_mapping(rows, human, ["same"] * len(rows), 0, 4)


def _is_png(path: Path) -> bool:
    return path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_plots_write_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    human = rng.integers(0, 5, 60).astype(float)
    pred = np.clip(human + rng.normal(0, 0.8, 60), 0, 4)
    calibrated = np.clip(0.9 * pred + 0.2, 0, 4)
    lengths = rng.integers(50, 3000, 60)
    paths = [
        report_plots.scatter(pred, human, tmp_path / "scatter.png"),
        report_plots.confusion_heatmap(pred, human, 0, 4, tmp_path / "confusion.png"),
        report_plots.residuals_vs_length(pred, human, lengths, tmp_path / "residuals.png"),
        report_plots.per_question_bars({"q1": 0.8, "q2": 0.4, "q3": 0.65}, tmp_path / "bars.png"),
        report_plots.calibration_curve(pred, calibrated, human, tmp_path / "plots" / "calibration.png"),
    ]
    for path in paths:
        assert _is_png(Path(path)), path


def test_rubric_ships_a_mapping_that_applies_only_to_its_readings(tmp_path: Path, linear: Data) -> None:
    """A rubric's `calibration` file is applied by default when the judge, mode, rubric version and embedder are
    those it was fitted on; for any other judge, or with --no-calibration, scores stay raw."""
    import shutil

    from evaluator.scoring import build_evaluator

    root = Path(__file__).resolve().parents[1]
    for d in ("rubrics", "prompts", "eval_sets"):
        shutil.copytree(root / d, tmp_path / d)
    rubric_file = tmp_path / "rubrics" / "ml-screening.yaml"
    rubric_file.write_text(rubric_file.read_text() + "calibration: ml-screening.mapping.json\n")
    rows, human, groups = linear
    reading = {
        "judge": "fake:overlap",
        "mode": "probability",
        "rubric": "ml-screening@" + __import__("yaml").safe_load(rubric_file.read_text())["version"],
        "embedder": "fake:hash",
    }
    calibration.fit_mapping(rows, human, groups, 0, 4, fitted_for=reading).save(
        tmp_path / "rubrics" / "ml-screening.mapping.json"
    )
    answer = "Overfitting is when the model memorises noise in the training data and fails on new data."

    def verdict(**kw):
        ev = build_evaluator(data_dir=tmp_path, embedder="fake:hash", use_cache=False, mode="probability", **kw)
        les, q = ev.resources.find_question("overfitting")
        return ev.score(les, q, answer)

    shipped = verdict(judge="fake:overlap")
    assert shipped.provenance.calibration and (shipped.scale_min, shipped.scale_max) == (0, 4)
    raw = verdict(judge="fake:overlap", rubric_calibration=False)
    assert raw.provenance.calibration is None and raw.scale_max == 10 and raw.score == raw.raw_score
    assert shipped.raw_score == raw.raw_score
    calibration.fit_mapping(rows, human, groups, 0, 4, fitted_for=reading | {"judge": "local:another-model"}).save(
        tmp_path / "rubrics" / "ml-screening.mapping.json"
    )
    other = verdict(judge="fake:overlap")
    assert other.provenance.calibration is None and other.score == raw.score


def test_quadratic_kind_fits_an_interaction_and_round_trips(tmp_path: Path) -> None:
    """When the human grade depends on a product of features (a high judge reading counts only with enough
    similarity), the quadratic ridge beats the linear one out of sample, auto picks it, and the saved mapping
    predicts the same with numpy alone."""
    rng = np.random.default_rng(1)
    rows, human, groups = [], [], []
    for q in range(12):
        for j in range(30):
            score, sim = float(rng.uniform(0, 4)), float(rng.uniform(0, 1))
            rows.append({"answer_id": f"{q}-{j}", "question_id": f"q{q}", "score": score, "similarity": sim})
            human.append(float(np.clip(score * sim + rng.normal(0, 0.1), 0, 4)))
            groups.append(f"q{q}")
    mapping = calibration.fit_mapping(rows, human, groups, 0, 4)
    assert mapping.kind == "quadratic" and mapping.ridge.degree == 2
    assert mapping.cv_metrics["quadratic"]["rmse"] < 0.7 * mapping.cv_metrics["ridge"]["rmse"]
    loaded = load_mapping(mapping.save(tmp_path / "q.json"))
    np.testing.assert_allclose(loaded.predict(rows), mapping.predict(rows))
    assert loaded.apply({"score": 4.0, "similarity": 1.0}) > loaded.apply({"score": 4.0, "similarity": 0.1}) + 2


def test_grading_with_a_mapping_imports_no_fitting_stack(tmp_path: Path, linear_mapping: Mapping) -> None:
    """Applying a mapping needs numpy only: grading an answer with a mapping imports none of sklearn, scipy or
    krippendorff, which only fitting (evaluator.calibration) needs."""
    path = linear_mapping.save(tmp_path / "mapping.json")
    code = f"""
import sys
import evaluator.mapping
from evaluator.scoring import build_evaluator
ev = build_evaluator(judge="fake:overlap", embedder="fake:hash", use_cache=False, calibration={str(path)!r})
les, q = ev.resources.find_question("overfitting")
v = ev.score(les, q, "Overfitting is when the model memorises noise in the training data and fails on new data.")
assert v.status == "scored" and v.provenance.calibration == {linear_mapping.id!r}, v
print(sorted(m for m in ("sklearn", "scipy", "krippendorff") if m in sys.modules))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
