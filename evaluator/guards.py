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
    r"\b(full|maximum|perfect)\s+(marks?|score|points|grade|credit)\b",
    r"\b(you are now|pretend (to be|you are)|from now on you|new instructions?|system (prompt|message|override)|new policy)\b",
    r"\bact as (a |an |the )?(very )?(lenient|generous|kind|friendly|grader|judge|teacher|examiner|evaluator|marker)",
    r"^\s*(system|assistant|user|grader|developer)\s*:",
    r"\b(the grader|the evaluator|the judge|dear (grader|ai|model|assistant)|as an ai)\b",
    r"\b(grader|grading|marking)\s+(instructions?|notes?|policy|guidelines?)\b",
    r"\"?(level|score|grade)\"?\s*[:=]\s*\"?[0-9]",
    r"\"criteria\"\s*:",
    r"</?\s*answer\s*>|<\|[a-z_]{2,20}\|>|\[/?inst\]|<</?sys>>",
    r"\b(ignora|ignorez|ignoriere|ignorieren)\b",
    r"\b(nota máxima|puntuación máxima|note maximale|volle punktzahl|höchste punktzahl|punteggio massimo)\b",
    r"(满分|忽略|最高分|無視|満点|만점|무시)",
    r"\b(award|give|assign|grant|set)\b[^.\n]{0,20}\b(level|score|grade|marks?|points?)\s*(of\s*)?[0-9]",
    r"\b(grade|rate|mark|score)\s+(me|this( answer)?|it)\s+(a\s+)?[0-9]",
    r"\breference answer\b[^.\n]{0,40}\b(is|was)\s+(wrong|incorrect|outdated|out of date|mistaken)",
    r"\b(reply|respond|answer|output)\s+(with\s+)?(one\s+|a\s+|the\s+)?(digit|number)?\s*[0-9]\b",
    r"\bwhen asked\b",
    r"\breply with (one|a single|the) (digit|number)",
    r"\[[a-z][a-z_\-]{3,}\][^\n]{0,40}(\blevel\b|\b[0-4]\s*$)",
    r"^\s*#+\s*[^\n]*\b(grading|grade|score|rubric|overall|marks?)\b",
]
# Role labels mid-line count only in capitals ("operating system: linux" is an answer, "SYSTEM:" is not),
# and so do the section labels of our own prompt.
_CASED_RE = re.compile(
    r"\b(SYSTEM|ASSISTANT|GRADER|DEVELOPER|ADMIN)\s*:|\b(REFERENCE ANSWER|KEY POINTS|CRITERIA|RED FLAGS|OVERALL|"
    r"CANDIDATE ANSWER)\b"
)
INJECTION_RE = re.compile("|".join(f"(?:{p})" for p in _INJECTION_PATTERNS), re.IGNORECASE | re.MULTILINE)
_SENTENCE = re.compile(r"[^.!?\n]*(?:[.!?]+|\n|$)")
# Zero-width and other invisible format characters carry no content, but can split a word past a filter.
_INVISIBLE = re.compile("[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")


def strip_invisible(text: str) -> str:
    return _INVISIBLE.sub("", text)


def _matches(text: str) -> list[re.Match]:
    found = list(INJECTION_RE.finditer(text)) + list(_CASED_RE.finditer(text))
    return sorted(found, key=lambda m: m.start())


def injection_spans(answer: str) -> list[str]:
    return [m.group(0) for m in _matches(strip_invisible(answer))]


def sanitised_variants(answer: str) -> list[str]:
    """Copies of the answer without the text addressed to the grader, for a second reading whose lower
    levels are kept: (a) every sentence or line with such text removed, whitespace collapsed; (b) the answer
    cut before the first such text (injections are most often appended). Empty copies are left out."""
    text = strip_invisible(answer)
    found = _matches(text)
    if not found:
        return []
    kept = [s for s in _SENTENCE.findall(text) if s.strip() and not _matches(s)]
    removed = re.sub(r"\s+", " ", " ".join(k.strip() for k in kept)).strip()
    cut = text[: found[0].start()].rstrip()
    return [v for v in dict.fromkeys([removed, cut]) if v]


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
