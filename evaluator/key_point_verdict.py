"""The verdict of the key-point plan (rubric `scoring: key_points`: the embedded judge's reads, or an endpoint's
one structured reply, structured_points.py): the reads become features, the grade model turns them into the
fraction of full marks, red flags act where their detector works, and the rationale is assembled from the reads,
so it cannot contradict the score or misquote the answer.
"""

from __future__ import annotations

import numpy as np

from .arithmetic import apply_red_flags, to_scale
from .criteria_verdict import criterion_results
from .embeddings import Embedder
from .grade_model import (
    Anchors,
    GradeModel,
    evidence_point,
    features_of,
    point_positions,
    read_variances,
    unfitted_fraction,
    unfitted_fraction_sd,
)
from .guards import evidence_supported
from .key_points import Evidence, best_sentences, key_points_of, points_required_of
from .models import (
    CriterionResult,
    KeyPointResult,
    Question,
    RedFlag,
    RedFlagResult,
    ReviewFlag,
    Rubric,
    Verdict,
)
from .reading import Reading, fail_and_disagreement_flags, stored_features
from .red_flags import acts, claim_features, detector_score, nearest_points, point_stated


def key_point_verdict(r: Reading, embedder: Embedder, model: GradeModel | None, anchors: Anchors | None) -> Verdict:
    q, result = r.q, r.result
    points = key_points_of(q)
    required = points_required_of(q, len(points))
    evidence = best_sentences(embedder, points, r.text)
    row = features_of(
        result.keyidea.expected if result.keyidea else None,
        result.points,
        r.sim.best_reference,
        [e.similarity for e in evidence],
        len(r.text.split()),
        len(q.references[0].split()),
        anchors,
        required,
    )
    gate = model  # the red-flag gate, measured on the red-flag set, holds whatever formula scores
    if model is not None and not model.applies_to(row):
        model = None  # the question's anchors could not be read: the unfitted formula
    fraction = model.fraction(row) if model else unfitted_fraction(row)
    variances = read_variances(
        result.keyidea.probabilities if result.keyidea else None, result.points, anchors, required, bool(evidence)
    )
    sd = model.fraction_sd(row, variances) if model else unfitted_fraction_sd(variances)
    positions = point_positions(result.points, anchors)
    red, hits = claim_flags(q, r, embedder, gate, positions)
    before, fraction = fraction, apply_red_flags(fraction, hits)
    r.flags += red_flag_review(hits, before, fraction)
    fraction, listed_note = r.keyword_list_cap(fraction)
    quotes = supported_quotes(r, len(points))
    kps = key_point_results(points, result.points, evidence, quotes, positions)
    raw = to_scale(fraction, r.rubric)
    k = result.keyidea
    holistic_level = round(4 * k.expected / 5, 4) if k else None
    # An endpoint judge reports each criterion's level (quotes checked); the embedded judge's are derived.
    criteria = (
        criterion_results(r.rubric, result, r.text) if result.criteria else derived_criteria(r.rubric, row, fraction)
    )
    flag_unsupported(r, quotes, criteria)
    score, score_100 = r.final_score(
        raw, fraction, stored_features(q.id, raw, holistic_level, criteria, r.sim, len(r.text))
    )
    r.flags += fail_and_disagreement_flags(hits, r.sim, fraction)
    return r.scored(
        score,
        score_100,
        raw,
        score_sd=None if r.mapping is not None else round(sd * (r.rubric.scale.max - r.rubric.scale.min), 4),
        holistic_level=holistic_level,
        views={"keyidea": {"expected": round(k.expected, 4), "probabilities": k.probabilities}} if k else {},
        criteria=criteria,
        key_points=kps,
        red_flags=red,
        rationale=assembled_rationale(kps, red, row, model, score, r.base["scale_max"], positions, required)
        + listed_note
        + unfitted_note(r, model),
    )


# A red flag that takes this much of the scale off an answer is checked by a person: on the bank exemplars the
# detector's hits on weak answers were right (their scores sit below the caps anyway), and the few on partial and
# strong ones were mostly not (a claim worded as the negation of what the answer says: benchmarks/quality.py).
RED_FLAG_REVIEW_DROP = 0.10


def red_flag_review(hits: list[RedFlag], before: float, after: float) -> list[ReviewFlag]:
    """A review flag when acting red flags lowered the fraction by RED_FLAG_REVIEW_DROP or more."""
    if not hits or before - after < RED_FLAG_REVIEW_DROP:
        return []
    why = f"red flag {', '.join(h.id for h in hits)} lowered the score from {100 * before:.0f}% to {100 * after:.0f}%"
    return [ReviewFlag(code="red_flag_applied", reason=why + ": check that the answer makes the claim")]


def supported_quotes(r: Reading, n: int) -> list[str | None]:
    """Per key point, the endpoint's quote: the quote when the answer contains it, "" when it gave none, None
    when the answer does not contain it (dropped). All "" in probability mode, which quotes nothing."""
    given = r.result.point_evidence if len(r.result.point_evidence) == n else [""] * n
    return [q if evidence_supported(q, r.text) is not False else None for q in given]


def flag_unsupported(r: Reading, quotes: list[str | None], criteria: list[CriterionResult]) -> None:
    """Quotes the judge gave that the answer does not contain were dropped: the review flag says where."""
    where = [f"key point {i}" for i, q in enumerate(quotes, 1) if q is None]
    where += [c.id for c in criteria if c.evidence_supported is False]
    if where:
        r.flags.append(
            ReviewFlag(code="unsupported_evidence", reason=f"quotes not found in the answer for: {', '.join(where)}")
        )


def unfitted_note(r: Reading, model: GradeModel | None) -> str:
    """What a structured (endpoint) reading is scored with, since the grade model does not apply to it."""
    if r.result.mode != "structured" or model is not None:
        return ""
    return (
        " Scored by the endpoint judge's key-point reply: the mean of the key-idea and key-point readings (the "
        "grade model is fitted on the embedded judge only)."
    )


def key_point_results(
    points: list[str],
    probabilities: list[float],
    evidence: list[Evidence],
    quotes: list[str | None] | None = None,
    positions: list[float] | None = None,
) -> list[KeyPointResult]:
    """Each point with the probability that the answer states it; a covered point quotes the judge's supported
    quote where it gave one (an endpoint), else its closest sentence. With the question's anchors a point is
    covered when its reading is nearer the reference answer's than an empty reply's (the score's own measure);
    without them, when its probability is 0.5 or more."""
    quotes = quotes or [""] * len(points)
    covered = [x >= 0.5 for x in positions] if positions else [pr >= 0.5 for pr in probabilities]
    return [
        KeyPointResult(
            text=p,
            probability=round(pr, 4),
            covered=c,
            evidence=(qt or e.sentence) if c else "",
            similarity=e.similarity,
        )
        for p, pr, e, qt, c in zip(points, probabilities, evidence, quotes, covered, strict=True)
    ]


def claim_flags(
    q: Question, r: Reading, embedder: Embedder, model: GradeModel | None, positions: list[float] | None = None
) -> tuple[list[RedFlagResult], list[RedFlag]]:
    """Red flags read as their false claims: the judge's probability that the answer makes the claim, and the
    cosine of the answer's closest sentence to it, each also against the answer's other claims (red_flags.py). They
    act on the score only where the detector was measured to work on the red-flag set (AUC >= 0.75, threshold
    chosen there) and the key point the claim contradicts is not stated (`positions`: the points' anchored
    readings); otherwise they are shown as 'possible' with their probability and change nothing. Every flag read
    is listed."""
    defs = {f.id: f for f in q.red_flags}
    ids = [fid for fid in r.result.red_flags if fid in defs]
    claims = [defs[i].claim or defs[i].description for i in ids]
    near = best_sentences(embedder, claims, r.text)
    probs = [r.result.red_flags[fid].probability or 0.0 for fid in ids]
    feats = claim_features(probs, [e.similarity for e in near])
    gate = model.red_flags if model else {}
    points = key_points_of(q)
    opposite = nearest_points(embedder, claims, points) if gate.get("stated_point") is not None else [-1] * len(ids)
    red, hits = [], []
    for fid, e, f, k in zip(ids, near, feats, opposite, strict=True):
        flag = defs[fid]
        position = positions[k] if positions and k >= 0 else None
        hit = acts(gate, f, position)
        if hit:
            hits.append(flag)
        # Named only where the guard withheld a flag that would have acted.
        withheld = not hit and k >= 0 and point_stated(gate, position) and acts(gate, f, None)
        stated = points[k] if withheld else ""
        red.append(
            RedFlagResult(
                id=fid,
                hit=hit,
                effect=flag.effect,
                value=flag.value,
                probability=round(f.p, 4),
                similarity=e.similarity,
                detector=round(detector_score(gate, f), 4) if gate.get("effective") else None,
                stated_point=stated,
            )
        )
    return red, hits


def derived_criteria(rubric: Rubric, row: dict[str, float], fraction: float) -> list[CriterionResult]:
    """A level per criterion without a criterion read: correctness from the key-idea reading, coverage from the
    key points, any other criterion from the overall score. Each says what it was derived from. With the
    question's anchors the readings are placed between an empty reply (level 0) and the reference (level 4)."""
    between = "between an empty reply and the reference"
    points = ("points_rel", f"the key-point reads, {between}")
    if np.isnan(row.get("points_rel", np.nan)):
        points = ("points_mean", "the key-point reads (mean probability)")
    idea = ("keyidea_rel", f"the key-idea reading, {between}")
    if np.isnan(row.get("keyidea_rel", np.nan)):
        idea = ("keyidea", "the key-idea reading")
    sources = {
        "correctness": (row[idea[0]], idea[1]),
        "coverage": (row[points[0]], points[1]),
        "completeness": (row[points[0]], points[1]),
    }
    out = []
    for c in rubric.criteria:
        value, source = sources.get(c.id, (fraction, "the overall score (not read separately)"))
        level = None if np.isnan(value) else round(4 * float(np.clip(value, 0.0, 1.0)), 4)
        out.append(CriterionResult(id=c.id, weight=c.weight, level=level, derived_from=source))
    return out


def assembled_rationale(
    kps: list[KeyPointResult],
    red: list[RedFlagResult],
    row: dict[str, float],
    model: GradeModel | None,
    score: float,
    scale_max: float,
    positions: list[float] | None = None,
    required: int | None = None,
) -> str:
    """The explanation, built from the reads only, so it cannot contradict the score or misquote the answer. With
    the question's anchors each point says how far its reading is from an empty reply's (0%) toward the reference
    answer's (100%), the measure the score averages. When the question asks for only `required` of its points,
    the points beyond them are not missing once that many are covered."""
    pos = positions if positions and len(positions) == len(kps) else [None] * len(kps)

    def read(k: KeyPointResult, x: float | None) -> str:
        return f"p={k.probability:.2f}" + (
            f", {100 * min(max(x, 0.0), 1.0):.0f}% of the reference's reading" if x is not None else ""
        )

    covered = [(k, x) for k, x in zip(kps, pos, strict=True) if k.covered]
    parts = [f"Score {score:g} of {scale_max:g}. Covers {len(covered)} of {len(kps)} key points."]
    if required:
        parts.append(f"The question asks for {required} of them: the {required} best read count.")
    parts += [f'Covered: {k.text} ({read(k, x)}), e.g. "{k.evidence}".' for k, x in covered]
    missing = [(k, x) for k, x in zip(kps, pos, strict=True) if not k.covered]
    if missing:
        listed = "; ".join(f"{k.text} ({read(k, x)})" for k, x in missing)
        if not required:
            parts.append(f"Missing: {listed}.")
        elif len(covered) < required:
            parts.append(f"Missing {required - len(covered)} more of: {listed}.")
        else:
            parts.append(f"Not needed: {listed}.")
    for f in red:
        if not f.hit and not f.stated_point and (f.probability or 0) < 0.5:
            continue
        if f.hit:
            effect = f"applied ({f.effect.value})"
        elif f.stated_point:
            effect = f"possible, no effect on the score: the answer states the point it contradicts ({f.stated_point})"
        else:
            effect = "possible, no effect on the score"
        parts.append(f"Red flag {f.id}: p={f.probability:.2f}, {effect}.")
    if not np.isnan(row["keyidea"]):
        parts.append(f"Key-idea reading {5 * row['keyidea']:.1f} of 5.")
    if model is not None and model.features == ["coverage_rel"]:
        counted_points = f"the {required} best-read key points" if required else "the key points"
        similar = (
            " and the closest sentence's similarity to them (against the reference's own) as another"
            if evidence_point(len(kps), row["evidence_rel"])
            else ""
        )
        parts.append(
            f"The score is the share of {counted_points} stated, with the key idea as one more point{similar}, each "
            "reading placed between what an empty reply and the reference answer read."
        )
    elif model is not None:
        push = sorted(model.contributions(row).items(), key=lambda kv: -abs(kv[1]))[:2]
        parts.append("Moved most by: " + ", ".join(f"{f} ({'+' if v >= 0 else '-'})" for f, v in push) + ".")
    return " ".join(parts)
