"""Checks on untrusted answer text: injection detection, sanitising, evidence lookup."""

from __future__ import annotations

import re
import unicodedata

from rapidfuzz import fuzz

# Phrases that address the grader rather than the question. Several languages, because a
# request for marks in another language is still a request for marks.
_INJECTION_PATTERNS = [
    r"\b(ignore|disregard|forget|override|bypass)\b[^.\n]{0,40}\b(instruction|instructions|rubric|rules|prompt|criteria|above|previous|prior|grading)\b",
    r"\b(give|award|assign|grant|mark|score|rate)\b[^.\n]{0,30}\b(full|maximum|max|top|perfect|highest|10/10|5/5|100)\b[^.\n]{0,20}\b(marks?|score|points?|grade|credit|level)",
    r"\b(full|maximum|perfect|top)\s+(marks?|score|points|grade|credit)\b",
    r"\b(you are now|act as|pretend (to be|you are)|from now on you|new instructions?|system (prompt|message|override))\b",
    r"^\s*(system|assistant|grader|developer)\s*:",
    r"\b(the grader|the evaluator|the judge|dear (grader|ai|model|assistant)|as an ai)\b",
    r"\"?(level|score|grade)\"?\s*[:=]\s*\"?[0-9]",
    r"\"criteria\"\s*:",
    r"</?\s*answer\s*>|<\|im_(start|end)\|>|\[/?inst\]|<</?sys>>",
    r"\b(ignora|ignorez|ignoriere|ignorieren)\b",
    r"\b(nota máxima|puntuación máxima|note maximale|volle punktzahl|höchste punktzahl|punteggio massimo)\b",
    r"(满分|忽略|最高分|無視|満点|만점|무시)",
    r"\b(award|give|assign|grant|set)\b[^.\n]{0,20}\b(level|score|grade|marks?|points?)\s*(of\s*)?[0-9]",
]
# Role labels count only in capitals mid-line ("operating system: linux" is an answer, "SYSTEM:" is not).
_ROLE_RE = re.compile(r"\b(SYSTEM|ASSISTANT|GRADER|DEVELOPER|ADMIN)\s*:")
INJECTION_RE = re.compile("|".join(f"(?:{p})" for p in _INJECTION_PATTERNS), re.IGNORECASE | re.MULTILINE)
_SENTENCE = re.compile(r"[^.!?\n]*(?:[.!?]+|\n|$)")


def _matches(text: str) -> list[str]:
    return [m.group(0) for m in INJECTION_RE.finditer(text)] + [m.group(0) for m in _ROLE_RE.finditer(text)]


def injection_spans(answer: str) -> list[str]:
    return _matches(answer)


def sanitise(answer: str) -> str:
    """The answer with every sentence or line that addresses the grader removed."""
    kept = [s for s in _SENTENCE.findall(answer) if s.strip() and not _matches(s)]
    return re.sub(r"[ \t]+", " ", "".join(kept)).strip()


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[^\w\s]", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def evidence_supported(quote: str, answer: str, threshold: float = 85.0) -> bool | None:
    """True if the quote is in the answer (normalised, fuzzy); None when there is no quote."""
    q = normalise(quote)
    if not q:
        return None
    a = normalise(answer)
    if q in a:
        return True
    return fuzz.partial_ratio(q, a) >= threshold
