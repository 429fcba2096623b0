"""The backend contract: what a judge backend does, what it returns, and how it fails.

A backend knows two operations: read the probability of each digit as the next token (`read_digits`), and complete
a JSON reply (`complete_json`). `Judge` (judges.py) builds its modes on these two. The backends themselves live in
openai_backend.py, local_model.py, fakes.py (tests) and scaleout.py (replies of an imported batch).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

from pydantic import BaseModel

from .errors import JudgeConfigError
from .models import Usage
from .prompts import Messages

LEVEL_DIGITS = ["0", "1", "2", "3", "4"]
VIEW_DIGITS = ["0", "1", "2", "3", "4", "5"]
FLAG_DIGITS = ["0", "1"]


# ---------------------------------------------------------------- failures


class JudgeCallError(Exception):
    """A judge call gave nothing to grade with: an unusable reply (`JudgeReplyError`) or none (`EndpointError`)."""


class JudgeReplyError(JudgeCallError):
    """A reply that cannot be used (invalid JSON, schema violation, truncated). `raw`: the text, if any."""

    def __init__(self, message: str, raw: str | None = None):
        super().__init__(message)
        self.raw = raw


class EndpointError(JudgeCallError):
    """The endpoint gave no usable reply. `retryable`: the failure is not a property of the answer (429, 5xx,
    timeouts, unusable replies...), so the verdict is not cached and a re-run grades the row again."""

    def __init__(self, message: str, retryable: bool, status: int | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.status = status


# An unscored verdict whose reason starts with this is final: the endpoint refused the answer itself (too long
# for the model's context, a content filter), so the same request would be refused again. It is cached.
ANSWER_REFUSED = "the judge refused this answer"


class AnswerRefusedError(EndpointError):
    """The judge cannot take this answer as it is (context length, content filter): a property of the answer."""

    def __init__(self, detail: str, status: int | None = None):
        super().__init__(f"{ANSWER_REFUSED}: {detail}", retryable=False, status=status)


class JudgeUnavailableError(JudgeConfigError):
    """Nothing can be graded as configured: wrong key, model or URL, or an endpoint that cannot be reached.
    Retrying cannot fix it, so a batch stops at once; nothing is cached and unfinished rows stay pending."""


class JudgeAborted(Exception):
    """The run is stopping (SIGINT/SIGTERM): requests still in flight are abandoned, their rows stay pending."""


def is_final(status: str, reason: str, retryable: bool) -> bool:
    """Whether a verdict may be kept for good (cache, results store): scored, or refused for the answer itself.
    Every other unscored verdict is graded again on a re-run."""
    return status == "scored" or (not retryable and reason.startswith(ANSWER_REFUSED))


# ---------------------------------------------------------------- digit reads


class DigitRead(BaseModel):
    probabilities: dict[str, float]
    expected: float
    argmax: int
    source: str  # logits | top_logprobs | sampled (no probabilities available)
    mass: float | None = None  # probability the model put on the allowed digits at all


def distribution(logprobs: dict[str, float], digits: list[str]) -> DigitRead:
    """Normalises the probability of each allowed digit; expected level as G-Eval does."""
    present = {d: logprobs[d] for d in digits if d in logprobs}
    if not present:
        raise JudgeReplyError(f"no probability for any of {digits} in the reply")
    top = max(present.values())
    weights = {d: math.exp(present[d] - top) if d in present else 0.0 for d in digits}
    total = sum(weights.values())
    probs = {d: w / total for d, w in weights.items()}
    mass = sum(math.exp(v) for v in present.values())
    return DigitRead(
        probabilities={d: round(p, 6) for d, p in probs.items()},
        expected=sum(int(d) * p for d, p in probs.items()),
        argmax=int(max(probs, key=lambda d: probs[d])),
        source="",
        mass=min(1.0, mass),
    )


def one_hot(digit: str, digits: list[str]) -> DigitRead:
    """The read of a sampled digit when no probabilities are available."""
    return DigitRead(
        probabilities={d: 1.0 if d == digit else 0.0 for d in digits},
        expected=float(digit),
        argmax=int(digit),
        source="sampled",
    )


# ---------------------------------------------------------------- the contract


class Backend(ABC):
    """What `Judge` calls. The two operations are required; the rest has defaults for backends that need none."""

    name: str
    model: str
    # How readings are computed, for a backend whose code can move them: it joins the verdict cache key.
    read_version: int | None = None
    # The structured-output form the endpoint accepted, recorded with structured results.
    dialect: str | None = None

    @abstractmethod
    def read_digits(self, messages: Messages, digits: list[str]) -> tuple[DigitRead, Usage]:
        """The probability of each allowed digit as the reply's first token."""

    @abstractmethod
    def complete_json(self, chat: list[dict], schema: dict) -> tuple[str, Usage, list[DigitRead]]:
        """A JSON reply following `schema`, with the level reads found in it (empty where none can be)."""

    def limit_in_flight(self, n: int) -> None:  # noqa: B027 - a backend without an endpoint has nothing to bound
        """At most `n` requests at once (`grade --concurrency`)."""

    def abort(self) -> None:  # noqa: B027 - a backend without requests in flight has nothing to stop
        """Stops the requests of a run being interrupted."""
