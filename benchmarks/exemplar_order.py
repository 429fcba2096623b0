"""Sanity check on the bank: are the strong, partial and weak exemplars scored in that order?

    python benchmarks/exemplar_order.py [--judge local] [--limit N] [--out benchmarks/results/exemplars.jsonl]

Prints the mean final score per band, the gaps, and the share of questions where strong > partial > weak
holds, per criterion-based and holistic reading (a comparison of the two probability readings).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from statistics import mean

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluator.arithmetic import criteria_fraction  # noqa: E402
from evaluator.scoring import build_evaluator  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--judge", default="local")
    p.add_argument("--limit", type=int, default=0, help="only the first N questions (0 = all)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "exemplars.jsonl"))
    a = p.parse_args()
    ev = build_evaluator(judge=a.judge, explain=False)
    les = ev.resources.load_eval_set("ml-screening")
    qs = les.eval_set.questions[: a.limit or None]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done[(r["question_id"], r["band"])] = r
    t0 = time.perf_counter()
    with open(out, "a", encoding="utf-8") as f:
        for q in qs:
            rubric = ev.resources.rubric_for(les, q).rubric
            for e in q.exemplars:
                if (q.id, e.band.value) in done:
                    continue
                v = ev.score(les, q, e.answer)
                levels = {c.id: c.level for c in v.criteria if c.level is not None}
                r = {
                    "question_id": q.id,
                    "band": e.band.value,
                    "level": q.level.value,
                    "final": v.score_100,
                    "criteria_only": 100 * criteria_fraction(levels, rubric)
                    if len(levels) == len(rubric.criteria)
                    else None,
                    "holistic_only": 25 * v.holistic_level if v.holistic_level is not None else None,
                    "red_flags": [x.id for x in v.red_flags if x.probability is None or x.probability >= 0.8],
                    "intended": list(e.score_range),
                    "seconds": v.usage.seconds,
                }
                f.write(json.dumps(r) + "\n")
                f.flush()
                done[(q.id, e.band.value)] = r
    print(f"graded in {time.perf_counter() - t0:.0f} s (cached rows excluded)")
    by_q: dict[str, dict[str, dict]] = {}
    for (qid, band), r in done.items():
        if any(q.id == qid for q in qs):
            by_q.setdefault(qid, {})[band] = r
    full = {k: v for k, v in by_q.items() if len(v) == 3}
    for key in ("final", "criteria_only", "holistic_only"):
        s = [full[q]["strong"][key] for q in full]
        pa = [full[q]["partial"][key] for q in full]
        w = [full[q]["weak"][key] for q in full]
        order = sum(full[q]["strong"][key] > full[q]["partial"][key] > full[q]["weak"][key] for q in full)
        print(
            f"{key:14s} mean strong {mean(s):5.1f}  partial {mean(pa):5.1f}  weak {mean(w):5.1f}  "
            f"gaps {mean(s) - mean(pa):+5.1f} / {mean(pa) - mean(w):+5.1f}  "
            f"order holds on {order}/{len(full)} questions ({100 * order / len(full):.0f}%)"
        )


if __name__ == "__main__":
    main()
