"""What the review workspace shows, built from a batch folder: answers with their verdicts and final grades,
candidates' scorecards, the review queue's order, evidence spans in the answer text and the score's spread.

Plain Python with no web framework, so the pages and the tests read the same figures.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import DataNotFoundError, EvaluatorError
from .human_grades import GradeEntry, GradeInputError, HumanGrades, UnknownAnswerError, final_grade, store_path
from .models import Question, Verdict
from .outputs import scorecards
from .resources import LoadedEvalSet, Resources

# Highlight kinds, strongest first: where spans overlap, the first kind listed colours the text.
KINDS = ("red_flag", "key_point", "criterion")


@dataclass
class Segment:
    text: str
    kind: str | None = None  # one of KINDS, or None for plain text
    labels: tuple[str, ...] = ()


@dataclass
class Answer:
    key: str
    line: int
    candidate_id: str
    question_id: str
    answer_id: str
    text: str
    extra: dict
    status: str
    v: dict | None
    human: GradeEntry | None
    question: Question | None
    spread: float | None = None  # the score's spread (one SD) on the answer's scale, from the judge's probabilities
    final: float | None = None
    final_100: float | None = None
    final_source: str = ""
    verdict: Verdict | None = None  # `v`, typed: what final grades and scorecards read

    @property
    def flagged(self) -> bool:
        return bool(self.v and self.v.get("review_flags")) or self.status != "scored"

    @property
    def scale(self) -> tuple[float, float] | None:
        if self.v:
            return float(self.v["scale_min"]), float(self.v["scale_max"])
        return None

    def segments(self) -> list[Segment]:
        return highlight(self.text, evidence_quotes(self.v or {}))


@dataclass
class Snapshot:
    """One consistent reading of the folder; rebuilt only when the store or the human grades change."""

    answers: list[Answer]
    by_key: dict[str, Answer]
    cards: list[dict]
    queue: list[str]  # answer keys in review order
    extra_columns: list[str]
    eval_set: LoadedEvalSet | None
    warnings: list[str] = field(default_factory=list)
    human_version: int = 0  # HumanGrades.version() this snapshot shows

    def candidate_answers(self, candidate_id: str) -> list[Answer]:
        return [a for a in self.answers if a.candidate_id == candidate_id]


class Folder:
    """A batch folder opened for review: reads the results store, appends human grades."""

    def __init__(
        self,
        folder: Path,
        resources: Resources | None = None,
        eval_set: str | None = None,
        advance_at: float = 70.0,
        reject_below: float = 40.0,
    ):
        self.folder = Path(folder)
        self.db = store_path(self.folder)
        self.grades = HumanGrades(self.db)
        self.resources = resources
        self.eval_set_name = eval_set
        self.advance_at = advance_at
        self.reject_below = reject_below
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._base: list[Answer] | None = None
        self._state: tuple | None = None
        self._les: LoadedEvalSet | None = None
        self._les_error: str | None = None

    def close(self) -> None:
        self.grades.close()

    def _store_state(self) -> tuple:
        with sqlite3.connect(self.db, timeout=30.0) as c:
            return c.execute(
                "SELECT COUNT(*), MAX(finished), SUM(status = 'pending'), MAX(rowid) FROM results"
            ).fetchone()

    def eval_set(self, records: list[dict]) -> LoadedEvalSet | None:
        """The eval set the verdicts name (or --eval-set); None with a warning when it cannot be loaded, so the
        pages still work without question texts and levels."""
        if self._les is not None or self._les_error is not None:
            return self._les
        name = self.eval_set_name
        if name is None:
            names = {json.loads(r["verdict"])["provenance"]["eval_set"] for r in records if r["verdict"]}
            if len(names) > 1:
                self._les_error = (
                    f"the verdicts come from several eval sets ({', '.join(sorted(names))}); pass --eval-set"
                )
                return None
            name = names.pop() if names else None
        if name is None:
            self._les_error = "no verdicts yet, so the eval set is unknown; pass --eval-set"
            return None
        try:
            self.resources = self.resources or Resources.locate()
            self._les = self.resources.load_eval_set(name)
        except (EvaluatorError, OSError) as e:
            self._les_error = f"eval set {name!r} could not be loaded ({e}); pass --eval-set or --data-dir"
        return self._les

    def snapshot(self) -> Snapshot:
        """The folder as the pages show it. Verdicts are parsed again only when the results store changed; a new
        human grade only recomputes final grades and scorecards (a save must answer quickly)."""
        with self._lock:
            state = self._store_state()
            if self._base is None or state != self._state:
                self._base = self._read_answers()
                self._state = state
                self._snapshot = None
            version = self.grades.version()
            if self._snapshot is None or self._snapshot.human_version != version:
                self._snapshot = self._with_grades(self._base, version)
            return self._snapshot

    def _read_answers(self) -> list[Answer]:
        with sqlite3.connect(self.db, timeout=30.0) as c:
            cur = c.execute(
                "SELECT key, line, candidate_id, question_id, answer_id, answer, extra, status, verdict "
                "FROM results ORDER BY line"
            )
            cols = [d[0] for d in cur.description]
            records = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
        if not records:
            raise DataNotFoundError(f"{self.db}: the results store holds no answers")
        les = self.eval_set(records)
        weights = self._holistic_weights(les)
        answers = []
        for r in records:
            v = json.loads(r["verdict"]) if r["verdict"] else None
            a = Answer(
                key=r["key"],
                line=r["line"],
                candidate_id=r["candidate_id"],
                question_id=r["question_id"],
                answer_id=r["answer_id"] or "",
                text=r["answer"],
                extra=json.loads(r["extra"] or "{}"),
                status=r["status"],
                v=v,
                human=None,
                question=les.by_id.get(r["question_id"]) if les else None,
                verdict=Verdict.model_validate(v) if v else None,
            )
            if v and v.get("status") == "scored":
                a.spread = score_spread(v, weights.get(v["provenance"]["rubric_id"]))
            answers.append(a)
        return answers

    def _with_grades(self, base: list[Answer], version: int) -> Snapshot:
        human = self.grades.latest()
        answers = []
        for b in base:
            a = replace(b, human=human.get(b.key))
            a.final, a.final_100, a.final_source = final_grade(a.verdict, a.human)
            answers.append(a)
        les = self._les
        return Snapshot(
            answers=answers,
            by_key={a.key: a for a in answers},
            cards=scorecards(answers, les, self.advance_at, self.reject_below) if les else [],
            queue=review_order(answers),
            extra_columns=sorted({k for a in answers for k in a.extra}),
            eval_set=les,
            warnings=[self._les_error] if self._les_error else [],
            human_version=version,
        )

    def _holistic_weights(self, les: LoadedEvalSet | None) -> dict[str, float]:
        if les is None or self.resources is None:
            return {}
        try:
            return {rid: lr.rubric.holistic_weight for rid, lr in self.resources.rubrics().items()}
        except EvaluatorError:
            return {}

    def scale_for(self, key: str) -> tuple[float, float]:
        """The grade scale of one answer: its verdict's, else its question's rubric's (an answer not graded yet)."""
        snap = self.snapshot()
        a = snap.by_key.get(key)
        if a is None:
            raise UnknownAnswerError(f"unknown answer id {key!r}: it is not in {self.db}")
        if a.scale:
            return a.scale
        if a.question is not None and snap.eval_set is not None and self.resources is not None:
            s = self.resources.rubric_for(snap.eval_set, a.question).rubric.scale
            return s.min, s.max
        raise GradeInputError(f"answer {key!r} has no verdict and its rubric is unknown, so its scale is unknown")


# ---------------------------------------------------------------- the review queue


def review_order(answers: list[Answer]) -> list[str]:
    """Flagged answers (review flags, or unscored) first, then the least certain (largest spread), then the rest;
    file order within ties. The order does not depend on human grades, so it stays put while a team works."""

    def key(a: Answer):
        spread = a.spread if a.spread is not None else -1.0
        return (not a.flagged, -spread, a.line)

    return [a.key for a in sorted(answers, key=key)]


# ---------------------------------------------------------------- score spread


def _sd(probs: dict[str, float] | None, scale: float = 1.0) -> float | None:
    if not probs:
        return None
    items = [(float(k) * scale, float(p)) for k, p in probs.items()]
    total = sum(p for _, p in items) or 1.0
    mean = sum(x * p for x, p in items) / total
    return math.sqrt(max(0.0, sum(p * (x - mean) ** 2 for x, p in items) / total))


def score_spread(v: dict, holistic_weight: float | None) -> float | None:
    """One standard deviation of the score on the verdict's scale, from the judge's level probabilities.

    The score is a weighted mean of expected levels, so their variances are propagated through the same weights
    (readings taken as independent), before red flags, rounding and calibration. None when the judge gave no
    probabilities (structured mode, or an endpoint without logprobs: one-hot readings would claim false certainty).
    """
    if v.get("score_sd") is not None:  # key-point scoring: the scorer propagated it through its grade model
        return float(v["score_sd"])
    crit: list[tuple[float, float]] = []
    crit_unknown = False  # a criterion level enters the score but carries no probabilities
    for c in v.get("criteria", []):
        if c.get("level") is None:
            continue
        if c.get("probability_source") not in ("logits", "top_logprobs") or not c.get("probabilities"):
            crit_unknown = True
            continue
        crit.append((float(c["weight"]), _sd(c["probabilities"]) or 0.0))
    readings = []
    if v.get("holistic_probabilities"):
        readings.append(_sd(v["holistic_probabilities"]) or 0.0)
    for view in (v.get("views") or {}).values():
        if view.get("probabilities"):
            readings.append(_sd(view["probabilities"], 4 / 5) or 0.0)  # views are read 0-5, used as 0-4
    has_crit = bool(crit) or crit_unknown
    has_holistic = v.get("holistic_level") is not None and bool(readings)
    if not (has_crit or has_holistic):
        return None
    if has_crit and has_holistic:
        if holistic_weight is None:
            return None  # the rubric (and so the mix of readings) is unknown
        hw = holistic_weight
    else:
        hw = 1.0 if has_holistic else 0.0
    if crit_unknown and hw < 1.0:
        return None  # part of the score has no spread to propagate: unknown, not zero
    if not any(readings) and not any(s for _, s in crit):
        return None  # one-hot everywhere: digits without probabilities, not certainty
    var = 0.0
    if hw < 1.0:
        total = sum(w for w, _ in crit) or 1.0
        var += (1 - hw) ** 2 * sum((w / total / 4) ** 2 * s * s for w, s in crit)
    if hw > 0.0:
        # The overall level is the mean of the readings: its variance is the readings' summed over n squared.
        var += hw**2 * (sum(r * r for r in readings) / len(readings) ** 2) / 16
    span = float(v["scale_max"]) - float(v["scale_min"])
    return round(math.sqrt(var) * span, 3)


# ---------------------------------------------------------------- evidence highlighting


def evidence_quotes(v: dict) -> list[tuple[str, str, str]]:
    """(quote, kind, label) for every piece of evidence the verdict cites."""
    out = []
    for f in v.get("red_flags", []):
        if f.get("evidence"):
            out.append((f["evidence"], "red_flag", f"red flag {f['id']}"))
    for i, k in enumerate(v.get("key_points", []), 1):
        if k.get("evidence") and k.get("covered"):
            out.append((k["evidence"], "key_point", f"key point {i}"))
    for c in v.get("criteria", []):
        if c.get("evidence"):
            out.append((c["evidence"], "criterion", f"criterion {c['id']}"))
    return out


_QUOTES = "\"'“”‘’«»`"


def _find(text: str, quote: str) -> tuple[int, int] | None:
    """Where `quote` occurs in `text`: exactly, else ignoring case and runs of whitespace (judges re-space quotes)."""
    q = quote.strip().strip(_QUOTES).strip().rstrip(".…").strip()
    if len(q) < 3:
        return None
    i = text.find(q)
    if i >= 0:
        return i, i + len(q)
    words = q.split()
    m = re.search(r"\s+".join(re.escape(w) for w in words), text, flags=re.IGNORECASE)
    return (m.start(), m.end()) if m else None


def highlight(text: str, quotes: list[tuple[str, str, str]]) -> list[Segment]:
    """The answer cut into plain and highlighted segments. Segments carry text, never markup: the template escapes
    them, so a quote cannot inject anything the answer itself could not."""
    spans = []
    for quote, kind, label in quotes:
        where = _find(text, quote)
        if where:
            spans.append((*where, kind, label))
    if not spans:
        return [Segment(text)]
    cuts = sorted({0, len(text), *(s[0] for s in spans), *(s[1] for s in spans)})
    out: list[Segment] = []
    for a, b in zip(cuts, cuts[1:], strict=False):
        over = [s for s in spans if s[0] <= a and s[1] >= b]
        if not over:
            out.append(Segment(text[a:b]))
            continue
        kind = min((s[2] for s in over), key=KINDS.index)
        out.append(Segment(text[a:b], kind, tuple(dict.fromkeys(s[3] for s in over))))
    return out
