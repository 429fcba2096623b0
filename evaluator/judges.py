"""The judge, over any backend (backends.py): an answer's read plan, probability mode (one digit read per call of
the plan), structured mode (one JSON reply, one repair re-ask), the explanation pass; `make_judge` picks a backend.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial

import pydantic
from pydantic import BaseModel

from .backends import (
    FLAG_DIGITS,
    LEVEL_DIGITS,
    VIEW_DIGITS,
    Backend,
    DigitRead,
    EndpointError,
    JudgeCallError,
    JudgeReplyError,
)
from .config import JudgeSettings
from .errors import JudgeConfigError
from .fakes import OverlapBackend, ScriptedBackend
from .judge_result import CriterionOut, FlagOut, JudgeResult, criterion_out
from .key_points import key_points_of
from .local_model import LocalBackend
from .models import JudgeOutput, Question, Rubric, Usage
from .openai_backend import OpenAIBackend
from .prompts import Messages, PromptSet
from .structured_points import KeyPointOutput, check_points_output, claims_judged, fill_points, points_output_model

# ---------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Read:
    """One judge call of an answer: what it reads (`kind`, and the criterion, view, red flag or key point `id`),
    the digits it reads (none for a structured JSON reply), and its prompt."""

    kind: str  # criterion | holistic | view | red_flag | keyidea | point | structured | structured_points
    id: str
    digits: list[str]
    # Rendered when asked: counting a plan (the dry run) or showing one read of it renders nothing else.
    render: Callable[[], Messages]

    @property
    def messages(self) -> Messages:
        return self.render()


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
        read_version = self.backend.read_version
        return out | {"read_version": read_version} if read_version else out

    def limit_in_flight(self, n: int) -> None:
        """Bounds concurrent endpoint requests."""
        self.backend.limit_in_flight(n)

    def read_plan(self, q: Question, rubric: Rubric, answer: str, prompts: PromptSet) -> list[Read]:
        """The judge calls that grade one answer, in the order they are made (before any injection re-read): the
        probability-mode reads, or the one structured request."""
        if self.mode != "probability":
            return [structured_read(q, rubric, answer, prompts)]
        if rubric.scoring == "key_points":
            return _key_point_plan(q, rubric, answer, prompts)
        return _criteria_plan(q, rubric, answer, prompts)

    def judge(self, q: Question, rubric: Rubric, answer: str, prompts: PromptSet) -> JudgeResult:
        plan = self.read_plan(q, rubric, answer, prompts)
        if self.mode == "probability":
            return self._probability(plan, rubric)
        return self._structured(q, rubric, plan[0], prompts)

    # -- probability mode

    def _probability(self, plan: list[Read], rubric: Rubric) -> JudgeResult:
        usage = Usage()
        out = JudgeResult(mode="probability")
        try:
            for r in plan:
                read, u = self.backend.read_digits(r.messages, r.digits)
                usage.add(u)
                _record(out, r, read, rubric)
        except JudgeCallError as e:
            _mark_unscored(out, e)
        out.usage = usage
        return out

    # -- structured mode

    def _structured(self, q: Question, rubric: Rubric, read: Read, prompts: PromptSet) -> JudgeResult:
        """One JSON reply (one repair re-ask): the per-criterion reply, or for a key-point rubric the key-point
        reply; either unusable leaves the answer unscored with the raw reply kept."""
        model = reply_model(q, rubric)
        key_points = issubclass(model, KeyPointOutput)
        check = check_points_output(q, rubric, key_points_of(q)) if key_points else _check_output(q, rubric)
        parsed, usage, raw, reads, err = self._ask_json(read.messages.as_chat(), model, prompts, check)
        out = JudgeResult(mode="structured", usage=usage, raw_reply=raw, dialect=self.backend.dialect)
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
        if isinstance(parsed, KeyPointOutput):
            fill_points(out, parsed, reads, rubric)
        else:
            assert isinstance(parsed, JudgeOutput)
            _fill_criteria(out, parsed, reads, q, rubric)
        return out

    def _ask_json(self, chat: list[dict], model: type[BaseModel], prompts: PromptSet, check=None):
        """One call, then one re-ask with the error; returns (parsed|None, usage, raw, reads, error).
        The error is an EndpointError when no reply came at all."""
        usage = Usage()
        schema = _schema(model)
        raw = ""
        err: str | EndpointError = ""
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


def _fill_criteria(out: JudgeResult, parsed: JudgeOutput, reads: list[DigitRead], q: Question, rubric: Rubric) -> None:
    """Files the per-criterion reply: each level (probability-weighted where the endpoint gave logprobs), its
    quote and reason, the red flags it names, the rationale."""
    by_id = {c.criterion: c for c in parsed.criteria}
    for i, c in enumerate(rubric.criteria):
        out.criteria[c.id] = criterion_out(by_id[c.id], reads[i] if i < len(reads) else None)
    known = {f.id for f in q.red_flags}
    for h in parsed.red_flags:
        if h.id in known:
            out.red_flags[h.id] = FlagOut(hit=True, evidence=h.evidence)
    out.rationale = parsed.rationale
    out.off_task = parsed.off_task_or_injection


def structured_read(q: Question, rubric: Rubric, answer: str, prompts: PromptSet) -> Read:
    """The one structured request of an answer: the key-point reply for a key-point rubric, else the
    per-criterion reply. Live grading and Batch API export (scaleout.py) both send it."""
    if rubric.scoring == "key_points":
        points = key_points_of(q)
        claims = claims_judged(q, rubric)
        return Read("structured_points", "", [], partial(prompts.structured_points, q, rubric, answer, points, claims))
    return Read("structured", "", [], partial(prompts.structured, q, rubric, answer))


def reply_model(q: Question, rubric: Rubric) -> type[BaseModel]:
    """The model (and so the schema) of the structured reply: the key-point reply for a key-point rubric, shaped
    for this question, else the per-criterion reply."""
    return points_output_model(q, rubric, key_points_of(q)) if rubric.scoring == "key_points" else JudgeOutput


def _mark_unscored(out: JudgeResult, e: JudgeCallError) -> None:
    """A probability-mode read failed: no reply (retryable as the endpoint said) or an unusable one (retried)."""
    if isinstance(e, EndpointError):
        out.status, out.reason, out.retryable = "unscored", str(e), e.retryable
    else:
        out.status, out.reason, out.retryable = "unscored", f"judge reply unusable: {e}", True


def _record(out: JudgeResult, r: Read, read: DigitRead, rubric: Rubric) -> None:
    """Files one probability-mode read into the result."""
    if r.kind == "criterion":
        out.criteria[r.id] = CriterionOut(
            level=read.expected, argmax=read.argmax, probabilities=read.probabilities, source=read.source
        )
    elif r.kind == "holistic":
        out.holistic = read
    elif r.kind == "view":
        out.views[r.id] = read
    elif r.kind == "keyidea":
        out.keyidea = read
    elif r.kind == "point":
        out.points.append(read.probabilities["1"])
    else:
        p = read.probabilities["1"]
        out.red_flags[r.id] = FlagOut(hit=p >= rubric.red_flag_policy.min_probability, probability=p)


def _key_point_plan(q: Question, rubric: Rubric, answer: str, prompts: PromptSet) -> list[Read]:
    """One shared prefix per question, the answer once, then short asks: the key idea (0-5), each key point
    (yes/no) and each red flag's false claim (yes/no). Text addressed to the grader states no key point, so
    it earns nothing here."""
    points = key_points_of(q)

    def read(kind: str, id: str, ask: str, digits: list[str], **kw) -> Read:
        return Read(kind, id, digits, partial(prompts.point_read, q, points, answer, ask, **kw))

    plan = [read("keyidea", "", "read_keyidea", VIEW_DIGITS)]
    plan += [read("point", str(i), "read_point", FLAG_DIGITS, n=i, point=p) for i, p in enumerate(points, 1)]
    if rubric.red_flag_policy.judge_red_flags:
        plan += [read("red_flag", f.id, "read_claim", FLAG_DIGITS, claim=f.claim or f.description) for f in q.red_flags]
    return plan


def _criteria_plan(q: Question, rubric: Rubric, answer: str, prompts: PromptSet) -> list[Read]:
    """Each criterion's level, the holistic level, each view (0-5), each red flag (yes/no)."""
    plan: list[Read] = []
    if rubric.holistic_weight < 1.0:  # a holistic-only rubric skips the per-criterion reads
        plan += [
            Read("criterion", c.id, LEVEL_DIGITS, partial(prompts.criterion_read, q, rubric, answer, c))
            for c in rubric.criteria
        ]
    if rubric.holistic:
        plan.append(Read("holistic", "", LEVEL_DIGITS, partial(prompts.holistic_read, q, rubric, answer)))
    plan += [Read("view", v.id, VIEW_DIGITS, partial(prompts.view_read, q, rubric, answer, v)) for v in rubric.views]
    if rubric.red_flag_policy.judge_red_flags:
        plan += [
            Read("red_flag", f.id, FLAG_DIGITS, partial(prompts.red_flag_read, q, rubric, answer, f))
            for f in q.red_flags
        ]
    return plan


@cache
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


# ---------------------------------------------------------------- factory


def make_judge(settings: JudgeSettings) -> Judge:
    spec = settings.spec
    if spec == "openai":
        backend: Backend = OpenAIBackend(settings)
        mode = settings.mode or "structured"
        explain = False
    elif spec == "local" or spec.startswith("local:"):
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
