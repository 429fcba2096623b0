"""Red-flag detection: whether an answer makes a red flag's false claim, from the judge's read of the claim and the
answer's closest sentence to it, and whether the flag may then act on the score.

The small judge reads every claim of a question higher on some answers than on others (vocabulary lifts them all),
so a claim read means most next to the same answer's reads of the question's other claims: the detector adds each
read's excess over their mean, and the same for sentence similarity. Measured on the red-flag set (question-grouped
CV, benchmarks/quality.py): AUC 0.89 with the excesses, 0.79 for the claim read alone.

A red flag's claim is the false version of one of the question's key points ("precision is TP / (TP + FN)"). When the
answer states that key point about as well as the reference does, the judge's read of the point is the better of the
two (key-point reads are what the score is measured on), so the flag does not act: it is shown as possible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .embeddings import Embedder

# The gate's weights, in the order claim_features lists the features.
WEIGHTS = ("w_p", "w_dp", "w_sim", "w_dsim")


@dataclass(frozen=True)
class ClaimFeatures:
    p: float  # the judge's probability that the answer makes the claim
    dp: float  # p minus the mean of the answer's reads of the question's other claims (0 with no other claim)
    sim: float  # cosine of the answer's closest sentence to the claim
    dsim: float  # sim minus the mean of the other claims' closest-sentence cosines

    def vector(self) -> list[float]:
        return [self.p, self.dp, self.sim, self.dsim]


def claim_features(probabilities: list[float], similarities: list[float]) -> list[ClaimFeatures]:
    """Each claim's read and similarity, and their excess over the answer's other claims."""
    out = []
    for i, (p, s) in enumerate(zip(probabilities, similarities, strict=True)):
        other_p = [x for j, x in enumerate(probabilities) if j != i]
        other_s = [x for j, x in enumerate(similarities) if j != i]
        dp = p - float(np.mean(other_p)) if other_p else 0.0
        ds = s - float(np.mean(other_s)) if other_s else 0.0
        out.append(ClaimFeatures(p, dp, s, ds))
    return out


def detector_score(gate: dict, f: ClaimFeatures) -> float:
    """The detector's score: a logistic combination of the features when the red-flag set fitted one (weights
    w_p, w_dp, w_sim, w_dsim, b; a missing weight is 0), else the judge's probability alone."""
    if "b" not in gate:
        return f.p
    z = sum(float(gate.get(w, 0.0)) * x for w, x in zip(WEIGHTS, f.vector(), strict=True)) + float(gate["b"])
    return 1.0 / (1.0 + math.exp(-z))


def nearest_points(embedder: Embedder, claims: list[str], points: list[str]) -> list[int]:
    """For each claim, the index of the key point closest to it in meaning (-1 when there are no points)."""
    if not claims or not points:
        return [-1] * len(claims)
    vecs = embedder.encode([*claims, *points])
    return [int(i) for i in np.argmax(vecs[: len(claims)] @ vecs[len(claims) :].T, axis=1)]


def point_stated(gate: dict, position: float | None) -> bool:
    """Whether the key point a claim contradicts reads as stated, so the claim's flag must not act: its anchored
    position (0 an empty reply, 1 the reference) at or above the gate's `stated_point`."""
    bar = gate.get("stated_point")
    return bar is not None and position is not None and position >= float(bar)


def acts(gate: dict, f: ClaimFeatures, position: float | None) -> bool:
    """Whether a red flag acts on the score: its detector works (gate `effective`), its score reaches the gate's
    threshold, and the key point it contradicts is not stated."""
    return (
        bool(gate.get("effective"))
        and detector_score(gate, f) >= float(gate["threshold"])
        and not point_stated(gate, position)
    )
