"""Grading quality on answers no one here wrote, from stored judge outputs; writes the default grade model.

    python benchmarks/quality.py                       # the whole table from benchmarks/results/quality-*.jsonl
    python benchmarks/quality.py --write-model         # ... and write rubrics/key_points.model.json
    python benchmarks/quality.py --collect saf         # grade a set with the embedded judge, appending reads
                                                       # (saf, mohler, exemplars, redflags; resumable)
    python benchmarks/quality.py --reread-off-topic saf  # re-read the stored answers that have sentences the
                                                       # off-topic step sets aside (stored before it existed)
    python benchmarks/quality.py --reread saf --questions saf-2.3,saf-4.1   # read these questions again

Data: ../shared/datasets/{mohler,saf}/answers.csv (read there, never copied), the ML bank's exemplars, and the
red-flag set eval_sets/ml-screening.redflags.yaml. The stored files hold, per answer, the readings and the
feature row, never the answer text. The shipped default (the anchored coverage) has no fitted parameter, so its
figures are out of sample as they stand; every fitted row is cross-validated in 5 folds grouped by question over
Mohler and SAF together, so a question's answers never train the model that scores them. The ML bank exemplars
and the red-flag set are never used for fitting.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from scipy.optimize import curve_fit
from scipy.stats import pearsonr, spearmanr
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluator import build_evaluator  # noqa: E402
from evaluator.arithmetic import apply_red_flags  # noqa: E402
from evaluator.embeddings import get_embedder  # noqa: E402
from evaluator.grade_model import (  # noqa: E402
    FEATURES,
    MODEL_FILE,
    Anchors,
    anchored_coverage,
    features_of,
    point_positions,
    unfitted_fraction,
)
from evaluator.key_points import asked_count, derive_key_points, key_points_of  # noqa: E402
from evaluator.models import EvalSet, Question, RedFlag, Verdict  # noqa: E402
from evaluator.red_flags import WEIGHTS, ClaimFeatures, acts, claim_features, nearest_points  # noqa: E402
from evaluator.resources import LoadedEvalSet  # noqa: E402
from evaluator.screen import screen  # noqa: E402
from evaluator.similarity import off_topic_spans  # noqa: E402

DATASETS = ROOT.parent / "shared" / "datasets"
RESULTS = ROOT / "benchmarks" / "results"
BANK = ROOT / "eval_sets" / "ml-screening.yaml"
REDFLAG_SET = ROOT / "eval_sets" / "ml-screening.redflags.yaml"
BAND_TARGET = {"weak": 0.15, "partial": 0.525, "strong": 0.875}  # the bands' mid-points, for the fit check only
RIDGE_ALPHAS = (0.1, 1.0, 10.0, 100.0)
# The monotone maps from the linear score to the fraction, compared side by side; each is stored as interpolation
# knots (GradeModel.iso_x / iso_y), so applying any of them is one np.interp.
MAPS = ("isotonic steps", "PAV block centres", "isotonic on 10 bins", "sigmoid")
# The map the fitted feature sets are compared with.
BASELINE_MAP = "isotonic steps"
# The default score has no fitted parameter: the anchored coverage (grade_model.anchored_coverage), the grade model
# the grader applies; its parameters as a dict, for predict() beside the fitted ones.
IDENTITY = anchored_coverage().model_dump()
DEFAULT_FEATURES = tuple(IDENTITY["features"])


# ---------------------------------------------------------------------------------------------------- collect


def _key_point_scoring(ev) -> None:
    """Mohler and SAF are read with the key-point plan (what reference-only ships), set here so that a rubric edit
    cannot change what the grade model is measured on."""
    lr = ev.resources.rubric("reference-only")
    lr.rubric = lr.rubric.model_copy(update={"scoring": "key_points"})


def _csv_questions(name: str) -> tuple[LoadedEvalSet, list[dict]]:
    with open(DATASETS / name / "answers.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    qs: dict[str, Question] = {}
    texts: dict[tuple[str, str], str] = {}
    for r in rows:
        qid = r["question_id"] if name == "saf" else f"mohler-{r['question_id']}"
        # SAF's "saf-2.1" holds three different questions (service classes, frame bursting, DQDB; 82 answers
        # each): one id per distinct question text, the first keeping the dataset's id.
        key = (qid, r["question"])
        if key not in texts:
            same = sum(1 for k in texts if k[0] == qid)
            texts[key] = qid if not same else f"{qid}-{same + 1}"
        qid = texts[key]
        r["qid"] = qid
        r["target"] = float(r["grade"]) / float(r["max_grade"])
        if qid not in qs:
            # As `evaluator questions import` writes it: the key points derived from the reference, and how many of
            # them the question's wording asks for ("state at least 4 of the differences").
            n_points = len(derive_key_points(r["reference_answer"]))
            qs[qid] = Question(
                id=qid,
                level="mid",
                topic=name,
                question=r["question"],
                references=[r["reference_answer"]],
                points_required=asked_count(r["question"], n_points),
            )
    es = EvalSet(id=name, version="1", rubric="reference-only", questions=list(qs.values()))
    return LoadedEvalSet(eval_set=es, path=RESULTS / f"{name}.yaml", hash=name), rows


def _bank_items(name: str) -> tuple[LoadedEvalSet, list[dict]]:
    ev = build_evaluator(use_cache=False)
    les = ev.resources.load_eval_set("ml-screening")
    items = []
    if name == "exemplars":
        for q in les.eval_set.questions:
            for e in q.exemplars:
                items.append(
                    {"qid": q.id, "answer_id": f"{q.id}:{e.band.value}", "answer": e.answer, "band": e.band.value}
                    | {"target": BAND_TARGET[e.band.value], "range": list(e.score_range)}
                )
    else:
        data = yaml.safe_load(REDFLAG_SET.read_text(encoding="utf-8"))
        for entry in data["questions"]:
            for i, a in enumerate(entry["answers"]):
                items.append(
                    {"qid": entry["question_id"], "answer_id": f"{entry['question_id']}:{i}", "answer": a["answer"]}
                    | {"shows": a["shows"]}
                )
    return les, items


def _order(rows: list[dict], per_round: int, seed: int = 0) -> list[dict]:
    """Rounds of `per_round` answers per question, grouped by question inside a round: a run stopped early still
    covers every question, and the judge's prefix cache is reused within each group."""
    by_q: dict[str, list[dict]] = {}
    for r in rows:
        by_q.setdefault(r["qid"], []).append(r)
    rng = random.Random(seed)
    for v in by_q.values():
        rng.shuffle(v)
    out, k = [], 0
    while any(len(v) > k for v in by_q.values()):
        for qid in sorted(by_q):
            out += by_q[qid][k : k + per_round]
        k += per_round
    return out


def row_of(q: Question, text: str, v: Verdict) -> dict[str, float]:
    """The feature row of a stored verdict, through the same function the grader uses."""
    keyidea = (v.views.get("keyidea") or {}).get("expected")
    return features_of(
        keyidea,
        [k.probability or 0.0 for k in v.key_points],
        v.similarity.best_reference if v.similarity else None,
        [k.similarity or 0.0 for k in v.key_points],
        len(text.split()),
        len(q.references[0].split()),
    )


def collect_anchors(name: str) -> None:
    """Each question's floor and ceiling reads (Evaluator.anchors), for the questions of a collected set."""
    les, _rows = _csv_questions(name) if name in ("saf", "mohler") else _bank_items(name)
    out = RESULTS / "quality-anchors.jsonl"
    done = set()
    if out.exists():
        done = {json.loads(line)["qid"] for line in out.read_text(encoding="utf-8").splitlines() if line}
    wanted = {r["qid"] for r in load(name)}
    ev = build_evaluator(use_cache=False, explain=False)
    _key_point_scoring(ev)
    with open(out, "a", encoding="utf-8") as f:
        for q in les.eval_set.questions:
            if q.id in done or q.id not in wanted:
                continue
            a = ev.anchors(q, ev.resources.rubric_for(les, q).rubric)
            rec = {"qid": q.id, "reference_words": len(q.references[0].split())}
            f.write(json.dumps(rec | {"anchors": dataclasses.asdict(a) if a else None}) + "\n")
            f.flush()
            print(f"  anchors {q.id}", flush=True)


def reread_off_topic(name: str) -> None:
    """Stored reads made before the off-topic step (similarity.off_topic_spans) existed: the answers it would set
    sentences aside in are dropped from the stored file and read again with the current code; the rest stand."""
    les, rows = _csv_questions(name) if name in ("saf", "mohler") else _bank_items(name)
    out = RESULTS / f"quality-{name}.jsonl"
    stored = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines() if line]
    ev = build_evaluator(use_cache=False, explain=False)
    by_id = {r["answer_id"]: r for r in rows}
    affected = set()
    for rec in stored:
        r = by_id[rec["answer_id"]]
        text, _ = ev.prepare_answer(r["answer"])
        if off_topic_spans(ev.embedder, les.by_id[r["qid"]], screen(text).clean or text):
            affected.add(rec["answer_id"])
    print(f"{name}: {len(affected)} of {len(stored)} stored answers have sentences set aside; reading them again")
    out.write_text("".join(json.dumps(rec) + "\n" for rec in stored if rec["answer_id"] not in affected))
    collect(name, only=affected)


def reread_questions(name: str, qids: set[str]) -> None:
    """The stored reads of these questions (answers and anchors) dropped and read again with the current code: for
    questions whose key points or sentences the code now derives differently."""
    out, anchors = RESULTS / f"quality-{name}.jsonl", RESULTS / "quality-anchors.jsonl"
    stored = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines() if line]
    again = {rec["answer_id"] for rec in stored if rec["qid"] in qids}
    print(f"{name}: reading {len(again)} stored answers of {len(qids)} questions again")
    out.write_text("".join(json.dumps(rec) + "\n" for rec in stored if rec["answer_id"] not in again))
    kept = [
        line
        for line in anchors.read_text(encoding="utf-8").splitlines()
        if line and json.loads(line)["qid"] not in qids
    ]
    anchors.write_text("".join(line + "\n" for line in kept))
    collect(name, only=again)
    collect_anchors(name)


def collect(name: str, limit: int | None = None, only: set[str] | None = None) -> None:
    les, rows = _csv_questions(name) if name in ("saf", "mohler") else _bank_items(name)
    out = RESULTS / f"quality-{name}.jsonl"
    done = set()
    if out.exists():
        done = {json.loads(line)["answer_id"] for line in out.read_text(encoding="utf-8").splitlines() if line}
    ev = build_evaluator(use_cache=False, explain=False)
    _key_point_scoring(ev)
    todo = [r for r in _order(rows, 6 if name == "saf" else 4 if name == "mohler" else 3) if r["answer_id"] not in done]
    todo = [r for r in todo if r["answer_id"] in only] if only is not None else todo
    todo = todo[:limit] if limit else todo
    print(f"{name}: {len(done)} stored, {len(todo)} to grade", flush=True)
    t0 = time.perf_counter()
    with open(out, "a", encoding="utf-8") as f:
        for i, r in enumerate(todo, 1):
            q = les.by_id[r["qid"]]
            text, _ = ev.prepare_answer(r["answer"])
            v = ev.score(les, q, r["answer"])
            rec = {k: r[k] for k in ("answer_id", "qid", "target", "verification", "band", "range", "shows") if k in r}
            rec |= {"words": len(text.split()), "status": v.status, "seconds": round(v.usage.seconds, 3)}
            if v.status == "scored":
                rec |= {
                    "row": row_of(q, text, v) if text else None,
                    "points": [k.probability for k in v.key_points],
                    "claims": {fo.id: fo.probability for fo in v.red_flags},
                    "claim_similarity": {fo.id: fo.similarity for fo in v.red_flags},
                    "flags": [x.code for x in v.review_flags],
                    "read_version": v.provenance.prompt_hash,
                }
            f.write(json.dumps(rec) + "\n")
            f.flush()
            if i % 25 == 0:
                rate = i / (time.perf_counter() - t0)
                print(f"  {i}/{len(todo)}  {rate:.2f} answers/s", flush=True)


# ---------------------------------------------------------------------------------------------------- analyse


def load(name: str) -> list[dict]:
    p = RESULTS / f"quality-{name}.jsonl"
    if not p.exists():
        return []
    recs = [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line]
    if name != "anchors":
        with_anchors(recs)
    return recs


@functools.cache
def _points_required() -> dict[str, int | None]:
    """Per Mohler and SAF question, how many key points its wording asks for (None: all)."""
    return {q.id: q.points_required for name in ("saf", "mohler") for q in _csv_questions(name)[0].eval_set.questions}


def with_anchors(recs: list[dict]) -> None:
    """Recomputes each stored feature row through features_of with its question's anchors (and the number of key
    points its wording asks for), when read."""
    anchors = {a["qid"]: a for a in load("anchors")}
    required = _points_required()
    for r in recs:
        a, row = anchors.get(r["qid"]), r.get("row")
        if not row or not a or not a["anchors"]:
            continue
        r["row"] = features_of(
            row["keyidea"] * 5 if not math.isnan(row["keyidea"]) else None,
            r["points"],
            row["cosine"],
            [row["evidence_cosine"]],
            r["words"],
            a["reference_words"],
            Anchors(**a["anchors"]),
            required.get(r["qid"]),
        )


def matrix(recs: list[dict], features: tuple[str, ...] = FEATURES) -> np.ndarray:
    x = np.array([[r["row"].get(f, math.nan) if r.get("row") else math.nan for f in features] for r in recs])
    return x


def fit(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None, kind: str = BASELINE_MAP) -> dict:
    """Ridge on standardised features (alpha by inner grouped CV), then a monotone map (MAPS) of its output."""
    impute = np.nan_to_num(np.nanmean(x, axis=0))
    x = np.where(np.isnan(x), impute, x)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    z = (x - mean) / scale
    alpha = 10.0
    if groups is not None and len(set(groups)) >= 5:
        best = None
        for a in RIDGE_ALPHAS:
            pred = np.zeros(len(y))
            for tr, te in GroupKFold(5).split(z, y, groups):
                pred[te] = Ridge(alpha=a, positive=True).fit(z[tr], y[tr]).predict(z[te])
            err = float(np.mean((pred - y) ** 2))
            if best is None or err < best[0]:
                best = (err, a)
        alpha = best[1]
    # Non-negative weights: every feature is "more is better", so stating more, or being closer to the reference,
    # never lowers a score, and a reading lowered by the injection guard never raises one.
    ridge = Ridge(alpha=alpha, positive=True).fit(z, y)
    iso_x, iso_y = monotone_map(ridge.predict(z), y, kind)
    return {
        "impute": impute.tolist(),
        "mean": mean.tolist(),
        "scale": scale.tolist(),
        "coef": ridge.coef_.tolist(),
        "intercept": float(ridge.intercept_),
        "iso_x": iso_x.tolist(),
        "iso_y": iso_y.tolist(),
        "alpha": alpha,
    }


def monotone_map(lin: np.ndarray, y: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Knots (x increasing, y non-decreasing) of the map from the linear score to the fraction. Beyond the end
    knots np.interp holds the end values."""
    if kind == "isotonic steps":
        # sklearn keeps each PAV block's first and last point: flat inside a block, a ramp between blocks, so
        # every answer whose score falls inside one block gets the same fraction.
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(lin, y)
        return iso.X_thresholds_, iso.y_thresholds_
    if kind == "PAV block centres":
        return _pav_centres(lin, y, np.ones(len(y)))
    if kind == "isotonic on 10 bins":
        # Deciles of the linear score: ten averaged points, so PAV merges fewer of them into long blocks.
        bins = np.array_split(np.argsort(lin, kind="stable"), 10)
        xb, yb = (np.array([v[b].mean() for b in bins]) for v in (lin, y))
        return _pav_centres(xb, yb, np.array([len(b) for b in bins], float))
    if kind == "sigmoid":
        return _sigmoid_knots(lin, y)
    raise ValueError(kind)


def _pav_centres(lin: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Isotonic fit, then one knot per PAV block at its (weighted) mean linear score, holding the block's value:
    interpolating between block centres rises through every block instead of stepping (strictly increasing
    between the first and the last centre)."""
    order = np.argsort(lin, kind="stable")
    lin, y, w = lin[order], y[order], w[order]
    fitted = IsotonicRegression(y_min=0.0, y_max=1.0).fit(lin, y, sample_weight=w).predict(lin)
    starts = np.r_[0, np.flatnonzero(np.diff(fitted) > 1e-12) + 1]
    centres = np.add.reduceat(lin * w, starts) / np.add.reduceat(w, starts)
    return centres, fitted[starts]


def _sigmoid_knots(lin: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A logistic of the linear score, 1 / (1 + exp(-s (lin - c))) with s >= 0, fitted by least squares and
    tabulated on 101 knots spanning the training scores and half their range either side (a stored model keeps
    the knot representation; tabulating costs about 0.02 point of 100)."""

    def f(t, s, c):
        return 1.0 / (1.0 + np.exp(-s * (t - c)))

    (s, c), _ = curve_fit(
        f,
        lin,
        y,
        p0=(4.0 / max(float(np.std(lin)), 1e-3), float(np.median(lin))),
        bounds=([0.0, -np.inf], [np.inf, np.inf]),
    )
    lo, hi = float(lin.min()), float(lin.max())
    grid = np.linspace(lo - (hi - lo) / 2, hi + (hi - lo) / 2, 101)
    return grid, f(grid, s, c)


def predict(params: dict, x: np.ndarray) -> np.ndarray:
    x = np.where(np.isnan(x), params["impute"], x)
    lin = ((x - params["mean"]) / params["scale"]) @ np.array(params["coef"]) + params["intercept"]
    return np.clip(np.interp(lin, params["iso_x"], params["iso_y"]), 0.0, 1.0)


def cv_predict(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int = 5, kind: str = BASELINE_MAP
) -> np.ndarray:
    pred = np.zeros(len(y))
    for tr, te in GroupKFold(folds).split(x, y, groups):
        pred[te] = predict(fit(x[tr], y[tr], groups[tr], kind), x[te])
    return pred


def figures(pred: np.ndarray, y: np.ndarray, recs: list[dict]) -> dict[str, float]:
    out = {
        "n": len(y),
        "pearson": float(pearsonr(pred, y)[0]),
        "spearman": float(spearmanr(pred, y)[0]),
        "rmse_5": float(np.sqrt(np.mean((5 * pred - 5 * y) ** 2))),
    }
    ver = np.array([r.get("verification", "") for r in recs])
    cp = np.isin(ver, ["Correct", "Partially correct"])
    if cp.sum() and len(set(ver[cp])) == 2:
        out["auc_correct_vs_partial"] = float(roc_auc_score(ver[cp] == "Correct", pred[cp]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--collect", choices=["saf", "mohler", "exemplars", "redflags"])
    ap.add_argument("--anchors", action="store_true", help="with --collect: read the questions' anchors instead")
    ap.add_argument("--limit", type=int, help="with --collect: stop after this many more answers")
    ap.add_argument("--write-model", action="store_true")
    ap.add_argument("--reread-off-topic", choices=["saf", "mohler", "exemplars", "redflags"])
    ap.add_argument("--reread", choices=["saf", "mohler", "exemplars", "redflags"], help="with --questions")
    ap.add_argument("--questions", help="comma-separated question ids whose stored reads --reread replaces")
    a = ap.parse_args()
    if a.reread:
        reread_questions(a.reread, set((a.questions or "").split(",")) - {""})
        return 0
    if a.reread_off_topic:
        reread_off_topic(a.reread_off_topic)
        return 0
    if a.collect:
        collect_anchors(a.collect) if a.anchors else collect(a.collect, a.limit)
        return 0
    return report(write_model=a.write_model)


def _fold_figures(name: str, x: np.ndarray, y: np.ndarray, groups: np.ndarray, recs: list[dict], keep) -> dict:
    pred = cv_predict(x, y, groups)
    return {"all": figures(pred[keep["all"]], y[keep["all"]], [recs[i] for i in np.flatnonzero(keep["all"])])} | {
        k: figures(pred[m], y[m], [recs[i] for i in np.flatnonzero(m)]) for k, m in keep.items() if k != "all"
    }


def report(write_model: bool) -> int:
    t0 = time.perf_counter()
    saf = [r for r in load("saf") if r["status"] == "scored"]
    moh = [r for r in load("mohler") if r["status"] == "scored"]
    recs = saf + moh
    if not saf or not moh:
        print("no stored reads yet: run --collect saf and --collect mohler first")
        return 1
    y = np.array([r["target"] for r in recs])
    groups = np.array([r["qid"] for r in recs])
    is_saf = np.array([r["qid"].startswith("saf-") for r in recs])
    words = np.array([r["words"] for r in recs])
    for r in recs:  # an empty answer has no reads: every feature missing, the model imputes
        r["row"] = r.get("row") or {}
    keep = {"all": np.ones(len(y), bool), "saf>=5w": is_saf & (words >= 5), "saf all": is_saf, "mohler": ~is_saf}
    print(f"stored reads: SAF {len(saf)} answers, Mohler {len(moh)} (question-grouped 5-fold CV over both)")
    feature_table(recs, y, groups, keep)
    previous_default(moh)
    x = matrix(recs, DEFAULT_FEATURES)
    cv, pred = map_table(x, y, groups, keep, recs)
    print("\nper SAF question (default):")
    for qid in sorted({r["qid"] for r in saf}):
        m = (groups == qid) & (words >= 5)
        if m.sum() > 5 and np.std(y[m]) > 0:
            print(
                f"  {qid:9} n={int(m.sum()):4} pearson {pearsonr(pred[m], y[m])[0]:6.3f} mean target {y[m].mean():.2f}"
                f" mean predicted {pred[m].mean():.2f}"
            )
    criterion_report()
    red = redflag_report()
    band_line = exemplar_report(IDENTITY, DEFAULT_FEATURES, red)
    if write_model:
        write(cv, len(saf), len(moh), red)
    d, m = cv["saf>=5w"], cv["mohler"]
    print(f"\n({time.perf_counter() - t0:.1f} s)")
    print(
        f"default (question-grouped CV): saf pearson {d['pearson']:.3f} spearman {d['spearman']:.3f} "
        f"auc {d.get('auc_correct_vs_partial', math.nan):.3f}; mohler pearson {m['pearson']:.3f} rmse {m['rmse_5']:.3f} "
        f"(calibrated {m['rmse_5_calibrated']:.3f}); exemplars in band {band_line}"
    )
    return 0


def feature_table(recs: list[dict], y: np.ndarray, groups: np.ndarray, keep: dict) -> None:
    """The feature sets side by side: fitted on the human grades (a linear model and the isotonic-steps map, refitted
    in each fold), and unfitted on the anchored scale (the shipped default is one of these)."""
    raw_reads = ("keyidea", "points_mean", "points_max", "points_covered")
    rel_reads = ("keyidea_rel", "points_rel")
    similarity = ("cosine", "evidence_cosine")
    rel_similarity = ("cosine_rel", "evidence_rel")
    baselines = {
        "words (log length ratio) alone": ("log_length_ratio",),
        "MiniLM cosine alone": ("cosine",),
        "key-idea read alone": ("keyidea",),
    }
    fitted = {
        "key points alone": ("points_mean", "points_max", "points_covered"),
        "key idea + key points": raw_reads,
        "reads + similarity (no anchors)": raw_reads + similarity,
        "anchored reads": rel_reads,
        "anchored reads + anchored similarity": rel_reads + rel_similarity,
        "anchored coverage": DEFAULT_FEATURES,
        "all features but length": tuple(f for f in FEATURES if f != "log_length_ratio"),
        # Compared, never chosen: the answer's length must not move its score (padding would pay).
        "all features, length included": FEATURES,
    }
    head = f"{'method':45} {'SAF>=5w r':>9} {'rho':>6} {'AUC C/P':>7} {'SAF all r':>9} {'Mohler r':>8} {'RMSE':>5}"
    print(head + f" {'RMSE cal':>8}")

    def line(label: str, f: dict, extra: str = "") -> None:
        s5, sa, mo = f["saf>=5w"], f["saf all"], f["mohler"]
        print(
            f"{label:45} {s5['pearson']:9.3f} {s5['spearman']:6.3f} {s5.get('auc_correct_vs_partial', math.nan):7.3f}"
            f" {sa['pearson']:9.3f} {mo['pearson']:8.3f} {mo['rmse_5']:5.2f} {mo['rmse_5_calibrated']:8.2f}{extra}"
        )

    for label, feats in (baselines | fitted).items():
        f = _fold_figures(label, matrix(recs, feats), y, groups, recs, keep)
        for k in f:
            f[k]["rmse_5_calibrated"] = f[k]["rmse_5"]
        line(f"fitted: {label}", f)
    ex = [r for r in load("exemplars") if r["status"] == "scored" and r.get("row")]
    print(f"unfitted, on the anchored scale (ex: the {len(ex)} ML bank exemplars in band, weak/partial/strong)")
    for label, value in UNFITTED.items():
        pred = np.array([_or_unfitted(value(r), r) for r in recs])
        scored = [(100 * _or_unfitted(value(r), r), r) for r in ex]
        bands = [[lo <= p <= hi for p, r in scored if r["band"] == b for lo, hi in [r["range"]]] for b in BAND_TARGET]
        extra = "  ex " + "/".join(f"{100 * np.mean(b):.0f}%" for b in bands if b)
        line(f"unfitted: {label}", _with_calibrated(pred, pred[:, None], y, groups, keep, recs), extra)


def _or_unfitted(value: float, r: dict) -> float:
    """A score on the anchored scale, clipped to 0-1; where the question's anchors are missing, the unfitted mean of
    the raw reads, as the grader does; 0 for an answer with no reads."""
    if math.isnan(value):
        value = unfitted_fraction(r["row"]) if r["row"] else 0.0
    return float(np.clip(value, 0.0, 1.0))


def _coverage(r: dict, evidence: bool) -> float:
    """The anchored coverage counting the evidence point on every question (True) or on none (False; the default
    counts it on questions of one or two key points, grade_model.evidence_point)."""
    row, n = r["row"], len(r.get("points") or [])
    m = min(n, _points_required().get(r["qid"]) or n)  # the points the coverage counts
    parts = [row.get("points_rel", math.nan) * m, row.get("keyidea_rel", math.nan)]
    if evidence:
        parts.append(row.get("evidence_rel", math.nan))
    return sum(parts) / (m + len(parts) - 1)


# Scores on the anchored scale with no fitted parameter (clipped to 0-1); * marks the default. Anchored coverage: the
# key points with the key idea as one more point, and on questions of one or two key points the evidence cosine
# (anchored) as another; the rows beside it count the evidence point on every question, or on none (session 9).
UNFITTED = {
    "anchored key points": lambda r: r["row"].get("points_rel", math.nan),
    "anchored coverage *": lambda r: r["row"].get("coverage_rel", math.nan),
    "coverage + evidence, every question": lambda r: _coverage(r, True),
    "coverage, no evidence point": lambda r: _coverage(r, False),
    "anchored key idea": lambda r: r["row"].get("keyidea_rel", math.nan),
}


def _with_calibrated(pred: np.ndarray, x: np.ndarray, y: np.ndarray, groups: np.ndarray, keep: dict, recs) -> dict:
    """Figures of an unfitted score, with the RMSE it has once mapped onto the graders' scale by an isotonic map
    fitted in the same question-grouped folds (what `evaluator calibrate` does with your grades)."""
    cal = cv_predict(x, y, groups)
    out = {}
    for k, m in keep.items():
        out[k] = figures(pred[m], y[m], [recs[i] for i in np.flatnonzero(m)])
        out[k]["rmse_5_calibrated"] = float(np.sqrt(np.mean((5 * cal[m] - 5 * y[m]) ** 2)))
    return out


def _distinct(pred: np.ndarray) -> int:
    """Distinct scores as a reader sees them (0.1 point out of 100): fewer means more answers tied."""
    return len(set(np.round(100 * pred, 1)))


def map_table(x: np.ndarray, y: np.ndarray, groups: np.ndarray, keep: dict, recs: list[dict]) -> tuple:
    """The default's scale: the anchored coverage as it is (shipped), against the monotone maps fitted onto the
    Mohler and SAF grades (same folds). Returns the default's figures and its scores."""
    print(
        "\nscale of the anchored coverage: as it is, or mapped onto Mohler+SAF grades (ex: exemplars, before red flags)"
    )
    head = f"{'map':22} {'SAF>=5w r':>9} {'rho':>6} {'AUC C/P':>7} {'Mohler r':>8} {'RMSE':>5}"
    print(head + f" {'SAF distinct':>12} {'ex distinct':>11} {'ex weak/partial/strong in band':>31} {'ordered':>7}")
    shipped = np.array([_or_unfitted(v, r) for v, r in zip(x[:, 0], recs, strict=True)])
    res = {}
    for kind in ("none (shipped)", *MAPS):
        params = IDENTITY if kind.startswith("none") else fit(x, y, groups, kind)
        pred = shipped if kind.startswith("none") else cv_predict(x, y, groups, kind=kind)
        cv = {k: figures(pred[m], y[m], [recs[i] for i in np.flatnonzero(m)]) for k, m in keep.items()}
        ex = exemplar_figures(params, DEFAULT_FEATURES) or {"by_band": {}, "ordered": 0, "questions": 0}
        bands = "/".join(
            f"{100 * np.mean([hit for _p, hit in ex['by_band'].get(b, [(0, False)])]):.0f}%"
            for b in ("weak", "partial", "strong")
        )
        n_ex = sum(len(g) for g in ex["by_band"].values())
        s5, mo = cv["saf>=5w"], cv["mohler"]
        res[kind] = (cv, pred)
        print(
            f"{kind:22} {s5['pearson']:9.3f} {s5['spearman']:6.3f} {s5.get('auc_correct_vs_partial', math.nan):7.3f}"
            f" {mo['pearson']:8.3f} {mo['rmse_5']:5.2f} {_distinct(pred[keep['saf>=5w']]):>7}/{s5['n']:<4}"
            f" {ex.get('distinct', 0):>6}/{n_ex:<4} {bands:>31} {ex['ordered']:>4}/{ex['questions']}"
        )
    cv, pred = res["none (shipped)"]
    cal = res[BASELINE_MAP][1]  # the isotonic steps fitted in the same folds: the calibrated score
    for k, m in keep.items():
        cv[k]["rmse_5_calibrated"] = float(np.sqrt(np.mean((5 * cal[m] - 5 * y[m]) ** 2)))
    print("shipped: none. A map fitted on these graders lifts every answer toward their mean grade (0.8 of full marks)")
    return cv, pred


def previous_default(moh: list[dict]) -> None:
    """The previous default for reference-only sets (one key-idea view read, prompt without key points, plus
    similarity features; stored in results/mohler-keyidea.jsonl for all 1418 Mohler answers), fitted here by the
    same procedure on Mohler alone: on the answers read with the new prompt, and on all of them."""
    path = RESULTS / "mohler-keyidea.jsonl"
    if not path.exists():
        return
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    grade = {r["answer_id"]: r["target"] for r in moh}
    with open(DATASETS / "mohler" / "answers.csv", encoding="utf-8", newline="") as f:
        target = {r["answer_id"]: float(r["grade"]) / 5 for r in csv.DictReader(f)}
    feats = []
    for r in rows:
        c = r.get("calibration_row") or {}
        keyidea = (r.get("views") or {}).get("keyidea", {}).get("expected")
        feats.append(
            (
                r["answer_id"],
                r["question_id"],
                [
                    keyidea / 5 if keyidea is not None else math.nan,
                    c.get("similarity", math.nan),
                    c.get("lexical_overlap", math.nan),
                    math.log1p(c.get("answer_chars") or 0),
                ],
            )
        )
    for label, subset in (("same answers", [f for f in feats if f[0] in grade]), ("all 1418", feats)):
        if len(subset) < 50:
            continue
        x = np.array([f[2] for f in subset], dtype=float)
        y = np.array([target[f[0]] for f in subset])
        g = np.array([f[1] for f in subset])
        fg = figures(cv_predict(x, y, g), y, [{} for _ in subset])
        print(
            f"previous default (key-idea view + similarity, Mohler only, {label}, n={len(subset)}): "
            f"pearson {fg['pearson']:.3f} rmse {fg['rmse_5']:.3f}"
        )


def criterion_report() -> None:
    """Do the four ml-screening criterion reads earn their place? The previous default read them (plus one
    holistic read) on all 255 exemplars (results/exemplars.jsonl): compare how well each separates the bands."""
    path = RESULTS / "exemplars.jsonl"
    if not path.exists():
        return
    rs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    band = np.array([{"weak": 0, "partial": 1, "strong": 2}[r["band"]] for r in rs])
    ends = band != 1
    print("\ncriterion reads on the 255 exemplars (previous default, stored): band Spearman / AUC strong vs weak")
    for key, label in (("criteria_only", "4 criterion reads, weighted"), ("holistic_only", "1 holistic read")):
        x = np.array([r[key] for r in rs])
        auc = roc_auc_score(band[ends] == 2, x[ends])
        print(f"  {label:28} {spearmanr(x, band)[0]:.3f} / {auc:.3f}")


def exemplar_figures(params: dict, features: tuple[str, ...], gate: dict | None = None) -> dict | None:
    """The ML bank exemplars scored 0-100 by a fitted model and, as the grader does, the red flags that `gate` lets
    act: per band the scores and whether each lies in its band's range, the worst band's in-band share, on how many
    questions strong > partial > weak, distinct scores, and how many answers a red flag acted on."""
    ex = [r for r in load("exemplars") if r["status"] == "scored" and r.get("row")]
    if not ex:
        return None
    x = matrix(ex, features)
    pred = predict(params, x)
    if params.get("require"):  # as the grader: without the question's anchors, the unfitted formula
        pred = np.where(np.isnan(x).any(axis=1), [_or_unfitted(math.nan, r) for r in ex], pred)
    hits = [red_flag_hits(r, gate) if gate else [] for r in ex]
    pred = 100 * np.array([apply_red_flags(float(p), h) for p, h in zip(pred, hits, strict=True)])
    flagged: dict[str, int] = {}
    for r, h in zip(ex, hits, strict=True):
        flagged[r["band"]] = flagged.get(r["band"], 0) + bool(h)
    by_band: dict[str, list[tuple[float, bool]]] = {}
    per_q: dict[str, dict[str, float]] = {}
    for r, p in zip(ex, pred, strict=True):
        lo, hi = r["range"]
        by_band.setdefault(r["band"], []).append((p, lo <= p <= hi))
        per_q.setdefault(r["qid"], {})[r["band"]] = p
    full = [v for v in per_q.values() if len(v) == 3]
    return {
        "by_band": by_band,
        "worst": min(100 * np.mean([hit for _p, hit in g]) for g in by_band.values()),
        "ordered": sum(v["strong"] > v["partial"] > v["weak"] for v in full),
        "questions": len(full),
        "distinct": _distinct(pred / 100),
        "flagged": flagged,
    }


def exemplar_report(params: dict, features: tuple[str, ...], gate: dict | None = None) -> str:
    ex = exemplar_figures(params, features, gate)
    if ex is None:
        print("\nexemplars: no stored reads (run --collect exemplars)")
        return "n/a"
    print("\nML bank exemplars (never used for fitting), scored by the shipped default:")
    for band in ("strong", "partial", "weak"):
        got = ex["by_band"].get(band, [])
        hits, vals = [h for _p, h in got], [p for p, _h in got]
        print(
            f"  {band:8} n={len(got):3} in band {100 * np.mean(hits):5.1f}%  mean score {np.mean(vals):5.1f}"
            f"  red flag acted on {ex['flagged'].get(band, 0)}"
        )
    print(f"  strong > partial > weak on {ex['ordered']} of {ex['questions']} questions")
    print(f"  {ex['distinct']} distinct scores (0.1 point) for {sum(len(g) for g in ex['by_band'].values())} exemplars")
    return f"{ex['worst']:.0f}% (lowest band), ordered {ex['ordered']}/{ex['questions']}"


@functools.cache
def _bank() -> dict[str, Question]:
    return {
        q.id: q for q in build_evaluator(use_cache=False).resources.load_eval_set("ml-screening").eval_set.questions
    }


def claim_rows(r: dict) -> list[tuple[str, ClaimFeatures, float | None]]:
    """Per red flag read on a stored answer, as the grader sees it (key_point_verdict.claim_flags): its id, its
    features, and the anchored reading of the key point its claim contradicts (None without anchors)."""
    q, claims, sims = _bank()[r["qid"]], r.get("claims") or {}, r.get("claim_similarity") or {}
    ids = list(claims)
    feats = claim_features([claims[i] for i in ids], [sims.get(i, 0.0) for i in ids])
    defs = {f.id: f for f in q.red_flags}
    near = nearest_points(get_embedder(), [defs[i].claim or defs[i].description for i in ids], key_points_of(q))
    positions = point_positions(r["points"], _anchors().get(r["qid"]))
    return [(i, f, positions[k] if positions and k >= 0 else None) for i, f, k in zip(ids, feats, near, strict=True)]


@functools.cache
def _anchors() -> dict[str, Anchors]:
    return {a["qid"]: Anchors(**a["anchors"]) for a in load("anchors") if a["anchors"]}


def red_flag_hits(r: dict, gate: dict) -> list[RedFlag]:
    """The red flags that act on a stored answer's score under `gate`, as the grader applies them."""
    defs = {f.id: f for f in _bank()[r["qid"]].red_flags}
    return [defs[i] for i, f, pos in claim_rows(r) if acts(gate, f, pos)]


# The guard levels tried: a flag does not act when the key point its claim contradicts reads at least this far from
# an empty reply toward the reference (None: no guard).
STATED_POINT = (None, 0.7, 0.8, 0.9, 1.0)


def redflag_report() -> dict:
    """The red-flag detector, measured and chosen on the red-flag set (question-grouped CV): the claim read alone
    against the logistic combination of red_flags.claim_features; then the threshold and the stated-point guard.
    A flag that caps or penalises a score must not be wrong: the threshold is the lowest from which no clean pair of
    the set fires at it or any higher threshold, and the guard the one that then keeps the most recall."""
    recs = [r for r in load("redflags") if r["status"] == "scored"]
    if not recs:
        print("\nred flags: no stored reads (run --collect redflags)")
        return {}
    rows = [(r, fid, f, pos) for r in recs for fid, f, pos in claim_rows(r)]
    labels = np.array([r["shows"] == fid for r, fid, _f, _p in rows])
    x = np.array([f.vector() for _r, _fid, f, _p in rows])
    groups = np.array([r["qid"] for r, *_ in rows])
    positions = np.array([np.nan if p is None else p for *_, p in rows])
    cv = np.zeros(len(rows))
    for train, test in GroupKFold(5).split(x, labels, groups):
        cv[test] = LogisticRegression(C=10.0).fit(x[train], labels[train]).predict_proba(x[test])[:, 1]
    auc_read, auc = float(roc_auc_score(labels, x[:, 0])), float(roc_auc_score(labels, cv))
    grid = np.round(np.arange(0.3, 0.96, 0.05), 2)
    best = None
    for bar in STATED_POINT:
        free = unguarded(positions, bar)
        for t in grid:
            fired = [(cv >= u) & free for u in grid if u >= t]
            if any((f & ~labels).any() for f in fired) or not (fired[0] & labels).any():
                continue
            recall = float((fired[0] & labels).sum() / labels.sum())
            if best is None or recall > best[2]:
                best = (bar, float(t), recall)
            break
    print(f"\nred-flag set: {len(recs)} answers, {int(labels.sum())} flagged pairs of {len(labels)}")
    print(f"  claim read alone: AUC {auc_read:.3f} (in sample)")
    print(f"  detector (claim read, similarity, each against the answer's other claims): CV AUC {auc:.3f}")
    for t in (0.5, 0.55, 0.6, 0.7):
        prec, rec, _f1 = _prf(labels, cv >= t)
        print(f"    at {t:.2f} without the guard: precision {prec:.2f} recall {rec:.2f}")
    if best is None:
        print("  no threshold fires without a false flag: shown as possible only")
        return {"auc": round(auc, 4), "threshold": 1.0, "effective": False}
    bar, t, recall = best
    free = unguarded(positions, bar)
    prec, rec, _f1 = _prf(labels, (cv >= t) & free)
    effective = auc >= 0.75
    print(
        f"  threshold {t:.2f}, guard {bar}: precision {prec:.2f} recall {rec:.2f} (CV); "
        f"{'acts on scores' if effective else 'shown as possible only (needs AUC >= 0.75)'}"
    )
    final = LogisticRegression(C=10.0).fit(x, labels)
    weights = dict(zip(WEIGHTS, (round(float(w), 4) for w in final.coef_[0]), strict=True))
    return (
        {"auc": round(auc, 4), "threshold": t, "precision": round(prec, 3), "recall": round(rec, 3)}
        | {"effective": effective, "b": round(float(final.intercept_[0]), 4)}
        | weights
        | ({"stated_point": bar} if bar is not None else {})
    )


def unguarded(positions: np.ndarray, bar: float | None) -> np.ndarray:
    """The pairs the stated-point guard at `bar` lets act: those whose contradicted key point reads below it."""
    return np.ones(len(positions), bool) if bar is None else ~(positions >= bar)


def _prf(labels: np.ndarray, hit: np.ndarray) -> tuple[float, float, float]:
    tp = float((labels & hit).sum())
    prec = tp / hit.sum() if hit.sum() else 0.0
    rec = tp / labels.sum() if labels.sum() else 0.0
    return prec, rec, (2 * prec * rec / (prec + rec) if prec + rec else 0.0)


def write(cv: dict, n_saf: int, n_moh: int, red: dict) -> None:
    ev = build_evaluator(use_cache=False)
    d = ev.judge.describe()
    model = anchored_coverage(
        fitted_for={"judge_backend": d["backend"], "judge_model": d["model"], "prompt_hash": ev.prompts.points_hash}
        | ({"read_version": str(d["read_version"])} if d.get("read_version") else {}),
        trained_on={"saf": n_saf, "mohler": n_moh},
        cv={k: {m: round(v, 4) for m, v in f.items()} for k, f in cv.items()},
        red_flags=red,
    )
    path = ROOT / "rubrics" / MODEL_FILE
    path.write_text(model.model_dump_json(indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    raise SystemExit(main())
