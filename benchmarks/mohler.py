"""Grading quality on the Mohler/UNT short-answer data: the ablation table from stored judge outputs.

    python benchmarks/mohler.py                      # table from benchmarks/results/*.jsonl (seconds)
    python benchmarks/mohler.py --export runs/X NAME # store a grading folder's outputs as results/NAME.jsonl
    python benchmarks/mohler.py --from-scratch       # import the questions, grade all answers, export, table

The stored files hold, per answer id, the judge's levels and probabilities and the similarity figures:
no answer text and no evidence quotes (the data set stays in ../shared). Every number below is computed
with 5-fold cross-validation grouped by question: a question's answers never train the map that scores them.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.model_selection import GroupKFold, KFold

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluator import agreement, calibration, mapping  # noqa: E402
from evaluator.calibrate_report import verdict_row  # noqa: E402
from evaluator.similarity import lexical_overlap  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets" / "mohler" / "answers.csv"
RESULTS = ROOT / "benchmarks" / "results"
LO, HI = 0.0, 5.0


def load_data() -> list[dict]:
    with open(DATA, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def export(run_dir: Path, name: str) -> Path:
    """Keeps what the analysis needs from a grading folder's verdicts (no text, no quotes)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.jsonl"
    n = 0
    with open(run_dir / "verdicts.jsonl", encoding="utf-8") as f, open(out, "w", encoding="utf-8") as g:
        for line in f:
            v = json.loads(line)
            sim = v.get("similarity") or {}
            g.write(
                json.dumps(
                    {
                        "answer_id": v["answer_id"],
                        "question_id": v["question_id"],
                        "status": v["status"],
                        "holistic": v.get("holistic_level"),
                        "holistic_probabilities": v.get("holistic_probabilities"),
                        "views": v.get("views") or {},
                        "criteria": {
                            c["id"]: {"level": c["level"], "probabilities": c["probabilities"]}
                            for c in v.get("criteria", [])
                            if c.get("level") is not None
                        },
                        "similarity": sim.get("best_reference"),
                        "key_point_coverage": sim.get("key_point_coverage"),
                        "answer_chars": v.get("answer_chars"),
                        "review_flags": [r["code"] for r in v.get("review_flags", [])],
                        "judge": f"{v['provenance']['judge_backend']}:{v['provenance']['judge_model']}",
                        "prompt_hash": v["provenance"]["prompt_hash"],
                        "seconds": v["usage"]["seconds"],
                        # The calibration features exactly as `evaluator calibrate` reads them from a verdict.
                        "calibration_row": verdict_row(v) if v["status"] == "scored" else None,
                    }
                )
                + "\n"
            )
            n += 1
    print(f"wrote {out} ({n} answers)")
    return out


# What each stored pass is (benchmarks/results/<name>.jsonl).
DESCRIBE = {
    "mohler-keyidea": "key-idea read, compact prompt (rubric 2.1, shipped)",
    "mohler-holistic": "holistic 0-4, full rubric context (rubric 1.1)",
}


def argmax_reading(g: dict) -> float:
    """The most probable digit alone: the holistic level's, else the first view's."""
    probs = g.get("holistic_probabilities") or next(iter((g.get("views") or {}).values()), {}).get("probabilities")
    return float(max(probs, key=probs.get)) if probs else np.nan


def load_results(name: str) -> dict[str, dict]:
    p = RESULTS / f"{name}.jsonl"
    return (
        {r["answer_id"]: r for r in map(json.loads, p.read_text(encoding="utf-8").splitlines())} if p.exists() else {}
    )


def tfidf_cosine(rows: list[dict]) -> np.ndarray:
    vec = TfidfVectorizer(stop_words="english", sublinear_tf=True).fit(
        [r["answer"] for r in rows] + sorted({r["reference_answer"] for r in rows})
    )
    a = vec.transform([r["answer"] for r in rows])
    b = vec.transform([r["reference_answer"] for r in rows])
    num = np.asarray(a.multiply(b).sum(axis=1)).ravel()
    den = np.sqrt(np.asarray(a.multiply(a).sum(axis=1)).ravel() * np.asarray(b.multiply(b).sum(axis=1)).ravel())
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def cv_predict(x: np.ndarray, y: np.ndarray, groups: np.ndarray, split: str, model=None) -> np.ndarray:
    x = x.reshape(len(y), -1)
    folds = (
        GroupKFold(n_splits=5).split(x, y, groups)
        if split == "group"
        else KFold(n_splits=5, shuffle=True, random_state=0).split(x, y)
    )
    pred = np.zeros_like(y)
    for tr, te in folds:
        m = (model() if model else LinearRegression()).fit(x[tr], y[tr])
        pred[te] = m.predict(x[te])
    return np.clip(pred, LO, HI)


def row_metrics(pred, y, groups, n_boot=300) -> dict:
    m = agreement.metrics(pred, y, LO, HI)
    ci = agreement.bootstrap_ci(pred, y, groups, LO, HI, n_boot=n_boot)
    return {k: (m[k], ci[k]) for k in ("pearson", "rmse", "qwk", "mae")}


def fmt(cell) -> str:
    v, (lo, hi) = cell
    return f"{v:.3f} [{lo:.3f},{hi:.3f}]"


def print_row(label: str, metrics: dict) -> None:
    print(f"{label:64s} " + " ".join(f"{fmt(metrics[k]):>22s}" for k in metrics))


def table(stores: list[str]) -> None:
    t0 = time.perf_counter()
    rows = load_data()
    y = np.array([float(r["grade"]) for r in rows])
    groups = np.array([r["question_id"] for r in rows])
    g1 = np.array([float(r["grade_1"]) for r in rows])
    g2 = np.array([float(r["grade_2"]) for r in rows])
    feats: dict[str, np.ndarray] = {
        "tfidf": tfidf_cosine(rows),
        # Single-answer lexical features, computed as the similarity stage computes them.
        "lexical": np.array([lexical_overlap(r["answer"], r["reference_answer"]) for r in rows]),
        "length_ratio": np.log1p([len(r["answer"]) for r in rows])
        - np.log1p([len(r["reference_answer"]) for r in rows]),
    }
    loaded = {name: load_results(name) for name in stores}
    loaded = {k: v for k, v in loaded.items() if v}
    if not loaded:
        print(f"no stored judge outputs in {RESULTS}; run with --from-scratch")
        return
    keep = np.ones(len(rows), dtype=bool)
    for res in loaded.values():
        ok = np.array([r["answer_id"] in res and res[r["answer_id"]]["status"] == "scored" for r in rows])
        keep &= ok
    for name, res in loaded.items():
        get = [res.get(r["answer_id"], {}) for r in rows]
        feats[f"{name}:similarity"] = np.array([g.get("similarity") or 0.0 for g in get])
        feats[f"{name}:holistic"] = np.array(
            [g.get("holistic") if g.get("holistic") is not None else np.nan for g in get]
        )
        feats[f"{name}:argmax"] = np.array([argmax_reading(g) for g in get])
        crit_ids = sorted({c for g in get for c in (g.get("criteria") or {})})
        for c in crit_ids:
            feats[f"{name}:criterion:{c}"] = np.array(
                [(g.get("criteria") or {}).get(c, {}).get("level", np.nan) for g in get], dtype=float
            )
        feats[f"{name}:log_chars"] = np.log1p(np.array([g.get("answer_chars") or 0 for g in get], dtype=float))
    n = int(keep.sum())
    y, groups, g1, g2 = y[keep], groups[keep], g1[keep], g2[keep]
    feats = {k: v[keep] for k, v in feats.items()}
    main = next(iter(loaded))

    def ridge():
        return Ridge(alpha=1.0)

    def judged(name: str) -> str:
        return f"judge only, {DESCRIBE.get(name, name)}"

    configs: list[tuple[str, list[str], object]] = [
        ("TF-IDF cosine baseline (linear map)", ["tfidf"], None),
        ("similarity only: MiniLM cosine", [f"{main}:similarity"], None),
    ]
    for name in loaded:
        configs += [
            (f"{judged(name)}: argmax digit (no logprob weighting)", [f"{name}:argmax"], None),
            (f"{judged(name)}: expected digit (logprob-weighted)", [f"{name}:holistic"], None),
        ]
        crit = [k for k in feats if k.startswith(f"{name}:criterion:")]
        if crit:
            configs.append((f"{judged(name)}: per-criterion expected levels", crit, ridge))
    for name in loaded:
        both = [f"{name}:similarity", f"{name}:holistic"]
        configs += [
            (f"combined, {DESCRIBE.get(name, name)}: MiniLM + judge", both, ridge),
            (
                f"combined, {DESCRIBE.get(name, name)}: + lexical overlap + lengths",
                [*both, "lexical", "length_ratio", f"{name}:log_chars"],
                ridge,
            ),
        ]
    single = [f"{main}:similarity", f"{main}:holistic", "lexical", "length_ratio", f"{main}:log_chars"]
    if len(loaded) > 1:
        others = [f"{k}:holistic" for k in loaded if k != main]
        configs.append(
            ("combined, both prompts (two reads per answer) + MiniLM + lexical + lengths", [*single, *others], ridge)
        )
    configs.append(("batch-relative: default + TF-IDF (IDF fitted on all answers)", [*single, "tfidf"], ridge))
    default_label = f"combined, {DESCRIBE.get(main, main)}: + lexical overlap + lengths"
    print(
        f"Mohler dev answers with every stored view scored: {n}; official grade = mean of two graders; "
        f"95% CI resampled by question"
    )
    print(f"{'configuration':64s} {'pearson':>22s} {'rmse':>22s} {'qwk':>22s} {'mae':>22s}")
    hh = row_metrics(g1, g2, groups)
    print_row("human grader 1 vs grader 2 (ceiling)", hh)
    default = None
    for label, keys, model in configs:
        x = np.column_stack([feats[k] for k in keys])
        if np.isnan(x).any():
            col_mean = np.nanmean(x, axis=0)
            x = np.where(np.isnan(x), col_mean, x)
        pred = cv_predict(x, y, groups, "group", model)
        m = row_metrics(pred, y, groups)
        print_row(label, m)
        if label == default_label:
            default = (label, m, x, model)
    label, m, x, model = default
    seen = row_metrics(cv_predict(x, y, groups, "within", model), y, groups)
    print_row("  same, seen-questions CV (folds split within questions)", seen)
    main_rows = [loaded[main].get(r["answer_id"], {}).get("calibration_row") for r in rows]
    main_rows = [c for c, k in zip(main_rows, keep, strict=True) if k]
    if all(main_rows):
        # The shipped path: the product's own mapping code (evaluator.calibration: same features, ridge penalty chosen
        # by inner grouped CV on the training folds, clipping), each kind `evaluator calibrate` considers; "auto"
        # (what calibrate ships) keeps the kind with the lowest grouped-CV RMSE.
        shipped = calibration.fit_mapping(main_rows, y, groups, LO, HI)
        for kind in mapping.KINDS:
            lab = f"mapping {kind} (evaluator calibrate) on {DESCRIBE.get(main, main)}"
            lab = ("shipped: " if kind == shipped.kind else "") + lab
            for split, tag in (("group", ""), ("within", "  same, seen-questions CV")):
                if split == "within" and kind != shipped.kind:
                    continue
                pred = calibration.cross_val_predict_grouped(main_rows, y, groups, kind, 5, 0, split, LO, HI)
                mm = row_metrics(pred, y, groups)
                print_row(tag or lab, mm)
                if split == "group" and kind == shipped.kind:
                    m, label = mm, lab
        # The whole procedure out of sample: the kind (and penalty) chosen inside each training fold only.
        nested = np.zeros_like(y)
        for tr, te in GroupKFold(n_splits=5).split(y, y, groups):
            fold = calibration.fit_mapping([main_rows[i] for i in tr], y[tr], groups[tr], LO, HI)
            nested[te] = fold.predict([main_rows[i] for i in te])
        mm = row_metrics(nested, y, groups)
        print_row("  same procedure, kind chosen inside each training fold", mm)
    print(f"default = {label}; analysis took {time.perf_counter() - t0:.1f} s")
    print(f"default (question-grouped CV): pearson {m['pearson'][0]:.3f} rmse {m['rmse'][0]:.3f} qwk {m['qwk'][0]:.3f}")


def from_scratch(name: str) -> None:
    run = ROOT / "runs" / name
    bank = ROOT / "runs" / "mohler.yaml"
    ev = [sys.executable, "-m", "evaluator"]
    subprocess.run(
        [
            *ev,
            "questions",
            "import",
            str(DATA),
            "--out",
            str(bank),
            "--id",
            "mohler-dev",
            "--topic",
            "computer-science",
        ],
        check=True,
    )
    t0 = time.perf_counter()
    subprocess.run(
        [*ev, "grade", str(DATA), "--eval-set", str(bank), "--candidate-column", "answer_id", "--out", str(run)],
        check=True,
    )
    print(f"grading took {time.perf_counter() - t0:.0f} s")
    export(run, name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export", nargs=2, metavar=("RUN_DIR", "NAME"))
    p.add_argument("--from-scratch", action="store_true")
    p.add_argument(
        "--stores",
        default="mohler-keyidea,mohler-holistic",
        help="comma-separated stored result names; the first is the main judge view",
    )
    a = p.parse_args()
    if a.export:
        export(Path(a.export[0]), a.export[1])
        return
    if a.from_scratch:
        from_scratch(a.stores.split(",")[0])
    table(a.stores.split(","))


if __name__ == "__main__":
    main()
