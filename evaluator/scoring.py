"""One answer end to end: similarity, judge (with the injection guard), verdict, cache -> Verdict.

`Evaluator` holds what grading needs (resources, judge, embedder, cache, mappings) and runs the steps; the LLM
reports observations (levels, reads, quotes) and every number is computed in code: `criteria_verdict` and
`key_point_verdict` build the verdict of each plan, `arithmetic` turns levels into a score.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._version import __version__
from .backends import is_final
from .cache import VerdictCache, cache_key
from .config import DEFAULT_EMBEDDER, DEFAULT_MAX_ANSWER_CHARS, JudgeSettings, cache_dir, resolve_judge_settings
from .criteria_verdict import criteria_verdict
from .embeddings import CachedEmbedder, bank_vectors_path, get_embedder, read_bank_vectors
from .errors import InputError
from .grade_model import MODEL_FILE, Anchors, GradeModel, load_grade_model
from .guards import injection_spans, sanitised_variants, strip_invisible
from .judges import Judge, JudgeResult, make_judge
from .key_point_verdict import key_point_verdict
from .key_points import best_sentences, key_points_of
from .mapping import Mapping, load_mapping, reading_of
from .models import Provenance, Question, ReviewFlag, Rubric, Similarity, Usage, Verdict
from .prompts import PromptSet
from .reading import Reading, lower_of, overall_level
from .resources import LoadedEvalSet, LoadedRubric, Resources
from .screen import screen
from .similarity import cut_spans, off_topic_spans, similarity_figures

MIN_WORDS = 3
ANCHOR_FLOOR = "I don't know."  # the floor anchor: what an empty reply reads as, per question


# ---------------------------------------------------------------- the evaluator


@dataclass
class Evaluator:
    resources: Resources
    judge: Judge
    embedder_name: str = DEFAULT_EMBEDDER
    cache: VerdictCache | None = None
    refresh: bool = False
    max_chars: int = DEFAULT_MAX_ANSWER_CHARS
    calibration: Mapping | None = None  # given by the user: applies to every rubric
    rubric_calibration: bool = True  # else a rubric's shipped mapping applies when fitted on these readings
    explain: bool | None = None
    prompts: PromptSet = field(init=False)

    def __post_init__(self):
        self.prompts = PromptSet(self.resources.prompts_dir)
        self._embedder: CachedEmbedder | None = None
        self.judge_calls = 0  # readings asked of the judge (second readings and anchors included): benchmarks report it
        self._mappings: dict[str, Mapping | None] = {}
        self._banks: set[Path] = set()
        self._banks_lock = threading.Lock()
        self._anchors: dict[str, Anchors | None] = {}
        self._anchors_lock = threading.Lock()

    def mapping_for(self, lr: LoadedRubric) -> Mapping | None:
        """The calibration mapping for answers graded with this rubric: the user's, else the rubric's shipped one
        when it was fitted on these same readings, else none."""
        if self.calibration is not None:
            return self.calibration
        if not self.rubric_calibration or not lr.rubric.calibration:
            return None
        if lr.hash not in self._mappings:
            # The same provenance fields `evaluator calibrate` records as the mapping's fitted_for.
            reading = reading_of(
                {
                    "judge_backend": self.judge.backend_name,
                    "judge_model": self.judge.model_name,
                    "judge_mode": self.judge.mode,
                    "rubric_id": lr.rubric.id,
                    "rubric_version": lr.rubric.version,
                    "embedding_model": self.embedder.name,  # the model loads lazily: naming it costs nothing
                }
            )
            m = load_mapping(lr.path.parent / lr.rubric.calibration)
            self._mappings[lr.hash] = m if m.fits(reading) else None
        return self._mappings[lr.hash]

    def mapping_id(self, lr: LoadedRubric) -> str | None:
        mapping = self.mapping_for(lr)
        return mapping.id if mapping is not None else None

    @property
    def embedder(self) -> CachedEmbedder:
        if self._embedder is None:
            self._embedder = get_embedder(self.embedder_name)
        return self._embedder

    def use_bank_vectors(self, les: LoadedEvalSet) -> None:
        """Hands the embedder the reference vectors shipped beside the eval set, if any, so a bank is not
        encoded again on each new machine (`evaluator questions vectors` writes them)."""
        with self._banks_lock:
            if les.path in self._banks:
                return
            self._banks.add(les.path)
            self.embedder.add_known(read_bank_vectors(bank_vectors_path(les.path), self.embedder.name))

    def explain_enabled(self) -> bool:
        return self.judge.explain_default if self.explain is None else self.explain

    # -- inputs

    def prepare_answer(self, answer: str) -> tuple[str, list[ReviewFlag]]:
        flags: list[ReviewFlag] = []
        text = strip_invisible(unicodedata.normalize("NFC", answer)).replace("\r\n", "\n").strip()
        if len(text) > self.max_chars:
            flags.append(
                ReviewFlag(
                    code="truncated",
                    reason=f"answer of {len(text)} characters truncated to the limit of {self.max_chars}",
                )
            )
            text = text[: self.max_chars]
        return text, flags

    def key_for(self, les: LoadedEvalSet, q: Question, lr: LoadedRubric, answer: str) -> str:
        return cache_key(
            {
                "answer": answer,
                "question": q.model_dump(mode="json"),
                "eval_set": [les.eval_set.id, les.eval_set.version],
                "rubric": lr.hash,
                "prompts": self.prompts.hash,
                "judge": self.judge.settings.public_params() | self.judge.describe(),
                "embedder": self.embedder_name,
                "calibration": self.mapping_id(lr),
                # The grade model turns key-point reads into the score: refitting it must regrade.
                "grade_model": model.id
                if lr.rubric.scoring == "key_points" and (model := self.grade_model())
                else None,
                "explain": self.explain_enabled(),
                "max_chars": self.max_chars,
                "version": __version__,
            }
        )

    def answer_key(self, les: LoadedEvalSet, question_id: str, answer: str) -> str:
        """The cache key this evaluator gives an answer: equal only when the same settings would grade it."""
        q = les.by_id[question_id]
        return self.key_for(les, q, self.resources.rubric_for(les, q), self.prepare_answer(answer)[0])

    def provenance(self, les: LoadedEvalSet, q: Question, lr: LoadedRubric, key: str) -> Provenance:
        return Provenance(
            eval_set=les.eval_set.id,
            eval_set_version=les.eval_set.version,
            question_id=q.id,
            rubric_id=lr.rubric.id,
            rubric_version=lr.rubric.version,
            rubric_hash=lr.hash,
            prompt_hash=self.prompts.hash,
            judge_backend=self.judge.backend_name,
            judge_model=self.judge.model_name,
            judge_mode=self.judge.mode,
            judge_params=self.judge.settings.public_params(),
            embedding_model=self.embedder.name,
            evaluator_version=__version__,
            calibration=self.mapping_id(lr),
            cache_key=key,
        )

    def render_prompt(self, les: LoadedEvalSet, q: Question, answer: str) -> str:
        """The prompt of one judge call of this answer: the overall reading (holistic, else the first view) where
        the read plan has one, as --dry-run has always shown, else the first call."""
        text, _ = self.prepare_answer(answer)
        plan = self.judge.read_plan(q, self.resources.rubric_for(les, q).rubric, text, self.prompts)
        return next((r for r in plan if r.kind in ("holistic", "view")), plan[0]).messages.text()

    # -- scoring

    def score(self, les: LoadedEvalSet, q: Question, answer: str) -> Verdict:
        self.use_bank_vectors(les)
        lr = self.resources.rubric_for(les, q)
        rubric = lr.rubric
        text, flags = self.prepare_answer(answer)
        key = self.key_for(les, q, lr, text)
        if self.cache is not None and not self.refresh:
            hit = self.cache.get(key)
            if hit is not None:
                cached = Verdict.model_validate_json(hit)
                # Unscored verdicts cached by earlier versions (a wrong key, a bad reply) are graded again.
                if is_final(cached.status, cached.reason, cached.retryable):
                    return cached
        prov = self.provenance(les, q, lr, key)
        verdict = self._score_uncached(q, rubric, text, flags, prov, self.mapping_for(lr))
        if self.cache is not None and is_final(verdict.status, verdict.reason, verdict.retryable):
            self.cache.put(key, verdict.model_dump_json())
        return verdict

    def _score_uncached(
        self, q: Question, rubric: Rubric, text: str, flags: list[ReviewFlag], prov: Provenance, mapping: Mapping | None
    ) -> Verdict:
        base = dict(question_id=q.id, scale_min=rubric.scale.min, scale_max=rubric.scale.max, provenance=prov)
        if not text:
            return _empty_verdict(rubric, flags, base)
        if len(text.split()) < MIN_WORDS:
            flags.append(ReviewFlag(code="too_short", reason=f"fewer than {MIN_WORDS} words"))
        sim = similarity_figures(self.embedder, q, text)
        result, basis, set_aside = self._read(q, rubric, text, flags)
        if set_aside:
            base["set_aside"] = set_aside
        usage = result.usage.model_copy()
        if result.status != "scored":
            return _unscored_verdict(result, flags, sim, usage, len(text), base)
        if result.off_task:
            flags.append(ReviewFlag(code="off_task", reason="the judge found the answer off-task or addressed to it"))
        if result.keyidea is None:
            reading = Reading(q, rubric, text, result, sim, flags, usage, base, mapping)
            self._explain(reading)
            return criteria_verdict(reading)
        # Text taken out by the screen earns nothing: similarity, evidence and length come from what is left.
        if basis != text:
            sim = similarity_figures(self.embedder, q, basis)
        reading = Reading(q, rubric, basis, result, sim, flags, usage, base, mapping)
        # Anchors feed only the grade model, fitted on the embedded judge's digit reads: an endpoint's one
        # structured reply is scored without either, so it spends no anchor calls.
        anchors = self.anchors(q, rubric) if self.judge.mode == "probability" else None
        return key_point_verdict(reading, self.embedder, self.grade_model(), anchors)

    def _read(
        self, q: Question, rubric: Rubric, text: str, flags: list[ReviewFlag]
    ) -> tuple[JudgeResult, str, list[str]]:
        """The judge's reading, the text left once the screen removed what is not an answer, and the sentences
        set aside as off the subject. When anything looks addressed to the grader, copies without it are read
        too; when some sentences are about neither the question nor its answer, a copy without them is read; the
        lowest reading of each is kept, so neither kind of text can raise a level."""
        spans = injection_spans(text)
        screened = screen(text)
        result = self._judge(q, rubric, text)
        if spans or screened.flagged:
            reason = screened.summary() if screened.flagged else f"text addressed to the grader: {spans[0][:80]!r}"
            flags.append(ReviewFlag(code="injection_suspected", reason=f"removed for a second reading: {reason}"))
            if result.status == "scored":
                variants = [screened.clean] if screened.flagged and screened.clean else []
                for clean in dict.fromkeys(variants + sanitised_variants(text)):
                    result = lower_of(result, self._judge(q, rubric, clean))
        if screened.keyword_list:
            flags.append(ReviewFlag(code="keyword_list", reason="a list of terms with no sentence in it"))
        basis = screened.clean if screened.flagged and screened.clean else text
        off = off_topic_spans(self.embedder, q, basis) if result.status == "scored" else []
        if off:
            result = lower_of(result, self._judge(q, rubric, cut_spans(basis, off)))
        return result, basis, [basis[a:b] for a, b in off]

    def _explain(self, r: Reading) -> None:
        """The explanation pass (probability mode): generated after the levels are fixed; it never changes a
        number, only fills each criterion's evidence and reason and the rationale."""
        if self.judge.mode != "probability" or not self.explain_enabled():
            return
        result = r.result
        levels = {k: int(round(v.level)) for k, v in result.criteria.items() if v.level is not None}
        overall = overall_level(result)
        if not levels and overall is not None:
            # Criteria not read (an overall-only rubric): explain the overall reading on every criterion,
            # never an unread criterion as level 0.
            levels = {c.id: int(round(overall)) for c in r.rubric.criteria}
        ev, rationale, u, err = self.judge.explain(r.q, r.rubric, r.text, levels, self.prompts)
        r.usage.add(u)
        for cid, (quote, reason) in ev.items():
            if cid in result.criteria:
                result.criteria[cid].evidence, result.criteria[cid].reason = quote, reason
        result.rationale = rationale or result.rationale
        if err:
            r.flags.append(ReviewFlag(code="explanation_failed", reason=f"no explanation: {err}"))

    # -- key-point verdicts (rubric scoring "key_points")

    def grade_model(self) -> GradeModel | None:
        """The shipped grade model when it was fitted on this judge's readings, else None."""
        if self.judge.mode != "probability":
            # Fitted on digit reads: a structured reply's yes/no and one-hot levels are not those readings.
            return None
        if not hasattr(self, "_grade_model"):
            m = load_grade_model(self.resources.root / "rubrics" / MODEL_FILE)
            reading = {
                "judge_backend": self.judge.backend_name,
                "judge_model": self.judge.model_name,
                "prompt_hash": self.prompts.points_hash,
            } | ({"read_version": str(rv)} if (rv := self.judge.describe().get("read_version")) else {})
            self._grade_model = m if m is not None and m.fits(reading) else None
        return self._grade_model

    def anchors(self, q: Question, rubric: Rubric) -> Anchors | None:
        """The question's floor and ceiling (see grade_model.Anchors): the judge reads an empty reply and the
        reference answer as if they were candidates' answers. Read once per question and judge, kept in the verdict
        cache; None when either read failed (the relative features are then missing and imputed)."""
        key = cache_key(
            {
                "anchors": ANCHOR_FLOOR,
                # How many points the score counts does not change what the judge reads.
                "question": q.model_dump(mode="json", exclude={"points_required"}),
                "prompts": self.prompts.points_hash,
                "judge": self.judge.settings.public_params() | self.judge.describe(),
                "embedder": self.embedder_name,
            }
        )
        with self._anchors_lock:
            if key not in self._anchors:
                self._anchors[key] = self._read_anchors(q, rubric, key)
            return self._anchors[key]

    def _read_anchors(self, q: Question, rubric: Rubric, key: str) -> Anchors | None:
        hit = self.cache.get(key) if self.cache is not None and not self.refresh else None
        if hit:
            return Anchors(**json.loads(hit))
        ceiling_text = self.prepare_answer(q.references[0])[0]
        floor, ceiling = self._judge(q, rubric, ANCHOR_FLOOR), self._judge(q, rubric, ceiling_text)
        if "scored" != floor.status or "scored" != ceiling.status or not (floor.keyidea and ceiling.keyidea):
            return None
        points = key_points_of(q)
        anchors = Anchors(
            keyidea=(floor.keyidea.expected / 5, ceiling.keyidea.expected / 5),
            points=list(zip(floor.points, ceiling.points, strict=True)),
            cosine_floor=similarity_figures(self.embedder, q, ANCHOR_FLOOR).best_reference,
            evidence_ceiling=float(
                np.mean([e.similarity for e in best_sentences(self.embedder, points, ceiling_text)])
            ),
        )
        if self.cache is not None:
            self.cache.put(key, json.dumps(dataclasses.asdict(anchors)))
        return anchors

    def _judge(self, q: Question, rubric: Rubric, text: str) -> JudgeResult:
        self.judge_calls += 1
        return self.judge.judge(q, rubric, text, self.prompts)


def _empty_verdict(rubric: Rubric, flags: list[ReviewFlag], base: dict) -> Verdict:
    flags.append(ReviewFlag(code="empty_answer", reason="the answer is empty"))
    return Verdict(
        status="scored",
        score=rubric.scale.min,
        score_100=0.0,
        raw_score=rubric.scale.min,
        review_flags=flags,
        rationale="Empty answer: nothing to grade.",
        **base,
    )


def _unscored_verdict(
    result: JudgeResult, flags: list[ReviewFlag], sim: Similarity, usage: Usage, chars: int, base: dict
) -> Verdict:
    flags.append(ReviewFlag(code="unscored", reason=result.reason))
    return Verdict(
        status="unscored",
        reason=result.reason,
        score=None,
        score_100=None,
        review_flags=flags,
        similarity=sim,
        usage=usage,
        answer_chars=chars,
        raw_reply=result.raw_reply,
        retryable=result.retryable,
        **base,
    )


# ---------------------------------------------------------------- public API


def build_evaluator(
    judge: str | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    settings: JudgeSettings | None = None,
    embedder: str = DEFAULT_EMBEDDER,
    use_cache: bool = True,
    refresh: bool = False,
    cache_path: str | os.PathLike | None = None,
    calibration: str | os.PathLike | None = None,
    rubric_calibration: bool = True,
    explain: bool | None = None,
    max_chars: int = DEFAULT_MAX_ANSWER_CHARS,
    **judge_kw,
) -> Evaluator:
    resources = Resources.locate(data_dir)
    settings = settings or resolve_judge_settings(judge, explain=explain, **judge_kw)
    mapping = None
    if calibration:
        mapping = load_mapping(Path(calibration))
    cache = VerdictCache(Path(cache_path) if cache_path else cache_dir() / "verdicts.sqlite3") if use_cache else None
    return Evaluator(
        resources=resources,
        judge=make_judge(settings),
        embedder_name=embedder,
        cache=cache,
        refresh=refresh,
        max_chars=max_chars,
        calibration=mapping,
        rubric_calibration=rubric_calibration,
        explain=explain,
    )


def score_answer(
    question_id: str, answer: str, *, eval_set: str | None = None, evaluator: Evaluator | None = None, **kw
) -> Verdict:
    """Scores one answer to a bank question. `kw` go to build_evaluator (judge=..., use_cache=...)."""
    ev = evaluator or build_evaluator(**kw)
    if not answer or not answer.strip():
        raise InputError("the answer is empty: pass the candidate's text (--answer, --answer-file or stdin)")
    les, q = ev.resources.find_question(question_id, eval_set)
    return ev.score(les, q, answer)
