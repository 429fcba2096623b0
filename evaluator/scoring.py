"""One answer end to end: similarity, judge, deterministic arithmetic, review flags, cache -> Verdict.

The LLM reports observations (levels, red flags, quotes); every number is computed here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import threading
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .backends import is_final
from .cache import VerdictCache, cache_key
from .config import DEFAULT_MAX_ANSWER_CHARS, JudgeSettings, cache_dir, resolve_judge_settings
from .embeddings import Embedder, bank_vectors_path, get_embedder, read_bank_vectors
from .errors import InputError
from .grade_model import (
    MODEL_FILE,
    Anchors,
    GradeModel,
    features_of,
    load_grade_model,
    read_variances,
    unfitted_fraction,
    unfitted_fraction_sd,
)
from .guards import evidence_supported, injection_spans, sanitised_variants, strip_invisible
from .judges import CriterionOut, FlagOut, Judge, JudgeResult, make_judge
from .key_points import best_sentences, key_points_of
from .models import (
    CriterionResult,
    Effect,
    KeyPointResult,
    Provenance,
    Question,
    RedFlag,
    RedFlagResult,
    ReviewFlag,
    Rubric,
    Similarity,
    Verdict,
)
from .prompts import PromptSet
from .resources import LoadedEvalSet, LoadedRubric, Resources
from .screen import screen

MIN_WORDS = 3
ANCHOR_FLOOR = "I don't know."  # the floor anchor: what an empty reply reads as, per question
DISAGREE_HIGH_SIM, DISAGREE_LOW_SCORE = 0.75, 0.25
DISAGREE_LOW_SIM, DISAGREE_HIGH_SCORE = 0.15, 0.60


# ---------------------------------------------------------------- arithmetic (no LLM)


def criteria_fraction(levels: dict[str, float], rubric: Rubric) -> float:
    """Weighted mean of criterion levels (0-4) as a fraction of the maximum."""
    total = sum(c.weight for c in rubric.criteria)
    return sum(c.weight * levels[c.id] / 4.0 for c in rubric.criteria) / total


def apply_red_flags(fraction: float, hits: list[RedFlag]) -> float:
    """Caps, then penalties, then fails; values are fractions of the scale."""
    f = fraction
    for flag in hits:
        if flag.effect == Effect.cap:
            f = min(f, flag.value)
    for flag in hits:
        if flag.effect == Effect.penalty:
            f -= flag.value
    if any(flag.effect == Effect.fail for flag in hits):
        f = 0.0
    return min(1.0, max(0.0, f))


def to_scale(fraction: float, rubric: Rubric) -> float:
    s = rubric.scale
    value = s.min + fraction * (s.max - s.min)
    if s.step:
        value = round(round(value / s.step) * s.step, 6)
    return min(s.max, max(s.min, value))


def combine(
    rubric: Rubric,
    criterion_levels: dict[str, float] | None,
    holistic_level: float | None,
    similarity: float | None,
    red_flag_hits: list[RedFlag],
    similarity_blend: float | None = None,
) -> float:
    """The final fraction 0-1: criteria and holistic levels, optional similarity blend, red flags."""
    hw = rubric.holistic_weight if holistic_level is not None else 0.0
    if criterion_levels is None:
        hw = 1.0
    parts = 0.0
    if hw < 1.0:
        parts += (1 - hw) * criteria_fraction(criterion_levels or {}, rubric)
    if hw > 0.0:
        parts += hw * (holistic_level or 0.0) / 4.0
    blend = rubric.similarity_blend if similarity_blend is None else similarity_blend
    if blend and similarity is not None:
        parts = (1 - blend) * parts + blend * min(1.0, max(0.0, similarity))
    return apply_red_flags(parts, red_flag_hits)


# ---------------------------------------------------------------- similarity


def similarity_figures(embedder: Embedder, q: Question, answer: str) -> Similarity:
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


# ---------------------------------------------------------------- the evaluator


@dataclass
class Evaluator:
    resources: Resources
    judge: Judge
    embedder_name: str = "minilm"
    cache: VerdictCache | None = None
    refresh: bool = False
    max_chars: int = DEFAULT_MAX_ANSWER_CHARS
    calibration: object | None = None  # a calibration.Mapping given by the user: applies to every rubric
    rubric_calibration: bool = True  # else a rubric's shipped mapping applies when fitted on these readings
    explain: bool | None = None
    prompts: PromptSet = field(init=False)

    def __post_init__(self):
        self.prompts = PromptSet(self.resources.prompts_dir)
        self._embedder: Embedder | None = None
        self.judge_calls = 0
        self._mappings: dict[str, object | None] = {}
        self._banks: set[Path] = set()
        self._banks_lock = threading.Lock()
        self._anchors: dict[str, Anchors | None] = {}
        self._anchors_lock = threading.Lock()

    def mapping_for(self, lr: LoadedRubric):
        """The calibration mapping for answers graded with this rubric: the user's, else the rubric's shipped one
        when it was fitted on these same readings, else none."""
        if self.calibration is not None:
            return self.calibration
        if not self.rubric_calibration or not lr.rubric.calibration:
            return None
        if lr.hash not in self._mappings:
            from .calibration import load_mapping, reading_of

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

    @property
    def embedder(self) -> Embedder:
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
            add_known = getattr(self.embedder, "add_known", None)
            if add_known:
                add_known(read_bank_vectors(bank_vectors_path(les.path), self.embedder.name))

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
                "calibration": getattr(self.mapping_for(lr), "id", None),
                # The grade model turns key-point reads into the score: refitting it must regrade.
                "grade_model": self.grade_model().id
                if lr.rubric.scoring == "key_points" and self.grade_model()
                else None,
                "explain": self.explain_enabled(),
                "max_chars": self.max_chars,
                "version": __version__,
            }
        )

    def answer_key(self, les: LoadedEvalSet, question_id: str, answer: str) -> str:
        """The cache key this evaluator gives an answer: equal only when the same settings would grade it."""
        q = les.by_id[question_id]
        return self.key_for(les, q, self.resources.rubric(les.rubric_id_for(q)), self.prepare_answer(answer)[0])

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
            calibration=getattr(self.mapping_for(lr), "id", None),
            cache_key=key,
        )

    def render_prompt(self, les: LoadedEvalSet, q: Question, answer: str) -> str:
        """The prompt of one judge call of this answer: the overall reading (holistic, else the first view) where
        the read plan has one, as --dry-run has always shown, else the first call."""
        text, _ = self.prepare_answer(answer)
        plan = self.judge.read_plan(q, self.resources.rubric(les.rubric_id_for(q)).rubric, text, self.prompts)
        return next((r for r in plan if r.kind in ("holistic", "view")), plan[0]).messages.text()

    # -- scoring

    def score(self, les: LoadedEvalSet, q: Question, answer: str) -> Verdict:
        self.use_bank_vectors(les)
        lr = self.resources.rubric(les.rubric_id_for(q))
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
        self, q: Question, rubric: Rubric, text: str, flags: list[ReviewFlag], prov, mapping
    ) -> Verdict:
        base = dict(question_id=q.id, scale_min=rubric.scale.min, scale_max=rubric.scale.max, provenance=prov)
        if not text:
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
        if len(text.split()) < MIN_WORDS:
            flags.append(ReviewFlag(code="too_short", reason=f"fewer than {MIN_WORDS} words"))

        sim = similarity_figures(self.embedder, q, text)
        spans = injection_spans(text)
        screened = screen(text)
        result = self._judge(q, rubric, text)
        if spans or screened.flagged:
            reason = screened.summary() if screened.flagged else f"text addressed to the grader: {spans[0][:80]!r}"
            flags.append(ReviewFlag(code="injection_suspected", reason=f"removed for a second reading: {reason}"))
            # Never let the injected text raise a level: judge copies without it and keep the lowest reading.
            if result.status == "scored":
                variants = [screened.clean] if screened.flagged and screened.clean else []
                for clean in dict.fromkeys(variants + sanitised_variants(text)):
                    result = _lower_of(result, self._judge(q, rubric, clean))
        if screened.keyword_list:
            flags.append(ReviewFlag(code="keyword_list", reason="a list of terms with no sentence in it"))
        usage = result.usage.model_copy()
        if result.status != "scored":
            flags.append(ReviewFlag(code="unscored", reason=result.reason))
            return Verdict(
                status="unscored",
                reason=result.reason,
                score=None,
                score_100=None,
                review_flags=flags,
                similarity=sim,
                usage=usage,
                answer_chars=len(text),
                raw_reply=result.raw_reply,
                retryable=result.retryable,
                **base,
            )
        if result.off_task:
            flags.append(ReviewFlag(code="off_task", reason="the judge found the answer off-task or addressed to it"))
        if result.keyidea is not None:
            # Text taken out by the screen earns nothing: similarity, evidence and length come from what is left.
            basis = screened.clean if screened.flagged and screened.clean else text
            if basis != text:
                sim = similarity_figures(self.embedder, q, basis)
            return self._key_point_verdict(q, rubric, basis, result, sim, flags, usage, base, mapping)

        # Explanation pass: generated after the levels are fixed; it never changes a number.
        if self.judge.mode == "probability" and self.explain_enabled():
            levels = {k: int(round(v.level)) for k, v in result.criteria.items() if v.level is not None}
            if not levels:
                # Criteria not read (an overall-only rubric): explain the overall reading on every criterion,
                # never an unread criterion as level 0.
                overall = overall_level(result)
                if overall is not None:
                    levels = {c.id: int(round(overall)) for c in rubric.criteria}
            ev, rationale, u, err = self.judge.explain(q, rubric, text, levels, self.prompts)
            usage.add(u)
            for cid, (quote, reason) in ev.items():
                if cid in result.criteria:
                    result.criteria[cid].evidence, result.criteria[cid].reason = quote, reason
            result.rationale = rationale or result.rationale
            if err:
                flags.append(ReviewFlag(code="explanation_failed", reason=f"no explanation: {err}"))

        criteria = []
        for c in rubric.criteria:
            co = result.criteria.get(c.id)
            supported = evidence_supported(co.evidence, text) if co else None
            criteria.append(
                CriterionResult(
                    id=c.id,
                    weight=c.weight,
                    level=round(co.level, 4) if co and co.level is not None else None,
                    argmax_level=co.argmax if co else None,
                    probabilities=co.probabilities if co else None,
                    probability_source=co.source if co else "",
                    # A quote the answer does not contain is removed (and flagged below), never shown as evidence.
                    evidence=co.evidence if co and supported is not False else "",
                    evidence_supported=supported,
                    reason=co.reason if co else "",
                )
            )
        flag_defs = {f.id: f for f in q.red_flags}
        red = []
        hits: list[RedFlag] = []
        for fid, fo in result.red_flags.items():
            f = flag_defs[fid]
            supported = evidence_supported(fo.evidence, text)
            if fo.hit:
                hits.append(f)
            if fo.hit or (fo.probability or 0) >= 0.25:
                red.append(
                    RedFlagResult(
                        id=fid,
                        hit=fo.hit,
                        effect=f.effect,
                        value=f.value,
                        probability=fo.probability,
                        evidence=fo.evidence,
                        evidence_supported=supported,
                    )
                )
        red_hits = [r for r in red if r.hit]

        result.rationale, invented = strip_unsupported_quotes(result.rationale, text)
        unsupported = (
            (["rationale"] if invented else [])
            + [c.id for c in criteria if c.evidence_supported is False]
            + [r.id for r in red_hits if r.evidence_supported is False]
        )
        if unsupported:
            flags.append(
                ReviewFlag(
                    code="unsupported_evidence", reason=f"quotes not found in the answer for: {', '.join(unsupported)}"
                )
            )

        levels = {c.id: c.level for c in criteria if c.level is not None}
        holistic = overall_level(result)
        crit_levels = levels if len(levels) == len(rubric.criteria) else None
        fraction = combine(rubric, crit_levels, holistic, sim.best_reference, hits)
        raw = to_scale(fraction, rubric)
        score, score_100 = raw, round(fraction * 100, 2)
        if mapping is not None:
            score, score_100 = _user_mapping(
                mapping, verdict_features(q.id, raw, holistic, levels, sim, len(text)), base
            )

        flags += _fail_and_disagreement_flags(hits, sim, fraction)

        return Verdict(
            status="scored",
            score=score,
            score_100=score_100,
            raw_score=raw,
            holistic_level=round(holistic, 4) if holistic is not None else None,
            holistic_probabilities=result.holistic.probabilities if result.holistic else None,
            views={
                k: {"expected": round(r.expected, 4), "probabilities": r.probabilities} for k, r in result.views.items()
            },
            criteria=criteria,
            red_flags=red,
            rationale=result.rationale,
            review_flags=flags,
            similarity=sim,
            usage=usage,
            answer_chars=len(text),
            **base,
        )

    # -- key-point verdicts (probability mode, rubric scoring "key_points")

    def grade_model(self) -> GradeModel | None:
        """The shipped grade model when it was fitted on this judge's readings, else None."""
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
                "question": q.model_dump(mode="json"),
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

    def _key_point_verdict(
        self, q, rubric, text, result: JudgeResult, sim: Similarity, flags, usage, base, mapping
    ) -> Verdict:
        points = key_points_of(q)
        evidence = best_sentences(self.embedder, points, text)
        anchors = self.anchors(q, rubric)
        row = features_of(
            result.keyidea.expected if result.keyidea else None,
            result.points,
            sim.best_reference,
            [e.similarity for e in evidence],
            len(text.split()),
            len(q.references[0].split()),
            anchors,
        )
        model = self.grade_model()
        fraction = model.fraction(row) if model else unfitted_fraction(row)
        variances = read_variances(result.keyidea.probabilities if result.keyidea else None, result.points, anchors)
        sd = model.fraction_sd(row, variances) if model else unfitted_fraction_sd(variances)
        red, hits = self._claim_flags(q, result, model, text)
        fraction = apply_red_flags(fraction, hits)
        kps = [
            KeyPointResult(
                text=p,
                probability=round(pr, 4),
                covered=pr >= 0.5,
                evidence=e.sentence if pr >= 0.5 else "",
                similarity=e.similarity,
            )
            for p, pr, e in zip(points, result.points, evidence, strict=True)
        ]
        raw = to_scale(fraction, rubric)
        score, score_100 = raw, round(fraction * 100, 2)
        if mapping is not None:
            levels = {"keyidea": row["keyidea"] * 4}
            score, score_100 = _user_mapping(mapping, verdict_features(q.id, raw, None, levels, sim, len(text)), base)
        flags += _fail_and_disagreement_flags(hits, sim, fraction)
        return Verdict(
            status="scored",
            score=score,
            score_100=score_100,
            raw_score=raw,
            score_sd=None if mapping is not None else round(sd * (rubric.scale.max - rubric.scale.min), 4),
            holistic_level=round(4 * result.keyidea.expected / 5, 4) if result.keyidea else None,
            views={
                "keyidea": {
                    "expected": round(result.keyidea.expected, 4),
                    "probabilities": result.keyidea.probabilities,
                }
            }
            if result.keyidea
            else {},
            criteria=derived_criteria(rubric, row, fraction),
            key_points=kps,
            red_flags=red,
            rationale=assembled_rationale(kps, red, row, model, score, rubric, base),
            review_flags=flags,
            similarity=sim,
            usage=usage,
            answer_chars=len(text),
            **base,
        )

    def _claim_flags(self, q: Question, result: JudgeResult, model: GradeModel | None, text: str):
        """Red flags read as their false claims: the judge's probability that the answer makes the claim, and the
        cosine of the answer's closest sentence to it. They act on the score only where the detector was measured
        to work on the red-flag set (AUC >= 0.75, threshold chosen there); otherwise they are shown as 'possible'
        with their probability and change nothing. Every flag read is listed."""
        defs = {f.id: f for f in q.red_flags}
        ids = [fid for fid in result.red_flags if fid in defs]
        near = best_sentences(self.embedder, [defs[i].claim or defs[i].description for i in ids], text)
        gate = model.red_flags if model else {}
        red, hits = [], []
        for fid, e in zip(ids, near, strict=True):
            f, p = defs[fid], result.red_flags[fid].probability or 0.0
            hit = bool(gate.get("effective")) and red_flag_detector(gate, p, e.similarity) >= float(gate["threshold"])
            if hit:
                hits.append(f)
            red.append(
                RedFlagResult(
                    id=fid, hit=hit, effect=f.effect, value=f.value, probability=round(p, 4), similarity=e.similarity
                )
            )
        return red, hits

    def _judge(self, q: Question, rubric: Rubric, text: str) -> JudgeResult:
        self.judge_calls += 1
        return self.judge.judge(q, rubric, text, self.prompts)


def _user_mapping(mapping, features: dict, base: dict) -> tuple[float, float]:
    """A calibration mapping's score and its /100 value; the verdict then reports the mapping's scale."""
    score = round(mapping.apply(features), 2)
    lo, hi = mapping.scale_min, mapping.scale_max
    base.update(scale_min=lo, scale_max=hi)
    return score, round(100 * (score - lo) / (hi - lo), 2)


def _fail_and_disagreement_flags(hits: list[RedFlag], sim: Similarity, fraction: float) -> list[ReviewFlag]:
    out = []
    fails = [h.id for h in hits if h.effect == Effect.fail]
    if fails:
        out.append(ReviewFlag(code="red_flag_fail", reason=f"red flag with effect 'fail': {', '.join(fails)}"))
    if sim.best_reference >= DISAGREE_HIGH_SIM and fraction <= DISAGREE_LOW_SCORE:
        why = f"close to the reference (cosine {sim.best_reference:.2f}) but judged low"
        out.append(ReviewFlag(code="judge_similarity_disagree", reason=why))
    elif sim.best_reference <= DISAGREE_LOW_SIM and fraction >= DISAGREE_HIGH_SCORE:
        why = f"far from the reference (cosine {sim.best_reference:.2f}) but judged high"
        out.append(ReviewFlag(code="judge_similarity_disagree", reason=why))
    return out


_QUOTE = re.compile(r'"([^"]{12,})"|“([^”]{12,})”')


def strip_unsupported_quotes(prose: str, answer: str) -> tuple[str, int]:
    """Generated prose with every quotation the answer does not contain replaced by a marker, and how many."""
    removed = 0

    def check(m: re.Match) -> str:
        nonlocal removed
        if evidence_supported(m.group(1) or m.group(2), answer):
            return m.group(0)
        removed += 1
        return "[quote not found in the answer, removed]"

    return _QUOTE.sub(check, prose), removed


def red_flag_detector(gate: dict, probability: float, similarity: float) -> float:
    """The detector's score: a logistic combination of the claim read and the claim's closest sentence when the
    red-flag set fitted one (weights w_p, w_sim, b), else the judge's probability alone."""
    if "w_p" not in gate:
        return probability
    z = float(gate["w_p"]) * probability + float(gate["w_sim"]) * similarity + float(gate["b"])
    return 1.0 / (1.0 + math.exp(-z))


def derived_criteria(rubric: Rubric, row: dict[str, float], fraction: float) -> list[CriterionResult]:
    """A level per criterion without a criterion read: correctness from the key-idea reading, coverage from the
    key points, any other criterion from the overall score. Each says what it was derived from."""
    sources = {
        "correctness": (row["keyidea"], "the key-idea reading"),
        "coverage": (row["points_mean"], "the key-point reads (mean probability)"),
        "completeness": (row["points_mean"], "the key-point reads (mean probability)"),
    }
    out = []
    for c in rubric.criteria:
        value, source = sources.get(c.id, (fraction, "the overall score (not read separately)"))
        level = None if np.isnan(value) else round(4 * float(value), 4)
        out.append(CriterionResult(id=c.id, weight=c.weight, level=level, derived_from=source))
    return out


def assembled_rationale(
    kps: list[KeyPointResult],
    red: list[RedFlagResult],
    row: dict[str, float],
    model: GradeModel | None,
    score: float,
    rubric: Rubric,
    base: dict,
) -> str:
    """The explanation, built from the reads only, so it cannot contradict the score or misquote the answer."""
    covered = [k for k in kps if k.covered]
    parts = [f"Score {score:g} of {base['scale_max']:g}. Covers {len(covered)} of {len(kps)} key points."]
    parts += [f'Covered: {k.text} (p={k.probability:.2f}), e.g. "{k.evidence}".' for k in covered]
    missing = [k for k in kps if not k.covered]
    if missing:
        parts.append("Missing: " + "; ".join(f"{k.text} (p={k.probability:.2f})" for k in missing) + ".")
    for r in red:
        if not r.hit and (r.probability or 0) < 0.5:
            continue
        effect = f"applied ({r.effect.value})" if r.hit else "possible, no effect on the score"
        parts.append(f"Red flag {r.id}: p={r.probability:.2f}, {effect}.")
    if not np.isnan(row["keyidea"]):
        parts.append(f"Key-idea reading {5 * row['keyidea']:.1f} of 5.")
    if model is not None:
        push = sorted(model.contributions(row).items(), key=lambda kv: -abs(kv[1]))[:2]
        parts.append("Moved most by: " + ", ".join(f"{f} ({'+' if v >= 0 else '-'})" for f, v in push) + ".")
    return " ".join(parts)


def verdict_features(question_id, raw, holistic, levels, sim: Similarity | None, chars: int) -> dict:
    return {
        "question_id": question_id,
        "score": raw,
        "holistic": holistic,
        "criteria": levels,
        "similarity": sim.best_reference if sim else None,
        "key_point_coverage": sim.key_point_coverage if sim else None,
        "lexical_overlap": sim.lexical_overlap if sim else None,
        "reference_chars": sim.reference_chars if sim else None,
        "answer_chars": chars,
    }


def overall_level(result: JudgeResult) -> float | None:
    """The overall level on 0-4: the holistic reading and the views (each read 0-5, rescaled), averaged."""
    readings = ([result.holistic.expected] if result.holistic else []) + [
        4 * r.expected / 5 for r in result.views.values()
    ]
    return sum(readings) / len(readings) if readings else None


def _lower_of(a: JudgeResult, b: JudgeResult | None) -> JudgeResult:
    """Per criterion and holistic: the lower level; per red flag: the higher probability."""
    if b is None or b.status != "scored":
        return a
    out = a.model_copy(deep=True)
    for cid, co in b.criteria.items():
        mine = out.criteria.get(cid)
        if mine is None or (co.level is not None and mine.level is not None and co.level < mine.level):
            out.criteria[cid] = CriterionOut(**co.model_dump())
    if b.holistic and (out.holistic is None or b.holistic.expected < out.holistic.expected):
        out.holistic = b.holistic
    for name, r in b.views.items():
        if name not in out.views or r.expected < out.views[name].expected:
            out.views[name] = r
    if b.keyidea and (out.keyidea is None or b.keyidea.expected < out.keyidea.expected):
        out.keyidea = b.keyidea
    if len(b.points) == len(out.points):
        out.points = [min(x, y) for x, y in zip(out.points, b.points, strict=True)]
    for fid, fo in b.red_flags.items():
        mine = out.red_flags.get(fid)
        if mine is None or (fo.probability or 0) > (mine.probability or 0) or (fo.hit and not mine.hit):
            out.red_flags[fid] = FlagOut(**fo.model_dump())
    out.usage.add(b.usage)
    return out


# ---------------------------------------------------------------- public API


def build_evaluator(
    judge: str | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    settings: JudgeSettings | None = None,
    embedder: str = "minilm",
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
        from .calibration import load_mapping

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
