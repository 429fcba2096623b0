"""A question's key points, and the answer sentence that covers each one best.

Key points drive the score: the judge is asked, point by point, whether the answer states it. A bank may list
them; otherwise they are derived from the reference answer (its bullets, else its sentences), so every bank,
imported or not, is graded the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .embeddings import Embedder, sentence_spans
from .models import Question

MAX_POINTS = 6
_BULLET = re.compile(r"^\s*(?:[-*•–·]|\d{1,2}[.)]|\(?[a-z][.)])\s*")
_NOTE = re.compile(r"^\s*(?:note|hint|remark|grading)\b", re.IGNORECASE)


def derive_key_points(reference: str, max_points: int = MAX_POINTS) -> list[str]:
    """Key points from a reference answer: its bullet lines (a line ending in ':' heads the bullets below it),
    else its sentences. Grader notes are left out. More than `max_points` are merged, in order, into that many."""
    lines = [ln.strip() for ln in reference.splitlines() if ln.strip() and not _NOTE.match(ln)]
    bullets = [ln for ln in lines if _BULLET.match(ln)]
    points: list[str] = []
    if len(bullets) >= 2:
        header = ""
        for ln in lines:
            if _BULLET.match(ln):
                item = _BULLET.sub("", ln).strip()
                if item:
                    points.append(f"{header} {item}" if header else item)
            elif ln.endswith(":"):
                header = ln.rstrip(": ").strip() + ":"
            else:
                header = ""
                points.append(ln)
    else:
        text = " ".join(lines)
        points = [text[a:b] for a, b in sentence_spans(text)]
        points = [p for p in points if len(p.split()) >= 2] or [text.strip()]
    return _merge(points, max_points)


def _merge(points: list[str], n: int) -> list[str]:
    if len(points) <= n:
        return points
    size, extra = divmod(len(points), n)
    out, i = [], 0
    for k in range(n):
        take = size + (1 if k < extra else 0)
        out.append("; ".join(p.rstrip(".;") for p in points[i : i + take]))
        i += take
    return out


def key_points_of(q: Question) -> list[str]:
    """The question's own key points, else those derived from its first reference answer."""
    return list(q.key_points) if q.key_points else derive_key_points(q.references[0])


_NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
# "State at least 4 of the differences", "Name and describe two challenges", "list three causes": the question asks
# for N items, and a reference that lists more offers a choice. "Name the 3 classes" (all of them) and "give 1
# advantage and 1 disadvantage" (one of each kind) do not match.
_ASKS_FOR = re.compile(
    r"\b(?:at\s+least|(?:name|state|list|give|describe|explain)(?:\s+and\s+(?:describe|explain|name))?)"
    r"\s+(\d|two|three|four|five|six)\b(?!\s*-)",
    re.IGNORECASE,
)
_ANY_NUMBER = re.compile(r"\b(?:\d+|one|two|three|four|five|six)\b", re.IGNORECASE)


def asked_count(question: str, n_points: int) -> int | None:
    """How many of the reference's `n_points` key points the question asks for, when its wording asks for fewer
    ("state at least 4 of the differences"); None when it asks for all of them, says nothing, or mentions other
    numbers ("three causes and two fixes" asks for five items of two kinds)."""
    counts = [int(_NUMBERS.get(m.lower(), m)) for m in _ASKS_FOR.findall(question)]
    if len(counts) != 1 or len(_ANY_NUMBER.findall(question)) != 1 or not 2 <= counts[0] < n_points:
        return None
    return counts[0]


def points_required_of(q: Question, n_points: int) -> int | None:
    """The number of best-read key points the score counts: the question's `points_required` when it is below the
    number of points, else None (all of them count)."""
    n = q.points_required
    return n if n is not None and n < n_points else None


@dataclass(frozen=True)
class Evidence:
    sentence: str  # exact text of the answer
    similarity: float


def best_sentences(embedder: Embedder, points: list[str], answer: str) -> list[Evidence]:
    """For each point, the answer sentence closest to it in meaning, quoted exactly from the answer."""
    spans = sentence_spans(answer)
    if not points or not spans:
        return [Evidence("", 0.0) for _ in points]
    sentences = [answer[a:b] for a, b in spans]
    vecs = embedder.encode([*points, *sentences])
    sims = vecs[: len(points)] @ vecs[len(points) :].T
    best = np.argmax(sims, axis=1)
    return [Evidence(sentences[j], round(float(sims[i, j]), 4)) for i, j in enumerate(best)]
