"""Screening of untrusted answer text by its shape, not its wording: non-prose structures, sentences that
address the grader, foreign-language and encoded text, and bare keyword lists.

An answer to a screening question is prose in the language of the question. A candidate who wants to talk
to the grader has to leave that shape: a verdict needs a structure (JSON, YAML, a table, tags, a "Score: 5"
line), a request needs to speak to someone about the grade, an obfuscated request needs odd characters or
tokens. So this module removes whole structures and sentences by what they are, and reports what it removed
so a person can see it. It never rewrites what is left.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from dataclasses import dataclass, field

from .guards import strip_invisible

# ---------------------------------------------------------------- non-prose structures

_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.DOTALL)
_FENCE = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n.*?(?:^[ \t]*\1[ \t]*$|\Z)", re.DOTALL | re.MULTILINE)
_CDATA = re.compile(r"<!\[CDATA\[.*?(?:\]\]>|\Z)", re.DOTALL)
_XML_DECL = re.compile(r"<\?[a-zA-Z].*?\?>", re.DOTALL)
# A tag glued to a word ("vector<int>") is C++ or Java, not markup.
_TAG = r"(?<![\w])</?[A-Za-z][\w:.-]*(?:\s+[\w:.-]+\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s>]+))*\s*/?>"
_TAG_RE = re.compile(_TAG)
_PAIRED = re.compile(r"(?<![\w])<([A-Za-z][\w:.-]*)(?:\s[^<>]*)?>.*?</\1\s*>", re.DOTALL)
# Only markup-shaped tags are removed when they stand alone: closing, self-closing or with attributes.
_LONE_TAG = re.compile(
    r"(?<![\w])(?:</[A-Za-z][\w:.-]*\s*>|<[A-Za-z][\w:.-]*(?:\s+[\w:.-]+\s*=[^<>]*)?\s*/>|"
    r"<[A-Za-z][\w:.-]*\s+[\w:.-]+\s*=\s*[\"'][^<>]*>)"
)
_JSON_KEY = re.compile(r"[\"'][^\"'\n]{1,40}[\"']\s*:")
_TABLE_RULE = re.compile(r"^\s*[|+]?\s*:?-{3,}:?\s*([|+]\s*:?-{3,}:?\s*)*[|+]?\s*$")
_SCORE_VALUE = (
    r"[A-F][+-]|\d+(?:[.,]\d+)?\s*(?:%|/\s*\d+(?:[.,]\d+)?|out\s+of\s+\d+|of\s+\d+)?"
    r"(?:\s*\([^()\n]{0,30}\))?"
)
_SCORE_LINE = re.compile(
    rf"^[ \t>*_-]*(?:(?:[A-Za-z][A-Za-z']*\s+){{0,2}}[A-Za-z][A-Za-z']*[ \t*_]*:|"
    rf"(?:score|grade|level|mark|marks|points|rating|result|verdict|overall|total)[ \t]*=)"
    rf"[ \t*_]*(?:{_SCORE_VALUE})[ \t*_.!]*$",
    re.MULTILINE | re.IGNORECASE,
)
# A verdict needs no number: "**Final grade: Excellent**", "Verdict - strong hire". A line that is only a grading
# label and a top word is a self-awarded grade; a label of ML ("Result: the model overfits") never matches, as the
# value must be one of these words and nothing else.
_VERDICT_WORD_LINE = re.compile(
    r"^[ \t>*_#-]*(?:[A-Za-z']+[ \t]+){0,2}(?:grade|score|verdict|rating|result|assessment|evaluation|mark|level|"
    r"outcome|decision|recommendation)s?[ \t*_]*[:=\u2013\u2014-][ \t*_]*(?:(?:very|fully|strong|definite)[ \t]+)?"
    r"(?:excellent|outstanding|perfect|exceptional|exemplary|superb|strong|pass(?:ed)?|full[ \t]+marks|correct|complete|"
    r"top|maximum|max|highest|hire|advance|accept(?:ed)?|distinction|a\+?)[^\w\n]*$",
    re.MULTILINE | re.IGNORECASE,
)
# A ticked checklist ("- ✅ definition", "- [x] mitigation") is a self-assessment of coverage, not a statement.
_TICKED_ITEM = re.compile(
    r"^[ \t]*(?:[-*+][ \t]*)?(?:\[[xX\u2713\u2714]\]|[\u2705\u2611\u2714\u2713])[^\n]*$", re.MULTILINE
)
_BARE_GRADE_LINE = re.compile(r"^[ \t*_]*\d+(?:[.,]\d+)?\s*(?:/\s*\d+|out\s+of\s+\d+)[ \t*_.!]*$", re.MULTILINE)
_KEY_LINE = re.compile(r"^(\s*)(?:-\s+)?([A-Za-z_][\w-]{0,30})\s*:(?:\s+(.*?))?\s*$")
_SCALAR = re.compile(
    r"^(?:[-+]?\d+(?:[.,]\d+)?%?(?:\s*[-/]\s*\d+)?|true|false|yes|no|null|none|~|\[\]|\{\}|[\w-]+)$", re.IGNORECASE
)
_COMMENT_LINE = re.compile(r"^[ \t]*(?:#{1,6}[ \t]|//|--[ \t]|/\*).*$", re.MULTILINE)
_DOC_MARKER = re.compile(r"^[ \t]*(?:---|\.\.\.)[ \t]*$", re.MULTILINE)


def _cut(text: str, spans: list[tuple[int, int]]) -> str:
    out, last = [], 0
    for a, b in sorted(spans):
        if a < last:
            a = last
        out.append(text[last:a])
        out.append("\n")
        last = max(last, b)
    out.append(text[last:])
    return "".join(out)


def _regex_pass(text: str, pattern: re.Pattern, kind: str, removed: list[tuple[str, str]]) -> str:
    spans = [(m.start(), m.end()) for m in pattern.finditer(text) if m.group(0).strip()]
    for a, b in spans:
        removed.append((kind, text[a:b].strip()))
    return _cut(text, spans) if spans else text


def _json_blobs(text: str) -> list[tuple[int, int]]:
    """Balanced {...} or [...] regions that hold at least one quoted key: a JSON (or Python dict) object."""
    spans, i = [], 0
    while i < len(text):
        if text[i] in "{[":
            depth, j = 0, i
            while j < len(text):
                if text[j] in "{[":
                    depth += 1
                elif text[j] in "}]":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            end = min(j + 1, len(text))
            if _JSON_KEY.search(text[i:end]):
                spans.append((i, end))
                i = end
                continue
        i += 1
    return spans


def _line_spans(text: str) -> list[tuple[int, int, str]]:
    spans, pos = [], 0
    for line in text.split("\n"):
        spans.append((pos, pos + len(line), line))
        pos += len(line) + 1
    return spans


def _table_blocks(text: str) -> list[tuple[int, int]]:
    """Runs of 2+ lines that are table rows: pipes or +---+ rules, or 3+ lines with the same number of pipes."""
    lines = _line_spans(text)
    out: list[tuple[int, int]] = []
    run: list[tuple[int, int, str]] = []

    def flush():
        if not run:
            return
        pipes = [ln.count("|") for _, _, ln in run]
        has_rule = any(_TABLE_RULE.match(ln) for _, _, ln in run)
        framed = sum(1 for _, _, ln in run if ln.strip().startswith("|") and ln.strip().endswith("|"))
        if has_rule or framed >= 2 or (len(run) >= 3 and len(set(pipes)) == 1):
            out.append((run[0][0], run[-1][1]))

    for a, b, ln in lines:
        if ln.count("|") >= 1 or _TABLE_RULE.match(ln) and ln.strip():
            run.append((a, b, ln))
        else:
            flush()
            run = []
    flush()
    return out


def _key_value_blocks(text: str) -> list[tuple[int, int]]:
    """YAML-shaped runs of `key: value` lines: 2+ lines with identifier keys and scalar values (a verdict, not a
    glossary), or a `key:` header over indented keys. Glossary lines ("Precision: the share of...") are prose."""
    lines = _line_spans(text)
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(lines):
        j = i
        rows = []
        while j < len(lines):
            m = _KEY_LINE.match(lines[j][2])
            if not m:
                break
            rows.append(m)
            j += 1
        if len(rows) >= 2:
            values = [m.group(3) for m in rows if m.group(3)]
            scalar = sum(1 for v in values if _SCALAR.match(v.strip().strip("\"'")))
            header = any(not m.group(3) for m in rows[:-1]) and any(m.group(1) for m in rows)
            lower_keys = sum(1 for m in rows if m.group(2) == m.group(2).lower() or "_" in m.group(2))
            if header or (values and scalar * 2 >= len(values) and lower_keys * 2 >= len(rows)):
                out.append((lines[i][0], lines[j - 1][1]))
            i = j
        else:
            i += 1
    return out


def _strip_structures(text: str) -> tuple[str, list[tuple[str, str]]]:
    removed: list[tuple[str, str]] = []
    text = _regex_pass(text, _HTML_COMMENT, "HTML comment", removed)
    text = _regex_pass(text, _FENCE, "code block", removed)
    text = _regex_pass(text, _CDATA, "markup", removed)
    text = _regex_pass(text, _XML_DECL, "markup", removed)
    text = _regex_pass(text, _PAIRED, "markup", removed)
    text = _regex_pass(text, _LONE_TAG, "markup", removed)
    for kind, finder in (
        ("JSON", _json_blobs),
        ("table", _table_blocks),
        ("YAML", _key_value_blocks),
    ):
        spans = finder(text)
        for a, b in spans:
            removed.append((kind, text[a:b].strip()))
        if spans:
            text = _cut(text, spans)
    text = _regex_pass(text, _SCORE_LINE, "score line", removed)
    text = _regex_pass(text, _BARE_GRADE_LINE, "score line", removed)
    text = _regex_pass(text, _VERDICT_WORD_LINE, "score line", removed)
    text = _regex_pass(text, _TICKED_ITEM, "checklist", removed)
    text = _regex_pass(text, _COMMENT_LINE, "comment line", removed)
    text = _regex_pass(text, _DOC_MARKER, "YAML", removed)
    return text, removed


def strip_non_prose(text: str) -> tuple[str, list[str]]:
    """The text without whole non-prose structures (code blocks, tables, JSON/YAML/XML blobs, HTML comments,
    "Score: N" lines, comment lines), and the structures removed, in the order found."""
    clean, removed = _strip_structures(strip_invisible(text))
    return _tidy(clean), [r for _, r in removed]


def _tidy(text: str) -> str:
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# ---------------------------------------------------------------- sentence reads

_SENTENCE = re.compile(r"[^.!?。！？\n]*(?:[.!?。！？]+(?=\s|$)|\n|$)|[^\n]+?(?:\n|$)")

_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")
_LETTER = re.compile(r"[^\W\d_]")
# Cyrillic and Greek letters drawn like Latin ones, for words that mix scripts to slip past a filter.
_HOMOGLYPHS = str.maketrans(
    "аеорсухіјѕԁһӏԛԝАВЕКМНОРСТХІЈЅαοικνρτυχΑΒΕΖΗΙΚΜΝΟΡΤΥΧ",
    "aeopcyxijsdhlqwABEKMHOPCTXIJSaoikvptuxABEZHIKMNOPTYX",
)
_LEET = str.maketrans("0134578@$", "oieastbas")

# English function words: prose has many of them, a keyword list has almost none, a sentence in another
# language has few. Grading vocabulary is a separate, small set of concepts.
_EN_FUNCTION = set(
    """a an the is are was were be been being am has have had do does did can could will would shall should may
    might must of to in on at by for with from into onto over under about as than then that this these those it its
    and or but if so because when while which who whom whose what where how why not no nor i we you he she they me
    us him her them my our your their there here also just only very more most such each every any all some one two
    both either neither after before between through during without within up down out off again once same other""".split()
)
_FOREIGN_FUNCTION = (
    set(
        """el la los las del que y en por para con una uno es esta este estas son pero como sus muy más también ya
    le les des du et est une un pour dans avec sur pas vous nous cette ces qui au aux sont être
    der das und ist nicht ein eine einer mit für auf dem den des sie ich du wir ihr diese dieser bitte auch
    il lo gli che di è una questa questo sono della delle alla anche
    o os as não você uma um esta este para com são pelo pela também
    het een en niet dit deze voor van zijn ook naar wel maar
    w nie na się jest ta jak za tej proszę oraz
    ve bu bir için değil ile çok daha lütfen
    och att det som är inte för med""".split()
    )
    - _EN_FUNCTION
)

_GRADER = (
    r"grad(?:er|ers|ing)|mark(?:er|ers|ing)|examiner|evaluator|assessor|reviewer|moderator|interviewer|"
    r"hiring\s+(?:manager|panel|committee)|screening\s+(?:panel|committee|pipeline)|the\s+judge|"
    r"(?:grading|scoring|marking)\s+(?:model|system|step)"
)
# Words of the grading world only; "criteria", "scale" or "rules" also belong to ML (split criteria, feature
# scaling, association rules), so they count only next to a grader or a grade.
_RUBRIC = (
    r"rubric|marking\s+scheme|answer\s+key|reference\s+(?:answer|solution)|expected\s+answer|model\s+answer|"
    r"key\s+points|errata|exemplar"
)
_RUBRIC_WEAK = r"criteri(?:on|a)|scale|instructions?|prompt|rules|policy|bar"
_GRADE_WORD = (
    r"scor(?:e|es|ed|ing)|grade[sd]?|marks?|marked|points?|level|credit|band|assess(?:ed|ment)?|"
    r"lenient|generous(?:ly)?|benefit\s+of\s+the\s+doubt"
)
_TOP = (
    r"full|maxim(?:um|al)|max|highest|top|best|perfect|excellent|strong|complete|correct|a\+|"
    r"\d+\s*/\s*\d+|\d+\s+out\s+of\s+\d+|level\s+\d|100\s*%?"
)
_SELF = (
    r"(?:this|my|the\s+above|the\s+following|our)\s+(?:answer|response|submission|solution|text|reply|attempt)|"
    r"(?:this\s+)?candidate'?s|this\s+candidate|(?:the\s+)?(?:text|answer)\s+above|this\s+one|me|mine"
)
_YOU = r"you|your|yours|yourself|please|kindly|whoever|whatever"
_ASK = (
    r"give|award|assign|grant|rate|mark|score|grade|credit|treat|accept|register|record|keep|lower|raise|ignore|"
    r"disregard|skip|override|approve|consider|reward|count|set|follow|apply|decode|continue"
)
_IMPERATIVE = re.compile(rf"^[\W_]*(?:(?:please|kindly|now|so|just)\s+)*(?:{_ASK})\b", re.IGNORECASE)
_OBJECT = r"this|it|that|me"
# Added in session 7 from the styles held out until then (role-play, argue-reference, buried): the answer's own
# verdict on itself ("my answer is fully correct", "should be read as the correct one"), a note labelled for the
# grading world, a question about this answer's level, and a plea with a request.
_SELF_VERDICT = re.compile(
    r"\b(?:my|this|the\s+above)\s+(?:answer|response|submission|reply)\b[^.;]{0,20}\b(?:is|are|should\s+be|must\s+be)"
    r"\s+(?:(?:read|treated|considered|seen|taken|graded|marked|judged|counted)\s+as\s+)?(?:\w+\s+){0,3}?"
    r"(?:correct|complete|right|valid|excellent|perfect)\b",
    re.IGNORECASE,
)
_GRADING_NOTE = re.compile(
    r"\b(?:assessment|grading|grader|marking|marker|evaluation|evaluator|reviewer|scoring|examiner)\s+"
    r"(?:note|comment|remark|instruction|directive)s?\s*[:\-]",
    re.IGNORECASE,
)
_PLEA = r"please|kindly|whoever|whatever"
_GRADED_ANSWERS = re.compile(
    r"\banswers?\b[^.]{0,40}\b(?:scored|graded|marked|awarded|credited|rated)\b", re.IGNORECASE
)


def _has(pattern: str, s: str) -> bool:
    return re.search(rf"(?<![\w])(?:{pattern})(?![\w])", s, re.IGNORECASE) is not None


def _fold(s: str) -> str:
    """The sentence as a reader would see it: compatibility forms (full-width letters), lookalike letters, leet
    digits inside words and letters spaced or dotted apart all folded back to plain words."""
    s = unicodedata.normalize("NFKC", s).translate(_HOMOGLYPHS)
    s = re.sub(r"\b(?=\w*[A-Za-z])(?=\w*[0-9@$])[\w@$]+\b", lambda m: m.group(0).translate(_LEET), s)
    s = re.sub(r"\b[A-Za-z](?:\.[A-Za-z]){2,}\b\.?", lambda m: m.group(0).replace(".", ""), s)
    s = re.sub(r"\b[A-Za-z](?: [A-Za-z]\b){2,}", lambda m: m.group(0).replace(" ", ""), s)
    return re.sub(r"(?<=[A-Za-z]) {2,}(?=[A-Za-z])", " ", s)


def addresses_grader(sentence: str) -> bool:
    """Whether a sentence speaks to the grader about the grade rather than about the question: a role of the
    grading world or this answer itself, together with grading vocabulary, a top value or a request."""
    s = _fold(sentence)
    for t in (s, s[::-1]):
        grader, rubric, weak = _has(_GRADER, t), _has(_RUBRIC, t), _has(_RUBRIC_WEAK, t)
        grade, selfref, you = _has(_GRADE_WORD, t), _has(_SELF, t), _has(_YOU, t)
        top, ask = _has(_TOP, t), _has(_ASK, t)
        if grader and (grade or rubric or weak or top or ask or selfref or len(_words(t)) <= 4):
            return True
        if rubric and (grade or top or ask or selfref):
            return True
        if selfref and grade and (top or ask or you):
            return True
        if selfref and you and ask and top:
            return True
        if _IMPERATIVE.match(t) and (grade or rubric) and (top or selfref or _has(_OBJECT, t)):
            return True
        if weak and grade and (you or selfref) and (top or ask or _has(r"assessed|removed|changed|dropped", t)):
            return True
        if _GRADED_ANSWERS.search(t) and (top or re.search(r"\d", t)):
            return True
        if _SELF_VERDICT.search(t) or _GRADING_NOTE.search(t):
            return True
        if selfref and grade and t.rstrip().endswith("?"):
            return True
        if _has(_PLEA, t) and ask and (top or grade):
            return True
    return False


def _words(s: str) -> list[str]:
    return re.findall(r"[^\W\d_]+(?:'[^\W\d_]+)?", s.lower())


_LOOKALIKES = set("аеорсухіјѕԁһӏԛԝАВЕКМНОРСТХІЈЅαοικνρτυχΑΒΕΖΗΙΚΜΝΟΡΤΥΧ")


def _mixed_script_word(s: str) -> bool:
    """A word of Latin letters with a Cyrillic or Greek letter drawn like a Latin one: written to slip past a
    filter (a formula's "Δt" mixes scripts too, but with a letter that looks like no Latin one)."""
    for w in re.findall(r"[^\W\d_]{3,}", s):
        if any(c.isascii() for c in w) and any(c in _LOOKALIKES for c in w):
            return True
    return False


def is_foreign(sentence: str) -> bool:
    """A sentence not in English: mostly non-Latin letters, or more function words of other languages than of
    English. Only asked of sentences inside an English answer."""
    letters = _LETTER.findall(sentence)
    if len(letters) >= 4 and sum(1 for c in letters if _LATIN.match(c)) < 0.5 * len(letters):
        return True
    words = _words(sentence)
    foreign = sum(1 for w in words if len(w) > 1 and w in _FOREIGN_FUNCTION)
    english = sum(1 for w in words if w in _EN_FUNCTION)
    return foreign >= 2 and foreign > english


_B64 = re.compile(r"(?<![\w+/])[A-Za-z0-9+/]{16,}={0,2}(?![\w+/])")


def _encoded(sentence: str) -> bool:
    """A token that is base64 of readable text, or a long token mixing case and digits with no vowels pattern."""
    for tok in _B64.findall(sentence):
        if not (re.search(r"[a-z]", tok) and re.search(r"[A-Z]", tok) and re.search(r"\d", tok)):
            continue
        try:
            raw = base64.b64decode(tok + "=" * (-len(tok) % 4), validate=True)
            decoded = raw.decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            decoded = ""
        if decoded and sum(c.isprintable() for c in decoded) >= 0.9 * len(decoded):
            return True
        if len(tok) >= 24:
            return True
    return False


# ---------------------------------------------------------------- keyword lists


def keyword_list(text: str) -> bool:
    """A list of terms with no sentence in it: 5+ short items (commas, semicolons, bullets or lines) and almost
    no English function words. A terse but real answer has articles, verbs and prepositions."""
    body = re.sub(r"^\s*(?:[-*•·]|\d+[.)])\s*", "", text, flags=re.MULTILINE)
    items = [i.strip() for i in re.split(r"[,;\n•·]+", body) if i.strip()]
    words = _words(body)
    if len(items) < 5 or not words:
        return False
    short = sum(1 for i in items if len(i.split()) <= 4)
    code = sum(1 for i in items if re.search(r"[{};=]|&(?:gt|lt|amp);", i))
    function = sum(1 for w in words if w in _EN_FUNCTION)
    return short >= 0.8 * len(items) and code <= 0.2 * len(items) and function <= 0.15 * len(words)


# ---------------------------------------------------------------- the whole read


@dataclass(frozen=True)
class Removal:
    kind: str
    text: str


@dataclass(frozen=True)
class Screening:
    """What was found in an answer: the text left to grade, what was removed and why, and whether the answer
    is a bare keyword list (reported, never removed: the judge decides what it states)."""

    clean: str
    removed: list[Removal] = field(default_factory=list)
    keyword_list: bool = False

    @property
    def flagged(self) -> bool:
        return bool(self.removed)

    def summary(self, limit: int = 160) -> str:
        parts = [f"{r.kind}: {r.text[:60]!r}" for r in self.removed]
        out = "; ".join(parts)
        return out if len(out) <= limit else out[: limit - 1] + "…"


def screen(answer: str) -> Screening:
    """Removes from an answer every non-prose structure and every sentence that addresses the grader, is in
    another language than the rest of an English answer, is encoded, or hides letters of another script in
    Latin words."""
    text = strip_invisible(answer)
    rest, found = _strip_structures(text)
    removed = [Removal(k, t) for k, t in found]
    english = _has_english(rest)
    paragraphs = _PARAGRAPH.split(rest)
    several = sum(1 for p in paragraphs if _words(p)) > 1
    kept: list[str] = []
    for paragraph in paragraphs:
        sentences = _SENTENCE.findall(paragraph)
        kinds = [_sentence_kind(s, english) if s.strip() else None for s in sentences]
        hit = next((k for k in kinds if k), None)
        # A request rarely comes alone: the sentences around it in its paragraph ("the form cut my answer off
        # here; the rest covered the causes and three mitigations") set it up. When the answer has other
        # paragraphs, the whole paragraph goes; a one-paragraph answer loses only the sentences found.
        for s, kind in zip(sentences, kinds, strict=True):
            if hit and several and not kind and s.strip():
                kind = f"same paragraph as {hit}"
            if kind:
                removed.append(Removal(kind, s.strip()))
                kept.append("\n" if s.endswith("\n") else "")
            else:
                kept.append(s)
    clean = _tidy("".join(kept))
    return Screening(clean=clean, removed=removed, keyword_list=keyword_list(text))


_PARAGRAPH = re.compile(r"(\n[ \t]*\n)")


def _sentence_kind(s: str, english: bool) -> str | None:
    """Why a sentence is removed, or None when it is the candidate's prose."""
    if _encoded(s):
        return "encoded text"
    if _mixed_script_word(s):
        return "mixed-script words"
    if english and is_foreign(unicodedata.normalize("NFKC", s)):
        return "other language"
    if addresses_grader(s):
        return "addressed to the grader"
    return None


def _has_english(text: str) -> bool:
    """Whether the answer has English prose, so that a sentence in another language is out of place in it."""
    return any(
        not is_foreign(s) and sum(1 for w in _words(s) if w in _EN_FUNCTION) >= 3 for s in _SENTENCE.findall(text)
    )
