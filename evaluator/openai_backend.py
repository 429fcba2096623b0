"""The judge on an OpenAI-compatible chat completions endpoint, through the openai package.

Retries are our own (jittered, honouring Retry-After, counted and bounded); a breaker stops a batch once the endpoint
is plainly down; the structured-output form (`dialect`) is detected once. `request_body` is the one place a JSON
completion's request body is built: live structured calls and Batch API lines (scaleout.py) both send it.
"""

from __future__ import annotations

import random
import re
import threading
import time

from .backends import (
    LEVEL_DIGITS,
    VIEW_DIGITS,
    AnswerRefusedError,
    Backend,
    DigitRead,
    EndpointError,
    JudgeAborted,
    JudgeReplyError,
    JudgeUnavailableError,
    distribution,
    one_hot,
)
from .config import DEFAULT_CONCURRENCY, JudgeSettings, redact_url
from .models import Usage
from .prompts import Messages


class UnusableReplyError(JudgeReplyError):
    """A reply of the wrong shape (empty body, an HTML page, no choices, no digit): worth asking again."""


class DialectRejectedError(JudgeReplyError):
    """The endpoint rejected this response_format form: detection tries the next one."""


# The digit fields read from a JSON reply's logprobs: criterion levels (0-4) and the key-point reply's key idea (0-5).
_DIGIT_KEYS = (
    (re.compile(r'"level"\s*:\s*"?$'), LEVEL_DIGITS),
    (re.compile(r'"key_idea"\s*:\s*"?$'), VIEW_DIGITS),
)


def levels_from_logprobs(content) -> list[DigitRead]:
    """Finds each level (and key-idea) digit token in a JSON reply and reads its top_logprobs distribution, in
    reply order; a read's digit set (5 or 6 digits) says which field it is."""
    reads: list[DigitRead] = []
    text = ""
    for tok in content or []:
        t = tok.token
        before = text + t[: len(t) - len(t.lstrip())]
        for key, digits in _DIGIT_KEYS:
            if t.strip() in digits and key.search(before):
                lp = {x.token.strip(): x.logprob for x in (tok.top_logprobs or [])}
                lp.setdefault(t.strip(), tok.logprob)
                try:
                    r = distribution(lp, digits)
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


class OpenAIBackend(Backend):
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
                    resp = self.client.chat.completions.create(**kw)
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

        return self._usable(use, model=self.model, messages=messages.as_chat(), max_tokens=1, **kw)

    def complete_json(self, chat: list[dict], schema: dict) -> tuple[str, Usage, list[DigitRead]]:
        if self.dialect is None:
            # Decided once, by the first request: the others wait for it rather than each probing the forms.
            with self._detecting:
                if self.dialect is None:
                    return self._detect(chat, schema)
        return self._send_json(self._json_reply, chat, schema, self.dialect)

    def _send_json(self, use, chat: list[dict], schema: dict, dialect: str, detecting: bool = False):
        body = request_body(self.settings, chat, schema, dialect)
        # Passed as extra_body: the openai package walks typed parameters recursively, which for our schema cost
        # ~4 ms of CPU per request and capped concurrent throughput. The JSON sent is the same.
        fmt = {"response_format": body.pop("response_format")}
        return self._usable(use, detecting=detecting, extra_body=fmt, **body)

    def _detect(self, chat: list[dict], schema: dict) -> tuple[str, Usage, list[DigitRead]]:
        """Tries each form until the endpoint accepts one. Only an answer about the form decides: a reply (even
        an unusable one) accepts it, a 400/422 or a 5xx naming the response_format rejects it; a 5xx, a 429 or a
        timeout says nothing and leaves the dialect undecided for the next request."""
        last: Exception | None = None
        for d in self.DIALECTS:

            def use(resp, secs: float, d=d):
                self.dialect = d
                return self._json_reply(resp, secs)

            try:
                return self._send_json(use, chat, schema, d, detecting=True)
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


def request_body(settings: JudgeSettings, chat: list[dict], schema: dict, dialect: str = "json_schema") -> dict:
    """The chat-completions body of a JSON completion following `schema`, in the structured-output form `dialect`.
    Live structured calls send it, and so does each Batch API line. Level probabilities are asked for too, so levels
    read from a reply are probability-weighted alike, live or imported."""
    body = {
        "model": settings.model,
        "messages": chat,
        "temperature": settings.temperature,
        "max_tokens": settings.max_tokens,
        "logprobs": True,
        "top_logprobs": 5,
        "response_format": _response_format(dialect, schema),
    }
    if settings.seed is not None:
        body["seed"] = settings.seed
    return body


def _response_format(dialect: str, schema: dict) -> dict:
    if dialect == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema}}
    if dialect == "llama_cpp":
        return {"type": "json_object", "schema": schema}
    return {"type": "json_object"}


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
