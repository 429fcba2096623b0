"""Similarity figures of an answer to its question's references and key points (a feature and a guard, not the
correctness score), and a dependency-free lexical overlap."""

from __future__ import annotations

import re

import numpy as np

from .embeddings import CachedEmbedder, Embedder, sentence_spans
from .key_points import key_points_of
from .models import Question, Similarity

# A sentence whose cosine to the question, every reference and every key point is below this is about something
# else (the candidate, the grader, the weather). Measured for MiniLM only, on the gaming corpus's tuning styles
# against the bank exemplars and the Mohler and SAF answers; with any other embedder the step is off, since a
# cosine threshold does not carry over from one embedding model to another. Raised from 0.25 in session 10: on the
# anchored score, generic sentences in ML words ("I have used it in several projects", "This is a key concept in
# machine learning", cosine 0.27-0.29) lifted weak answers by up to 34 points.
OFF_TOPIC_BELOW = {"sentence-transformers/all-MiniLM-L6-v2": 0.30}


def similarity_figures(embedder: CachedEmbedder, q: Question, answer: str) -> Similarity:
    ref_vecs = embedder.encode(q.reference_texts)
    whole, sent = embedder.encode_answers([answer])[0]
    n_ref = len(q.references)
    best = float(np.max(ref_vecs[:n_ref] @ whole))
    kp = []
    if q.key_points:
        sims = ref_vecs[n_ref:] @ np.vstack([whole[None, :], sent]).T
        kp = [round(float(x), 4) for x in sims.max(axis=1)]
    best_i = int(np.argmax(ref_vecs[:n_ref] @ whole))
    return Similarity(
        model=embedder.name,
        best_reference=round(best, 4),
        key_point_coverage=round(float(np.mean(kp)), 4) if kp else None,
        key_points=kp,
        lexical_overlap=round(lexical_overlap(answer, q.references[best_i]), 4),
        reference_chars=len(q.references[best_i]),
    )


_STOP = set(
    "a an the and or but if of to in on at by for with from as is are was were be been being it its this that "
    "these those which who whom what when where why how not no do does did can could should would will may might "
    "must has have had than then so such into about over under between there their they them we you your our".split()
)


def _content_words(text: str) -> set[str]:
    words = re.findall(r"[a-z0-9]+", text.lower())
    # A light suffix strip so "errors"/"error" and "trained"/"train" meet; no stemmer dependency.
    return {re.sub(r"(ing|ed|es|s)$", "", w) or w for w in words if w not in _STOP and len(w) > 1}


def lexical_overlap(answer: str, reference: str) -> float:
    ref = _content_words(reference)
    return len(ref & _content_words(answer)) / len(ref) if ref else 0.0


def off_topic_spans(embedder: Embedder, q: Question, answer: str, below: float | None = None) -> list[tuple[int, int]]:
    """Character spans of the answer's sentences that are about neither the question nor its answer: below
    `below` in cosine to the question, every reference and every key point (skipped when no threshold is known for
    this embedder), or pointing at material outside the answer (a link or a file: it states nothing the grader can
    read). None when the answer has a single sentence or every sentence would go (an answer wholly off the subject
    is simply a poor answer, read as it is)."""
    below = OFF_TOPIC_BELOW.get(embedder.name) if below is None else below
    spans = whole_sentences(answer, sentence_spans(answer))
    if len(spans) < 2:
        return []
    off = {span for span in spans if _ELSEWHERE.search(answer[span[0] : span[1]])}
    if below is not None:
        anchors = embedder.encode([q.question, *q.references, *key_points_of(q)])
        topical = (embedder.encode([answer[a:b] for a, b in spans]) @ anchors.T).max(axis=1)
        off |= {span for span, t in zip(spans, topical, strict=True) if t < below}
    return sorted(off) if len(off) < len(spans) else []


# A link or a document the grader cannot open ("see notebooks/validated.ipynb, which reproduces every claim above"):
# no exemplar, Mohler or SAF answer has one; on a weak answer such a sentence lifted the reads by up to 24.6 points.
_ELSEWHERE = re.compile(
    r"(?i)\b(?:https?://|www\.)\S+|\b[\w.-]+\.(?:com|org|net|io|ai|dev|edu|gov|co|ly)/\S*"
    r"|\b[\w./-]+\.(?:pdf|ipynb|docx?|pptx?|xlsx?|md|html?)\b"
)


def whole_sentences(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sentence spans with fragments of fewer than three words joined to the sentence before: a piece like "Yes."
    says little alone and would read as off the subject."""
    out: list[tuple[int, int]] = []
    for a, b in spans:
        if out and len(text[a:b].split()) < 3:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def cut_spans(text: str, spans: list[tuple[int, int]]) -> str:
    """The text without those spans, the pieces left joined by a space."""
    pieces, last = [], 0
    for a, b in sorted(spans):
        pieces.append(text[last:a].strip())
        last = b
    pieces.append(text[last:].strip())
    return " ".join(p for p in pieces if p)
