"""Judges: an OpenAI-compatible endpoint, the embedded local model, and fakes for tests.

A backend knows two operations: read the probability of each digit as the next token
(`read_digits`), and complete a JSON reply (`complete_json`). The judging logic on top of them
(probability mode, structured mode with one repair re-ask, the explanation pass) is shared.
"""

from __future__ import annotations

import functools
import json
import math
import random
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import pydantic
from pydantic import BaseModel

from .config import DEFAULT_CONCURRENCY, JudgeSettings, redact_url
from .errors import JudgeConfigError
from .key_points import key_points_of
from .models import JudgeOutput, Question, Rubric, Usage
from .prompts import Messages, PromptSet

LEVEL_DIGITS = ["0", "1", "2", "3", "4"]
VIEW_DIGITS = ["0", "1", "2", "3", "4", "5"]
FLAG_DIGITS = ["0", "1"]


class JudgeReplyError(Exception):
    """A reply that cannot be used (invalid JSON, schema violation, truncated). `raw`: the text, if any."""

    def __init__(self, message: str, raw: str | None = None):
        super().__init__(message)
        self.raw = raw


class EndpointError(JudgeReplyError):
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


class UnusableReplyError(JudgeReplyError):
    """A reply of the wrong shape (empty body, an HTML page, no choices, no digit): worth asking again."""


class DialectRejectedError(JudgeReplyError):
    """The endpoint rejected this response_format form: detection tries the next one."""


class JudgeUnavailableError(JudgeConfigError):
    """Nothing can be graded as configured: wrong key, model or URL, or an endpoint that cannot be reached.
    Retrying cannot fix it, so a batch stops at once; nothing is cached and unfinished rows stay pending."""


class JudgeAborted(Exception):
    """The run is stopping (SIGINT/SIGTERM): requests still in flight are abandoned, their rows stay pending."""


def is_final(status: str, reason: str, retryable: bool) -> bool:
    """Whether a verdict may be kept for good (cache, results store): scored, or refused for the answer itself.
    Every other unscored verdict is graded again on a re-run."""
    return status == "scored" or (not retryable and reason.startswith(ANSWER_REFUSED))


# ---------------------------------------------------------------- results


class DigitRead(BaseModel):
    probabilities: dict[str, float]
    expected: float
    argmax: int
    source: str  # logits | top_logprobs | sampled (no probabilities available)
    mass: float | None = None  # probability the model put on the allowed digits at all


class CriterionOut(BaseModel):
    level: float | None = None
    argmax: int | None = None
    probabilities: dict[str, float] | None = None
    source: str = ""
    evidence: str = ""
    reason: str = ""


class FlagOut(BaseModel):
    hit: bool
    probability: float | None = None
    evidence: str = ""


class JudgeResult(BaseModel):
    status: str = "scored"  # scored | unscored
    reason: str = ""
    mode: str
    criteria: dict[str, CriterionOut] = {}
    holistic: DigitRead | None = None
    views: dict[str, DigitRead] = {}
    # Key-point reads (rubrics scored by key points, probability mode): the key-idea reading 0-5, then per key
    # point the probability that the answer states it, in order.
    keyidea: DigitRead | None = None
    points: list[float] = []
    red_flags: dict[str, FlagOut] = {}
    rationale: str = ""
    off_task: bool | None = None
    usage: Usage = Usage()
    raw_reply: str | None = None
    dialect: str | None = None
    retryable: bool = False


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
        argmax=int(max(probs, key=probs.get)),
        source="",
        mass=min(1.0, mass),
    )


def one_hot(digit: str, digits: list[str]) -> DigitRead:
    return DigitRead(
        probabilities={d: 1.0 if d == digit else 0.0 for d in digits},
        expected=float(digit),
        argmax=int(digit),
        source="sampled",
    )


# ---------------------------------------------------------------- backends


class Backend(Protocol):
    name: str
    model: str

    def read_digits(self, messages: Messages, digits: list[str]) -> tuple[DigitRead, Usage]: ...

    def complete_json(self, chat: list[dict], schema: dict) -> tuple[str, Usage, list[DigitRead]]: ...


def parse_json_reply(text: str, model: type[BaseModel]) -> BaseModel:
    """Lenient parse (raw control characters allowed, surrounding prose or code fences tolerated)."""
    s = text.strip()
    if s.startswith("```"):
        s = re.sub(r"^```[a-zA-Z]*\s*|\s*```$", "", s)
    try:
        data = json.loads(s, strict=False)
    except json.JSONDecodeError:
        start, end = s.find("{"), s.rfind("}")
        if start < 0 or end <= start:
            raise JudgeReplyError("the reply is not JSON") from None
        try:
            data = json.loads(s[start : end + 1], strict=False)
        except json.JSONDecodeError as e:
            raise JudgeReplyError(f"the reply is not valid JSON ({e.msg} at char {e.pos})") from e
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as e:
        first = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors()[:4])
        raise JudgeReplyError(f"the JSON does not match the schema: {first}") from e


# ---------------------------------------------------------------- judge


class ExplainCriterion(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    criterion: str = pydantic.Field(max_length=64)
    evidence: str = pydantic.Field(max_length=120)
    reason: str = pydantic.Field(max_length=160)


class ExplainOutput(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    criteria: list[ExplainCriterion] = pydantic.Field(max_length=8)
    rationale: str = pydantic.Field(default="", max_length=400)


@dataclass
class Judge:
    backend: Backend
    settings: JudgeSettings
    mode: str
    explain_default: bool = True

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def model_name(self) -> str:
        return self.backend.model

    def describe(self) -> dict:
        out = {"backend": self.backend.name, "model": self.backend.model, "mode": self.mode}
        read_version = getattr(self.backend, "read_version", None)
        return out | {"read_version": read_version} if read_version else out

    def limit_in_flight(self, n: int) -> None:
        """Bounds concurrent endpoint requests (backends without an endpoint have nothing to bound)."""
        limit = getattr(self.backend, "limit_in_flight", None)
        if limit:
            limit(n)

    def read_count(self, q: Question, rubric: Rubric) -> int:
        """How many judge calls one answer costs (before any injection re-read)."""
        if self.mode != "probability":
            return 1
        if rubric.scoring == "key_points":
            return len(key_point_plan(q, key_points_of(q), rubric))
        n = (len(rubric.criteria) if rubric.holistic_weight < 1 else 0) + int(rubric.holistic) + len(rubric.views)
        return n + (len(q.red_flags) if rubric.red_flag_policy.judge_red_flags else 0)

    # -- probability mode

    def judge(self, q: Question, rubric: Rubric, answer: str, prompts: PromptSet) -> JudgeResult:
        if self.mode == "probability":
            if rubric.scoring == "key_points":
                return self._key_points(q, rubric, answer, prompts)
            return self._probability(q, rubric, answer, prompts)
        return self._structured(q, rubric, answer, prompts)

    def _key_points(self, q: Question, rubric: Rubric, answer: str, prompts: PromptSet) -> JudgeResult:
        """One shared prefix per question, the answer once, then short asks: the key idea (0-5), each key point
        (yes/no) and each red flag's false claim (yes/no). Text addressed to the grader states no key point, so
        it earns nothing here."""
        usage = Usage()
        out = JudgeResult(mode="probability")
        points = key_points_of(q)
        try:
            for ask, kw, digits in key_point_plan(q, points, rubric):
                read, u = self.backend.read_digits(prompts.point_read(q, points, answer, ask, **kw), digits)
                usage.add(u)
                if ask == "read_keyidea":
                    out.keyidea = read
                elif ask == "read_point":
                    out.points.append(read.probabilities["1"])
                else:
                    p = read.probabilities["1"]
                    out.red_flags[kw["flag_id"]] = FlagOut(
                        hit=p >= rubric.red_flag_policy.min_probability, probability=p
                    )
        except (EndpointError, JudgeReplyError) as e:
            _mark_unscored(out, e)
        out.usage = usage
        return out

    def _probability(self, q: Question, rubric: Rubric, answer: str, prompts: PromptSet) -> JudgeResult:
        usage = Usage()
        out = JudgeResult(mode="probability")
        try:
            # A holistic-only rubric skips the per-criterion reads (one read per answer).
            for c in rubric.criteria if rubric.holistic_weight < 1.0 else []:
                read, u = self.backend.read_digits(prompts.criterion_read(q, rubric, answer, c), LEVEL_DIGITS)
                usage.add(u)
                out.criteria[c.id] = CriterionOut(
                    level=read.expected, argmax=read.argmax, probabilities=read.probabilities, source=read.source
                )
            if rubric.holistic:
                read, u = self.backend.read_digits(prompts.holistic_read(q, rubric, answer), LEVEL_DIGITS)
                usage.add(u)
                out.holistic = read
            for view in rubric.views:
                read, u = self.backend.read_digits(prompts.view_read(q, rubric, answer, view), VIEW_DIGITS)
                usage.add(u)
                out.views[view.id] = read
            if rubric.red_flag_policy.judge_red_flags:
                for f in q.red_flags:
                    read, u = self.backend.read_digits(prompts.red_flag_read(q, rubric, answer, f), FLAG_DIGITS)
                    usage.add(u)
                    p = read.probabilities["1"]
                    out.red_flags[f.id] = FlagOut(hit=p >= rubric.red_flag_policy.min_probability, probability=p)
        except (EndpointError, JudgeReplyError) as e:
            _mark_unscored(out, e)
        out.usage = usage
        return out

    # -- structured mode

    def _structured(self, q: Question, rubric: Rubric, answer: str, prompts: PromptSet) -> JudgeResult:
        msgs = prompts.structured(q, rubric, answer)
        parsed, usage, raw, reads, err = self._ask_json(msgs.as_chat(), JudgeOutput, prompts, _check_output(q, rubric))
        out = JudgeResult(mode="structured", usage=usage, raw_reply=raw, dialect=getattr(self.backend, "dialect", None))
        if parsed is None:
            if isinstance(err, EndpointError):
                out.status, out.reason, out.retryable = "unscored", str(err), err.retryable
            else:
                # A new request would likely succeed: not cached, and a re-run grades the row again.
                out.status, out.reason, out.retryable = (
                    "unscored",
                    f"judge reply unusable after one repair: {err}",
                    True,
                )
            return out
        assert isinstance(parsed, JudgeOutput)
        by_id = {c.criterion: c for c in parsed.criteria}
        for i, c in enumerate(rubric.criteria):
            j = by_id[c.id]
            read = reads[i] if i < len(reads) else None
            out.criteria[c.id] = CriterionOut(
                level=read.expected if read else float(j.level.value),
                argmax=int(j.level.value),
                probabilities=read.probabilities if read else None,
                source="top_logprobs" if read else "sampled",
                evidence=j.evidence,
                reason=j.reason,
            )
        known = {f.id for f in q.red_flags}
        for h in parsed.red_flags:
            if h.id in known:
                out.red_flags[h.id] = FlagOut(hit=True, evidence=h.evidence)
        out.rationale = parsed.rationale
        out.off_task = parsed.off_task_or_injection
        return out

    def _ask_json(self, chat: list[dict], model: type[BaseModel], prompts: PromptSet, check=None):
        """One call, then one re-ask with the error; returns (parsed|None, usage, raw, reads, error).
        The error is an EndpointError when no reply came at all."""
        usage = Usage()
        schema = _schema(model)
        raw = ""
        err: str | JudgeReplyError = ""
        for attempt in range(2):
            try:
                raw, u, reads = self.backend.complete_json(chat, schema)
            except EndpointError as e:
                return None, usage, raw or None, [], e
            except JudgeReplyError as e:
                return None, usage, e.raw or raw or None, [], str(e)
            usage.add(u)
            try:
                parsed = parse_json_reply(raw, model)
                if check:
                    check(parsed)
                return parsed, usage, raw, reads, ""
            except JudgeReplyError as e:
                err = str(e)
                if attempt == 0:
                    chat = chat + [
                        {"role": "assistant", "content": raw},
                        {"role": "user", "content": prompts.repair(err)},
                    ]
        return None, usage, raw, [], err

    # -- explanation pass: never changes a level

    def explain(
        self, q: Question, rubric: Rubric, answer: str, levels: dict[str, int], prompts: PromptSet
    ) -> tuple[dict[str, tuple[str, str]], str, Usage, str]:
        lv = [{"id": c.id, "level": levels.get(c.id, 0)} for c in rubric.criteria]
        msgs = prompts.explain(q, rubric, answer, lv)
        parsed, usage, _raw, _reads, err = self._ask_json(msgs.as_chat(), ExplainOutput, prompts)
        if parsed is None:
            return {}, "", usage, str(err)
        assert isinstance(parsed, ExplainOutput)
        ev = {c.criterion: (c.evidence, c.reason) for c in parsed.criteria}
        return ev, parsed.rationale, usage, ""


def _mark_unscored(out: JudgeResult, e: Exception) -> None:
    """A probability-mode read failed: no reply (retryable as the endpoint said) or an unusable one (retried)."""
    if isinstance(e, EndpointError):
        out.status, out.reason, out.retryable = "unscored", str(e), e.retryable
    else:
        out.status, out.reason, out.retryable = "unscored", f"judge reply unusable: {e}", True


def key_point_plan(q: Question, points: list[str], rubric: Rubric) -> list[tuple[str, dict, list[str]]]:
    """The reads a key-point judgment makes, in order: (ask template, its arguments, the digits read)."""
    plan: list[tuple[str, dict, list[str]]] = [("read_keyidea", {}, VIEW_DIGITS)]
    plan += [("read_point", {"n": i, "point": p}, FLAG_DIGITS) for i, p in enumerate(points, 1)]
    if rubric.red_flag_policy.judge_red_flags:
        plan += [("read_claim", {"claim": f.claim or f.description, "flag_id": f.id}, FLAG_DIGITS) for f in q.red_flags]
    return plan


@functools.cache
def _schema(model: type[BaseModel]) -> dict:
    # Generating a JSON Schema costs milliseconds of CPU; per request it limited concurrent throughput.
    return model.model_json_schema()


def _check_output(q: Question, rubric: Rubric):
    def check(parsed: BaseModel) -> None:
        assert isinstance(parsed, JudgeOutput)
        got = [c.criterion for c in parsed.criteria]
        want = [c.id for c in rubric.criteria]
        if sorted(got) != sorted(want):
            raise JudgeReplyError(f"criteria must be exactly {want} (one entry each), got {got}")

    return check


# ---------------------------------------------------------------- OpenAI-compatible endpoint


_LEVEL_KEY = re.compile(r'"level"\s*:\s*"?$')


def levels_from_logprobs(content) -> list[DigitRead]:
    """Finds each criterion level token in a JSON reply and reads its top_logprobs distribution."""
    reads: list[DigitRead] = []
    text = ""
    for tok in content or []:
        t = tok.token
        if t.strip() in LEVEL_DIGITS and _LEVEL_KEY.search(text + t[: len(t) - len(t.lstrip())]):
            lp = {x.token.strip(): x.logprob for x in (tok.top_logprobs or [])}
            lp.setdefault(t.strip(), tok.logprob)
            try:
                r = distribution(lp, LEVEL_DIGITS)
                r.source = "top_logprobs"
                reads.append(r)
            except JudgeReplyError:
                pass
        text += t
    return reads


# A batch stops when this many connection attempts in a row (all threads together, no HTTP reply of any kind in
# between) have failed, or when every attempt of one request failed to connect: the endpoint is down, and spending
# five attempts on each remaining row would only delay saying so.
BREAKER_FAILURES = 8
# A reply of the wrong shape (empty body, an HTML page, no choices, no digit) is asked again this many times in all;
# then the row is left unscored and retryable: a re-run asks again.
UNUSABLE_ATTEMPTS = 3

# A 5xx naming the response_format is a rejection of the form (llama_cpp.server answers the json_schema form with
# HTTP 500); any other 5xx says nothing about the dialect.
_FORMAT_WORDS = re.compile(r"response_format|json_schema|schema|grammar", re.I)
_CONTEXT_WORDS = re.compile(
    r"context (length|window|size)|maximum context|too long|too many tokens|exceeds? the (max|maximum|context)"
    r"|prompt is too",
    re.I,
)
_MODEL_MISSING = re.compile(
    r"model_not_found|(unknown|invalid) model|model\b.{0,80}\b(not found|does not exist|not exist|no such|unknown)",
    re.I,
)


class OpenAIBackend:
    """Any OpenAI-compatible chat completions endpoint, through the openai package."""

    name = "openai"
    DIALECTS = ("json_schema", "llama_cpp", "json_object")

    def __init__(self, settings: JudgeSettings, max_attempts: int = 5, client=None):
        import openai

        self.openai = openai
        self.settings = settings
        self.model = settings.model or ""
        # Credentials written into the URL never reach a message.
        self.url = redact_url(settings.base_url or "https://api.openai.com/v1")
        # Our own retry loop (jittered, honours Retry-After) so attempts are counted and bounded.
        self.client = client or openai.OpenAI(
            base_url=settings.base_url,
            api_key=settings.api_key or "not-needed",
            timeout=settings.timeout,
            max_retries=0,
        )
        # The chat resource is imported on first touch (~70 ms): here, rather than inside the first requests.
        self.client.chat.completions  # noqa: B018
        self.max_attempts = max_attempts
        self.dialect = settings.dialect if settings.dialect != "auto" else None
        self._detecting = threading.Lock()
        self.logprobs_supported: bool | None = None
        self._lock = threading.Lock()
        self._failures_in_a_row = 0  # connection attempts, all threads together, since the last HTTP reply
        self._down: str | None = None  # why the endpoint is unusable, once the breaker has opened
        self._stop = threading.Event()
        self.limit_in_flight(DEFAULT_CONCURRENCY)

    def limit_in_flight(self, n: int) -> None:
        """At most `n` requests at the endpoint at once (`grade --concurrency`). Only the HTTP exchange holds a
        slot, so more threads than slots can build prompts and verdicts while `n` requests are in flight."""
        self._slots = threading.BoundedSemaphore(max(1, n))

    def abort(self) -> None:
        """Stops the requests of a run being interrupted: no new attempt starts, waiting retries end, and closing
        the client ends the exchanges in flight. Their rows stay pending."""
        self._stop.set()
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - closing is best effort; the requests end at their timeout anyway
            pass

    def _check_open(self) -> None:
        if self._stop.is_set():
            raise JudgeAborted("the run is stopping")
        if self._down:
            raise JudgeUnavailableError(self._down)

    def _create(self, attempts: int | None = None, detecting: bool = False, **kw):
        delay = 0.5
        max_attempts = attempts or self.max_attempts
        connection_failures = 0
        for attempt in range(1, max_attempts + 1):
            self._check_open()
            try:
                with self._slots:  # released before any backoff sleep: a waiting retry holds no slot
                    self._check_open()
                    t0 = time.perf_counter()
                    resp = self.client.chat.completions.create(model=self.model, **kw)
                secs = time.perf_counter() - t0
            except self.openai.APIConnectionError as e:  # refused, reset, closed without a reply, timed out
                connection_failures += 1
                self._connection_failed(e, every_attempt=connection_failures == max_attempts)
                if attempt == max_attempts:
                    raise EndpointError(
                        f"endpoint failed after {attempt} attempts ({_root_cause(e)}); a re-run retries it",
                        retryable=True,
                    ) from e
                wait = 0.25 * 2 ** (attempt - 1) * (1 + random.random())
            except (self.openai.RateLimitError, self.openai.InternalServerError) as e:
                self._failures_in_a_row = 0
                if detecting and attempt >= 2 and _FORMAT_WORDS.search(_short(e)):
                    raise DialectRejectedError(f"HTTP {e.status_code}: {self._short(e)}") from e
                if attempt == max_attempts:
                    raise EndpointError(
                        f"endpoint failed after {attempt} attempts (HTTP {e.status_code}: {self._short(e)[:80]}); "
                        "a re-run retries it",
                        retryable=True,
                        status=e.status_code,
                    ) from e
                ra = _retry_after(e)
                wait = ra if ra is not None else delay * (1 + random.random())
                delay = min(delay * 2, 8.0)
            except self.openai.APIStatusError as e:
                self._failures_in_a_row = 0
                err = self._status_error(e, detecting)
                if isinstance(err, JudgeUnavailableError):
                    self._down = self._down or str(err)  # every other request stops here too
                raise err from e
            except RuntimeError as e:
                if self._stop.is_set():  # the client was closed by abort() before this request went out
                    raise JudgeAborted("the run is stopping") from e
                raise
            except (self.openai.APIResponseValidationError, ValueError, TypeError, AttributeError) as e:
                # An empty body or an HTML page served with status 200 (a proxy in front of the server).
                self._failures_in_a_row = 0
                raise UnusableReplyError(f"the endpoint's reply is not a chat completion ({type(e).__name__})") from e
            else:
                self._failures_in_a_row = 0
                try:
                    resp.choices[0].message  # noqa: B018
                except (AttributeError, IndexError, TypeError):
                    raise UnusableReplyError(
                        f"the endpoint's reply is not a chat completion: {_preview(resp)}"
                    ) from None
                return resp, secs
            self._pause(min(wait, 30.0))
        raise AssertionError("unreachable: the last attempt raises")

    def _pause(self, seconds: float) -> None:
        """The backoff between attempts; a run being stopped ends it at once."""
        if self._stop.wait(seconds):
            raise JudgeAborted("the run is stopping")

    def _connection_failed(self, e: Exception, every_attempt: bool) -> None:
        if self._stop.is_set():  # the client was closed under the request: not the endpoint's fault
            raise JudgeAborted("the run is stopping") from e
        with self._lock:
            self._failures_in_a_row += 1
            n = self._failures_in_a_row
            if self._down is None and (n >= BREAKER_FAILURES or every_attempt):
                timed_out = isinstance(e, self.openai.APITimeoutError)
                what = f"no reply within {self.settings.timeout:g} s" if timed_out else _root_cause(e)
                fix = (
                    "raise --timeout if the server is only slow"
                    if timed_out
                    else "check that the server is running and that --base-url (or EVALUATOR_BASE_URL) is right"
                )
                self._down = (
                    f"cannot reach the judge endpoint {self.url}: {what} ({n} connection attempts in a row "
                    f"failed); {fix}"
                )
            down = self._down
        if down:
            raise JudgeUnavailableError(down) from e

    def _status_error(self, e, detecting: bool) -> Exception:
        status, msg = e.status_code, self._short(e)
        if status in (401, 403, 407):
            return JudgeUnavailableError(
                f"the judge endpoint {self.url} refused the request (HTTP {status}: {msg}). Set the right API key in "
                "EVALUATOR_API_KEY (or OPENAI_API_KEY)"
                + (f", one allowed to use model '{self.model}'" if status == 403 else "")
            )
        if status == 404 or (status in (400, 422) and _MODEL_MISSING.search(msg)):
            return JudgeUnavailableError(
                f"the judge endpoint {self.url} has no model '{self.model}' or no chat completions route (HTTP "
                f"{status}: {msg}). Check --model (or EVALUATOR_MODEL){self._models_served()}, and that --base-url "
                "ends where the API starts (usually /v1)"
            )
        if status == 413 or (status in (400, 422) and _CONTEXT_WORDS.search(msg)):
            return AnswerRefusedError(f"HTTP {status}: {msg}", status=status)
        if detecting and status in (400, 422):
            return DialectRejectedError(f"HTTP {status}: {msg}")
        return EndpointError(
            f"endpoint answered HTTP {status}: {msg}; a re-run retries it", retryable=True, status=status
        )

    def _models_served(self) -> str:
        try:
            ids = [m.id for m in self.client.models.list().data][:10]
        except Exception:  # noqa: BLE001 - only a hint for the message
            return ""
        return f"; it serves: {', '.join(ids)}" if ids else ""

    def _short(self, e) -> str:
        msg = _short(e)
        key = self.settings.api_key
        return msg.replace(key, "***") if key and len(key) > 3 else msg

    def _usable(self, use, attempts: int | None = None, detecting: bool = False, **kw):
        """Asks until `use` accepts the reply, at most UNUSABLE_ATTEMPTS times."""
        last: Exception | None = None
        for _ in range(UNUSABLE_ATTEMPTS):
            try:
                resp, secs = self._create(attempts, detecting, **kw)
                return use(resp, secs)
            except UnusableReplyError as e:
                last = e
        raise EndpointError(
            f"judge reply unusable after {UNUSABLE_ATTEMPTS} attempts ({last}); a re-run retries it", retryable=True
        )

    def _common(self) -> dict:
        kw = {"temperature": self.settings.temperature}
        if self.settings.seed is not None:
            kw["seed"] = self.settings.seed
        return kw

    def read_digits(self, messages: Messages, digits: list[str]) -> tuple[DigitRead, Usage]:
        kw = self._common()
        if self.logprobs_supported is not False:
            kw.update(logprobs=True, top_logprobs=20)

        def use(resp, secs: float) -> tuple[DigitRead, Usage]:
            choice = resp.choices[0]
            _check_refusal(choice)
            usage = _usage(resp, secs)
            content = (getattr(choice.message, "content", None) or "").strip()
            lp = getattr(choice, "logprobs", None)
            if lp is not None and lp.content:
                first = lp.content[0]
                probs = {x.token.strip(): x.logprob for x in (first.top_logprobs or [])}
                probs.setdefault(first.token.strip(), first.logprob)
                try:
                    read = distribution(probs, digits)
                except JudgeReplyError as e:
                    raise UnusableReplyError(str(e)) from e
                self.logprobs_supported = True
                read.source = "top_logprobs"
                return read, usage
            if self.logprobs_supported:  # it gave them before: this reply lost them on the way
                raise UnusableReplyError("the reply has no logprobs, though the endpoint gave them before")
            if content[:1] not in digits:
                raise UnusableReplyError(f"expected one digit of {digits}, got {content[:20]!r}")
            # Open fallback: the endpoint gives no logprobs, so only the sampled digit is known.
            self.logprobs_supported = False
            return one_hot(content[:1], digits), usage

        return self._usable(use, messages=messages.as_chat(), max_tokens=1, **kw)

    def _response_format(self, dialect: str, schema: dict) -> dict:
        if dialect == "json_schema":
            return {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema}}
        if dialect == "llama_cpp":
            return {"type": "json_object", "schema": schema}
        return {"type": "json_object"}

    def complete_json(self, chat: list[dict], schema: dict) -> tuple[str, Usage, list[DigitRead]]:
        kw = self._common()
        kw.update(max_tokens=self.settings.max_tokens, logprobs=True, top_logprobs=5)
        if self.dialect is None:
            # Decided once, by the first request: the others wait for it rather than each probing the forms.
            with self._detecting:
                if self.dialect is None:
                    return self._detect(chat, schema, kw)
        # Passed as extra_body: the openai package walks typed parameters recursively, which for our schema cost
        # ~4 ms of CPU per request and capped concurrent throughput. The JSON sent is the same.
        fmt = {"response_format": self._response_format(self.dialect, schema)}
        return self._usable(self._json_reply, messages=chat, extra_body=fmt, **kw)

    def _detect(self, chat: list[dict], schema: dict, kw: dict) -> tuple[str, Usage, list[DigitRead]]:
        """Tries each form until the endpoint accepts one. Only an answer about the form decides: a reply (even
        an unusable one) accepts it, a 400/422 or a 5xx naming the response_format rejects it; a 5xx, a 429 or a
        timeout says nothing and leaves the dialect undecided for the next request."""
        last: Exception | None = None
        for d in self.DIALECTS:

            def use(resp, secs: float, d=d):
                self.dialect = d
                return self._json_reply(resp, secs)

            fmt = {"response_format": self._response_format(d, schema)}
            try:
                return self._usable(use, detecting=True, messages=chat, extra_body=fmt, **kw)
            except DialectRejectedError as e:
                last = e
        raise JudgeUnavailableError(
            f"the judge endpoint {self.url} accepts none of the structured-output forms {list(self.DIALECTS)} "
            f"(last answer: {last}); use --mode probability, or a server that supports response_format"
        )

    def _json_reply(self, resp, secs: float) -> tuple[str, Usage, list[DigitRead]]:
        choice = resp.choices[0]
        _check_refusal(choice)
        content = getattr(choice.message, "content", None)
        if choice.finish_reason == "length":
            raise JudgeReplyError(f"the reply was truncated at max_tokens={self.settings.max_tokens}", raw=content)
        if not content:
            raise UnusableReplyError("the reply has no content")
        lp = getattr(choice, "logprobs", None)
        reads = levels_from_logprobs(lp.content) if lp is not None and lp.content else []
        return content, _usage(resp, secs), reads


def _check_refusal(choice) -> None:
    if getattr(choice, "finish_reason", None) == "content_filter":
        raise AnswerRefusedError("the endpoint's content filter stopped the reply")


def _root_cause(e: BaseException) -> str:
    while e.__cause__ is not None:
        e = e.__cause__
    text = str(e) or type(e).__name__
    return "connection refused" if "refused" in text.lower() else text[:160]


def _preview(resp) -> str:
    text = re.sub(r"<[^>]*>|\s+", " ", str(resp)).strip()
    return repr(text[:80]) if text else "an empty reply"


def _retry_after(e) -> float | None:
    resp = getattr(e, "response", None)
    if resp is None:
        return None
    v = resp.headers.get("retry-after")
    try:
        return float(v) if v else None
    except ValueError:
        return None


def _short(e) -> str:
    return str(getattr(e, "message", e))[:200]


def _usage(resp, secs: float) -> Usage:
    u = getattr(resp, "usage", None)
    return Usage(
        calls=1,
        prompt_tokens=getattr(u, "prompt_tokens", 0) or 0,
        completion_tokens=getattr(u, "completion_tokens", 0) or 0,
        seconds=secs,
    )


# ---------------------------------------------------------------- fakes (tests only)


class ScriptedBackend:
    """Replays queued replies: a JSON string for complete_json, a dict of digit->logprob or a digit
    string for read_digits. Records every call so tests can assert on the prompts sent."""

    name = "fake"
    model = "scripted"

    def __init__(self):
        self.queue: deque = deque()
        self.history: list = []

    def enqueue(self, *replies) -> None:
        self.queue.extend(replies)

    def _next(self):
        if not self.queue:
            raise JudgeReplyError("scripted fake: no reply queued")
        return self.queue.popleft()

    def read_digits(self, messages: Messages, digits: list[str]) -> tuple[DigitRead, Usage]:
        self.history.append(messages)
        r = self._next()
        if isinstance(r, dict):
            read = distribution({k: math.log(v) if v > 0 else -1e9 for k, v in r.items()}, digits)
            read.source = "logits"
            return read, Usage(calls=1)
        if str(r)[:1] not in digits:
            raise JudgeReplyError(f"expected one digit of {digits}, got {str(r)[:20]!r}")
        return one_hot(str(r)[:1], digits), Usage(calls=1)

    def complete_json(self, chat: list[dict], schema: dict) -> tuple[str, Usage, list[DigitRead]]:
        self.history.append(chat)
        r = self._next()
        return (r if isinstance(r, str) else json.dumps(r)), Usage(calls=1), []


_WORD = re.compile(r"[a-z0-9]{3,}")


class OverlapBackend:
    """Deterministic fake: the level follows word overlap between answer and reference. For tests of
    the plumbing (batch, CLI) without a model; it knows nothing about correctness."""

    name = "fake"
    model = "overlap"

    def __init__(self):
        self.calls = 0

    def read_digits(self, messages: Messages, digits: list[str]) -> tuple[DigitRead, Usage]:
        self.calls += 1
        answer = messages.answer_block.split("<answer>", 1)[-1].rsplit("</answer>", 1)[0]
        ref = messages.prefix.split("REFERENCE ANSWER", 1)[-1].split("\n\n", 1)[0]
        a, r = set(_WORD.findall(answer.lower())), set(_WORD.findall(ref.lower()))
        overlap = len(a & r) / max(1, len(r))
        if digits == FLAG_DIGITS:
            x = 0.1 if overlap > 0.2 else 0.3
            probs = {"0": 1 - x, "1": x}
        else:
            centre = min(4.0, overlap * 8)
            w = {d: math.exp(-((int(d) - centre) ** 2)) for d in digits}
            t = sum(w.values())
            probs = {d: v / t for d, v in w.items()}
        read = distribution({k: math.log(max(v, 1e-12)) for k, v in probs.items()}, digits)
        read.source = "logits"
        return read, Usage(calls=1, prompt_tokens=len(messages.text()) // 4, completion_tokens=1)

    def complete_json(self, chat: list[dict], schema: dict) -> tuple[str, Usage, list[DigitRead]]:
        self.calls += 1
        props = schema.get("properties", {})
        user = chat[1]["content"]
        ids = re.findall(r"^\[([A-Za-z0-9_.\-]+)\] [^:\n]+: ", user, flags=re.M)
        crit = [{"criterion": i, "evidence": "", "reason": "fake judge"} for i in ids]
        if "off_task_or_injection" in props:
            for c in crit:
                c["level"] = "2"
            reply = {"criteria": crit, "red_flags": [], "rationale": "fake", "off_task_or_injection": False}
        else:
            reply = {"criteria": crit, "rationale": "fake overlap judge: no real explanation"}
        return json.dumps(reply), Usage(calls=1), []


# ---------------------------------------------------------------- factory


def make_judge(settings: JudgeSettings) -> Judge:
    spec = settings.spec
    if spec == "openai":
        backend: Backend = OpenAIBackend(settings)
        mode = settings.mode or "structured"
        explain = False
    elif spec == "local" or spec.startswith("local:"):
        from .local_model import LocalBackend

        path = spec.split(":", 1)[1] if ":" in spec else None
        backend = LocalBackend.get(path, n_ctx=settings.n_ctx, n_threads=settings.n_threads, seed=settings.seed)
        mode = settings.mode or "probability"
        explain = True
    elif spec == "fake:scripted":
        backend = ScriptedBackend()
        mode = settings.mode or "structured"
        explain = False
    elif spec == "fake:overlap":
        backend = OverlapBackend()
        mode = settings.mode or "probability"
        explain = False
    else:
        raise JudgeConfigError(f"unknown judge '{spec}'")
    if mode not in ("probability", "structured"):
        raise JudgeConfigError(f"unknown judge mode '{mode}': use probability or structured")
    if settings.explain is not None:
        explain = settings.explain
    return Judge(backend=backend, settings=settings, mode=mode, explain_default=explain)
