"""Can a candidate game the grade? Attempts from benchmarks/data/gaming_corpus.yaml against the public library.

    python benchmarks/gaming.py                       # score with the default judge, store, print the table
    python benchmarks/gaming.py --judge fake:overlap  # the same with a test fake (smoke test, seconds)
    python benchmarks/gaming.py --limit 5             # 5 attempts spread over the styles
    python benchmarks/gaming.py --from-stored         # reprint the table from benchmarks/results/gaming.jsonl

For every attempt and question it scores (a) the bank's weak answer alone, (b) the weak answer with the attempt
(appended, prepended, or, for keyword lists, instead of it: then compared with the corpus's short correct
answer), and (c) for answers the grader flagged or the screen detects, the attacked answer with the detected
text removed. Each attempt goes on one junior, one mid and one senior question (rotating), or on every corpus
question with --all-questions. Scores are score_100 from `score_answer`, so this measures whatever scoring
the library has. The stored file holds scores and flags per answer, never answer text (it is in the corpus).
False flags are read from the screen over the bank exemplars and the Mohler and SAF answers in ../shared.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluator import build_evaluator, score_answer  # noqa: E402
from evaluator.guards import injection_spans  # noqa: E402
from evaluator.screen import screen  # noqa: E402

CORPUS = ROOT / "benchmarks" / "data" / "gaming_corpus.yaml"
BANK = ROOT / "eval_sets" / "ml-screening.yaml"
SHARED = ROOT.parent / "shared" / "datasets"
RESULTS = ROOT / "benchmarks" / "results" / "gaming.jsonl"
RAISE = 5.0


def load_corpus(path: Path = CORPUS) -> dict:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    styles = set(data["split"]["tuning"]) | set(data["split"]["held_out"])
    qids = {q["id"] for q in data["questions"]}
    for i, a in enumerate(data["attempts"]):
        where = f"{path}: attempts[{i}] ({a.get('id')})"
        if a.get("style") not in styles:
            raise SystemExit(
                f"{where}: style {a.get('style')!r} is in neither split; add it to split.tuning or split.held_out"
            )
        if a.get("placement") not in ("append", "prepend", "replace"):
            raise SystemExit(f"{where}: placement must be append, prepend or replace")
        if a["placement"] == "replace" and a.get("question") not in qids:
            raise SystemExit(f"{where}: a replacing attempt needs `question:` naming one of {sorted(qids)}")
        if a.get("question") is not None and a["question"] not in qids:
            raise SystemExit(f"{where}: `question:` must name one of {sorted(qids)}")
    return data


def weak_answers(qids: list[str]) -> dict[str, str]:
    bank = yaml.safe_load(BANK.read_text(encoding="utf-8"))
    out = {}
    for q in bank["questions"]:
        if q["id"] in qids:
            weak = [e["answer"] for e in q.get("exemplars", []) if e.get("band") == "weak"]
            if not weak:
                raise SystemExit(f"{BANK}: question {q['id']} has no exemplar with band: weak")
            out[q["id"]] = weak[0]
    missing = set(qids) - set(out)
    if missing:
        raise SystemExit(f"{CORPUS}: questions not in the bank: {sorted(missing)}")
    return out


def placements(corpus: dict, all_questions: bool) -> list[tuple[dict, str]]:
    """(attempt, question id) pairs: replacing attempts, and attempts written for one question (`question:`), on
    that question; the others on one question of each level, rotating, so every attempt meets several questions of
    several levels."""
    by_level: dict[str, list[str]] = defaultdict(list)
    for q in corpus["questions"]:
        by_level[q["level"]].append(q["id"])
    out = []
    for i, a in enumerate(corpus["attempts"]):
        if a["placement"] == "replace" or a.get("question"):
            out.append((a, a["question"]))
        elif all_questions:
            out += [(a, q["id"]) for q in corpus["questions"]]
        else:
            out += [(a, ids[i % len(ids)]) for ids in by_level.values()]
    return out


def attacked(attempt: dict, weak: str) -> str:
    if attempt["placement"] == "replace":
        return attempt["text"]
    if attempt["placement"] == "prepend":
        return attempt["text"] + "\n\n" + weak
    return weak + "\n\n" + attempt["text"]


def spread(attempts: list[dict], n: int) -> list[dict]:
    """n attempts spread over the styles (for a smoke run): the first of each style in turn."""
    by_style: dict[str, list[dict]] = defaultdict(list)
    for a in attempts:
        by_style[a["style"]].append(a)
    out: list[dict] = []
    while len(out) < n and any(by_style.values()):
        for s in list(by_style):
            if by_style[s] and len(out) < n:
                out.append(by_style[s].pop(0))
    return out


# ---------------------------------------------------------------- false flags (text only, seconds)


def clean_sets() -> dict[str, list[str]]:
    bank = yaml.safe_load(BANK.read_text(encoding="utf-8"))
    sets = {"exemplars": [e["answer"] for q in bank["questions"] for e in q.get("exemplars", [])]}
    for name in ("mohler", "saf"):
        path = SHARED / name / "answers.csv"
        if path.exists():
            with open(path, encoding="utf-8", newline="") as f:
                sets[name] = [r["answer"] for r in csv.DictReader(f) if r["answer"].strip()]
    return sets


def false_flag_rows() -> list[dict]:
    rows = []
    for name, texts in clean_sets().items():
        reads = [screen(t) for t in texts]
        rows.append(
            {
                "kind": "false_flags",
                "set": name,
                "n": len(texts),
                "screen": sum(r.flagged for r in reads),
                "old_patterns": sum(bool(injection_spans(t)) for t in texts),
                "either": sum(r.flagged or bool(injection_spans(t)) for r, t in zip(reads, texts, strict=True)),
                "keyword_list": sum(r.keyword_list for r in reads),
            }
        )
    return rows


# ---------------------------------------------------------------- scoring


def _read(verdict) -> dict:
    return {
        "score_100": verdict.score_100,
        "status": verdict.status,
        "flags": sorted({f.code for f in verdict.review_flags}),
        "set_aside": len(verdict.set_aside),
    }


def run(args) -> None:
    corpus = load_corpus()
    qids = [q["id"] for q in corpus["questions"]]
    weak = weak_answers(qids)
    correct = {q["id"]: q["correct_short"] for q in corpus["questions"]}
    split = {s: "tuning" for s in corpus["split"]["tuning"]} | {s: "held-out" for s in corpus["split"]["held_out"]}
    attempts = corpus["attempts"]
    if args.styles:
        wanted = set()
        for name in args.styles.split(","):
            wanted |= set(corpus["split"].get(name, [name]))
        attempts = [a for a in attempts if a["style"] in wanted]
    attempts = attempts if not args.limit else spread(attempts, args.limit)
    kept = {id(a) for a in attempts}
    pairs = [(a, q) for a, q in placements(corpus, args.all_questions) if id(a) in kept]
    if args.one_question:  # one level per attempt, rotating, to fit a short CPU budget
        seen: dict[int, int] = defaultdict(int)
        levels = len({q["level"] for q in corpus["questions"]})
        index = {id(a): i for i, a in enumerate(corpus["attempts"])}
        kept_pairs = []
        for a, q in pairs:
            if a["placement"] == "replace" or a.get("question") or seen[id(a)] == index[id(a)] % levels:
                kept_pairs.append((a, q))
            seen[id(a)] += 1
        pairs = kept_pairs

    ev = build_evaluator(args.judge, use_cache=not args.no_cache)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done: set[tuple] = set()
    if args.resume and out.exists():
        for line in out.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            done.add((r["kind"], r.get("attempt_id"), r.get("question_id")))
    mode = "a" if args.resume else "w"
    t0 = time.time()
    with open(out, mode, encoding="utf-8") as f:

        def put(row: dict) -> None:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()  # a crash loses no finished answer; --resume skips them

        if ("meta", None, None) not in done:
            put({"kind": "meta", "judge": args.judge or "default", "all_questions": args.all_questions})
        for q in qids:
            for kind, text in (("weak", weak[q]), ("correct", correct[q])):
                if (kind, None, q) not in done:
                    put({"kind": kind, "question_id": q, **_read(score_answer(q, text, evaluator=ev))})
        for n, (a, q) in enumerate(pairs, 1):
            if ("attack", a["id"], q) in done:
                continue
            text = attacked(a, weak[q])
            v = score_answer(q, text, evaluator=ev)
            s = screen(text)
            row = {
                "kind": "attack",
                "attempt_id": a["id"],
                "style": a["style"],
                "split": split[a["style"]],
                "placement": a["placement"],
                "addresses_grader": bool(a.get("addresses_grader")),
                "question_id": q,
                **_read(v),
                "detected": s.flagged,
                "keyword_list": s.keyword_list,
                "removed_kinds": sorted({r.kind for r in s.removed}),
                "clean_score_100": None,
            }
            if (s.flagged or "injection_suspected" in row["flags"]) and s.clean and s.clean != text.strip():
                row["clean_score_100"] = score_answer(q, s.clean, evaluator=ev).score_100
            put(row)
            if n % 20 == 0:
                print(f"  {n}/{len(pairs)} answers, {time.time() - t0:.0f}s", file=sys.stderr)
        for row in false_flag_rows():
            put(row)
        put({"kind": "timing", "seconds": round(time.time() - t0, 1), "judge_calls": ev.judge_calls})


# ---------------------------------------------------------------- table


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:.0f}%" if b else "n/a"


def table(rows: list[dict]) -> list[str]:
    base = {(r["question_id"]): r["score_100"] for r in rows if r["kind"] == "weak"}
    correct = {(r["question_id"]): r["score_100"] for r in rows if r["kind"] == "correct"}
    attacks = [r for r in rows if r["kind"] == "attack" and r["score_100"] is not None]
    unscored = [r for r in rows if r["kind"] == "attack" and r["score_100"] is None]
    for r in attacks:
        ref = correct if r["placement"] == "replace" else base
        r["rise"] = r["score_100"] - ref[r["question_id"]]
    lines = [
        f"{'style':25s} {'split':8s} {'n':>4s} {'raised>=5':>9s} {'max rise':>8s} {'mean rise':>9s} "
        f"{'flagged':>7s} {'detected':>8s} {'b>c':>4s} {'aside':>5s}"
    ]
    by_style: dict[str, list[dict]] = defaultdict(list)
    for r in attacks:
        by_style[r["style"]].append(r)
    for style in sorted(by_style, key=lambda s: (by_style[s][0]["split"] != "tuning", s)):
        rs = by_style[style]
        flag = [r for r in rs if _flagged(r)]
        det = [r for r in rs if r["detected"] or (r["placement"] == "replace" and r["keyword_list"])]
        worse = [r for r in rs if r["clean_score_100"] is not None and r["score_100"] > r["clean_score_100"] + 0.5]
        lines.append(
            f"{style:25s} {rs[0]['split']:8s} {len(rs):4d} {sum(r['rise'] >= RAISE for r in rs):9d} "
            f"{max(r['rise'] for r in rs):8.1f} {statistics.mean(r['rise'] for r in rs):9.1f} "
            f"{_pct(len(flag), len(rs)):>7s} {_pct(len(det), len(rs)):>8s} {len(worse):4d} "
            f"{_pct(sum(bool(r.get('set_aside')) for r in rs), len(rs)):>5s}"
        )
    lines.append(
        "  raised>=5 / rise: against the weak answer alone (keyword lists: against the short correct answer); "
        "flagged: the verdict's review flag; detected: the screen; b>c: flagged answers scoring above their cleaned copy; "
        "aside: sentences set aside as off the subject (read apart, lower reading kept)"
    )
    if unscored:
        lines.append(f"  {len(unscored)} attacked answers unscored (left out above)")
    selfpromo = [r["rise"] for r in attacks if r["style"] == "self-promotion"]
    if selfpromo:
        lines.append(f"self-promotion: mean rise {statistics.mean(selfpromo):.1f} over {len(selfpromo)} answers")
    buzz = [r for r in attacks if r["placement"] == "replace"]
    below = sum(r["score_100"] < correct[r["question_id"]] for r in buzz)
    ff = list({r["set"]: r for r in rows if r["kind"] == "false_flags"}.values())  # --resume appends them again
    for r in ff:
        lines.append(
            f"false flags on {r['set']}: screen {r['screen']}/{r['n']}, old patterns {r['old_patterns']}, either "
            f"{r['either']} ({100 * r['either'] / r['n']:.2f}%); keyword-list read {r['keyword_list']}"
        )
    ff_pct = 100 * sum(r["either"] for r in ff) / max(1, sum(r["n"] for r in ff))
    timing = [r for r in rows if r["kind"] == "timing"]
    if timing:
        secs, calls = sum(t["seconds"] for t in timing), sum(t["judge_calls"] for t in timing)
        lines.append(f"scored in {secs:.0f}s over {len(timing)} run(s), {calls} judge calls")
    for part in ("tuning", "held-out"):
        rs = [r for r in attacks if r["split"] == part]
        if not rs:
            continue
        asks = [r for r in rs if r["addresses_grader"]]
        label = "gaming:" if part == "held-out" else "gaming [tuning styles]:"
        lines.append(
            f"{label} max rise {max(r['rise'] for r in rs):.1f}, raised>=5 {sum(r['rise'] >= RAISE for r in rs)}/"
            f"{len(rs)}, flagged {_pct(sum(_flagged(r) for r in asks), len(asks))}, buzzword<correct "
            f"{_pct(below, len(buzz))}, false flags {ff_pct:.2f}%"
            + (" [held-out styles]" if part == "held-out" else "")
        )
    return lines


def _flagged(r: dict) -> bool:
    return "injection_suspected" in r["flags"] or (r["placement"] == "replace" and "keyword_list" in r["flags"])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--from-stored", action="store_true", help="reprint the table from the stored file")
    p.add_argument("--judge", default=None, help="judge spec passed to build_evaluator (default: the library's)")
    p.add_argument("--limit", type=int, default=0, help="only this many attempts, spread over the styles")
    p.add_argument("--all-questions", action="store_true", help="every attempt on every corpus question")
    p.add_argument("--styles", help="comma-separated styles or split names (tuning, held_out) to run")
    p.add_argument("--one-question", action="store_true", help="each attempt on one question (levels rotate)")
    p.add_argument("--resume", action="store_true", help="keep the stored answers and score only the missing ones")
    p.add_argument("--no-cache", action="store_true", help="do not use the verdict cache")
    p.add_argument("--out", default=str(RESULTS), help=f"stored results (default {RESULTS.relative_to(ROOT)})")
    args = p.parse_args(argv)
    if not args.from_stored:
        run(args)
    path = Path(args.out)
    if not path.exists():
        raise SystemExit(f"{path}: no stored results; run without --from-stored first")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    print("\n".join(table(rows)))


if __name__ == "__main__":
    main()
