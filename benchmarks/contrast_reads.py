"""Does the judge tell a key point from a false statement in the same words? A read that vocabulary cannot win.

    python benchmarks/contrast_reads.py --collect    # read what is missing (embedded judge; about an hour)
    python benchmarks/contrast_reads.py              # reprint the figures from the stored reads (seconds)

The key-point read asks whether an answer states a point, and the small judge says yes to an answer that only
names the point's terms (README, gaming section). Here each point of the ML bank is paired with a false statement
in its own vocabulary (benchmarks/data/key_point_contrasts.yaml) and the judge is asked which of the two the answer
makes (1, 2, or 0 for neither), after the same shared prefix and fenced answer as the grader's reads. The figure is
P(1) / (P(1) + P(2)), true statement first; like the grader's reads it is placed between what the judge reads for
an empty reply (0) and for the question's reference answer (1).

Read: the 255 bank exemplars, each question's anchors, and on the seven gaming-corpus questions the weak and short
correct answers and the three vocabulary styles' attempts (benchmarks/data/gaming_corpus.yaml). Stored reads:
benchmarks/results/contrast-reads.jsonl (no answer text; the answers are in the bank and the corpus).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import gaming  # noqa: E402
import quality  # noqa: E402

from evaluator.grade_model import MIN_SPAN  # noqa: E402
from evaluator.scoring import ANCHOR_FLOOR  # noqa: E402

CONTRASTS = ROOT / "benchmarks" / "data" / "key_point_contrasts.yaml"
STORED = ROOT / "benchmarks" / "results" / "contrast-reads.jsonl"
ASK = (
    'Which of these two statements does the candidate answer make? 1 = "{a}" 2 = "{b}" 0 = neither. '
    "Reply with the digit only."
)
VOCABULARY_STYLES = ("keyword-stuffing-in-prose", "name-dropping-sentences", "topic-tour")
BANDS = ("strong", "partial", "weak")
BLEND_WEIGHTS = (0.25, 0.5, 0.75)


def contrasts() -> dict[str, list[str]]:
    data = yaml.safe_load(CONTRASTS.read_text(encoding="utf-8"))
    bank = quality._bank()
    for qid, falses in data.items():
        if qid not in bank:
            raise SystemExit(f"{CONTRASTS}: {qid} is not a question of the ML bank")
        if len(falses) != len(bank[qid].key_points):
            raise SystemExit(
                f"{CONTRASTS}: {qid} has {len(falses)} false statements for {len(bank[qid].key_points)} key points"
            )
    return data


@functools.cache
def _corpus() -> dict:
    return gaming.load_corpus()


def texts_of(qid: str) -> dict[str, str]:
    """What is read for one question: the anchors, its exemplars, and on gaming-corpus questions the baselines and
    the vocabulary attempts."""
    q = quality._bank()[qid]
    out = {"empty": ANCHOR_FLOOR, "reference": q.references[0]} | {e.band: e.answer for e in q.exemplars}
    corpus = _corpus()
    cq = {c["id"]: c for c in corpus["questions"]}
    if qid in cq:
        weak = gaming.weak_answers([qid])[qid]
        out["correct"] = cq[qid]["correct_short"]
        for a in corpus["attempts"]:
            if a["style"] in VOCABULARY_STYLES and a.get("question") == qid:
                out[a["id"]] = gaming.attacked(a, weak)
    return out


def collect() -> None:
    from evaluator import build_evaluator
    from evaluator.key_points import key_points_of

    ev = build_evaluator(None, use_cache=False)
    backend = ev.judge.backend
    stored = {(r["qid"], r["text"]) for r in load()}
    t0, n = time.perf_counter(), 0
    for qid, falses in contrasts().items():
        q = quality._bank()[qid]
        points = key_points_of(q)
        for name, text in texts_of(qid).items():
            if (qid, name) in stored:
                continue
            reads = []
            for point, false in zip(points, falses, strict=True):
                base = ev.prompts.point_read(q, points, text, "read_point", n=1, point=point)
                read, _ = backend.read_digits(
                    dataclasses.replace(base, ask=ASK.format(a=point, b=false)), ["0", "1", "2"]
                )
                p = read.probabilities
                reads.append({"p": round(p["1"] / (p["1"] + p["2"]), 4), "neither": round(p["0"], 4)})
            with STORED.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"qid": qid, "text": name, "reads": reads}) + "\n")
            n += 1
        print(f"{qid}: {n} texts read, {time.perf_counter() - t0:.0f} s", flush=True)


def load() -> list[dict]:
    if not STORED.exists():
        return []
    return [json.loads(line) for line in STORED.read_text(encoding="utf-8").splitlines() if line]


def positions(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per question and text, the mean of its points' contrast reads placed between the empty reply and the
    reference (the grader's MIN_SPAN floor on the gap)."""
    by: dict[str, dict[str, np.ndarray]] = {}
    for r in rows:
        by.setdefault(r["qid"], {})[r["text"]] = np.array([x["p"] for x in r["reads"]])
    out = {}
    for qid, d in by.items():
        if "empty" in d and "reference" in d:
            lo, hi = d["empty"], d["reference"]
            out[qid] = {k: float(np.mean((v - lo) / np.maximum(hi - lo, MIN_SPAN))) for k, v in d.items()}
    return out


def current_coverage() -> dict[tuple[str, str], float]:
    """The shipped score's anchored coverage of each exemplar, from the quality benchmark's stored reads."""
    return {
        (r["qid"], r["band"]): r["row"]["coverage_rel"]
        for r in quality.load("exemplars")
        if r["status"] == "scored" and r.get("row") and not math.isnan(r["row"].get("coverage_rel", math.nan))
    }


Score = Callable[[str, str], float]  # (question id, band) -> score on the anchored scale


def blend(cur: dict, pos: dict, w: float) -> Score:
    """(1 - w) * the shipped coverage + w * the contrast read: w 0 is the shipped score, 1 the contrast read."""
    return lambda q, b: (1 - w) * cur[(q, b)] + w * pos[q][b]


def ordered(score: Score, qs: list[str]) -> int:
    return sum(score(q, "strong") > score(q, "partial") > score(q, "weak") for q in qs)


def auc(score: Score, qs: list[str], hi: str, lo: str) -> float:
    return float(roc_auc_score([1] * len(qs) + [0] * len(qs), [score(q, hi) for q in qs] + [score(q, lo) for q in qs]))


def in_band(score: Score, qs: list[str]) -> str:
    """Per band (strong/partial/weak), the share (%) of exemplars whose score, clipped to 0-100 as the grader clips
    it, lies in the exemplar's own score range in the bank."""
    bank = quality._bank()
    shares = []
    for b in BANDS:
        ranges = {q: next(e.score_range for e in bank[q].exemplars if e.band == b) for q in qs}
        shares.append(np.mean([ranges[q][0] <= 100 * min(max(score(q, b), 0.0), 1.0) <= ranges[q][1] for q in qs]))
    return "/".join(f"{100 * x:.0f}" for x in shares)


def report() -> int:
    pos = positions(load())
    cur = current_coverage()
    full = [q for q, d in pos.items() if all(b in d for b in BANDS) and all((q, b) in cur for b in BANDS)]
    if not full:
        print("no stored reads: run with --collect")
        return 1
    contrast, shipped = blend(cur, pos, 1.0), blend(cur, pos, 0.0)
    print(f"bank exemplars of {len(full)} questions: contrast read (anchored) against the shipped coverage")
    print(f"{'':24}{'contrast':>10}{'shipped':>10}")
    for b in BANDS:
        print(
            f"  mean, {b:16}{np.mean([contrast(q, b) for q in full]):10.2f}{np.mean([shipped(q, b) for q in full]):10.2f}"
        )
    for hi, lo in (("strong", "weak"), ("strong", "partial"), ("partial", "weak")):
        print(f"  AUC {hi} vs {lo:10}{auc(contrast, full, hi, lo):10.3f}{auc(shipped, full, hi, lo):10.3f}")
    print(f"  strong > partial > weak{ordered(contrast, full):9d}{ordered(shipped, full):10d}   of {len(full)}")
    print("blends (1 - w) * shipped + w * contrast; in sample: a weight picked here would be fitted on the exemplars")
    for w in BLEND_WEIGHTS:
        f = blend(cur, pos, w)
        print(
            f"  w {w:.2f}: AUC strong vs partial {auc(f, full, 'strong', 'partial'):.3f}, "
            f"partial vs weak {auc(f, full, 'partial', 'weak'):.3f}, ordered {ordered(f, full)} of {len(full)}, "
            f"in band {in_band(f, full)}% (strong/partial/weak, before red flags)"
        )
    print(f"  shipped alone: in band {in_band(shipped, full)}%")
    print(
        f"  the weight chosen in 5-fold CV over questions (5 shuffles): ordered {blend_cv(full, pos, cur)} of {len(full)}"
    )
    vocabulary_report(pos)
    return 0


def blend_cv(full: list[str], pos: dict, cur: dict) -> str:
    """Out of sample: the blend weight that orders the most training questions (ties to 0.5), on held-out questions;
    the counts of five shuffles."""
    grid = np.round(np.arange(0.0, 1.0001, 0.05), 2)
    counts = []
    for seed in range(5):
        total = 0
        for tr, te in KFold(5, shuffle=True, random_state=seed).split(full):
            train = [full[i] for i in tr]
            w = max(grid, key=lambda w: (ordered(blend(cur, pos, w), train), -abs(w - 0.5)))
            total += ordered(blend(cur, pos, float(w)), [full[i] for i in te])
        counts.append(total)
    return ", ".join(str(c) for c in counts)


def vocabulary_report(pos: dict[str, dict[str, float]]) -> None:
    qs = [q for q, d in pos.items() if "correct" in d]
    if not qs:
        return
    stored = gaming.RESULTS.parent / "gaming-vocabulary-030.jsonl"
    scores = {}
    for line in stored.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if r.get("question_id"):
            scores[(r.get("attempt_id") or r["kind"], r["question_id"])] = r["score_100"]
    print("\nvocabulary attempts (appended to the weak answer): contrast read (anchored), shipped score in brackets")
    above_weak, above_correct, n = 0, 0, 0
    gap_contrast: list[float] = []
    gap_shipped: list[float] = []
    for q in qs:
        d = pos[q]
        line = f"  {q[:26]:27} weak {d['weak']:5.2f} ({scores.get(('weak', q), math.nan):5.1f})"
        line += f"  correct {d['correct']:5.2f} ({scores.get(('correct', q), math.nan):5.1f})"
        for name, v in d.items():
            if name.startswith(VOCABULARY_STYLES):
                n += 1
                above_weak += v >= d["weak"] + 0.05
                above_correct += v >= d["correct"]
                gap_contrast.append((v - d["weak"]) / (d["correct"] - d["weak"]))
                s, sw, sc = scores.get((name, q)), scores.get(("weak", q)), scores.get(("correct", q))
                if s is not None and sw is not None and sc is not None and sc != sw:
                    gap_shipped.append((s - sw) / (sc - sw))
                line += f"  {name.split('-')[0][:7]} {v:5.2f} ({scores.get((name, q), math.nan):5.1f})"
        print(line)
    print(
        f"  attempts reading 0.05 or more above their weak answer: {above_weak}/{n}; at or above the correct: {above_correct}/{n}"
    )
    print(
        "  share of the weak-to-correct gap an attempt buys, median: contrast read "
        f"{np.median(gap_contrast):.2f}, shipped score {np.median(gap_shipped):.2f}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--collect", action="store_true", help="read what is not stored yet (embedded judge)")
    a = ap.parse_args()
    if a.collect:
        collect()
        return 0
    return report()


if __name__ == "__main__":
    sys.exit(main())
