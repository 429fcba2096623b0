"""Fake judge backends for tests and offline runs: no model, no endpoint.

`ScriptedBackend` replays queued replies and records the prompts it was sent; `OverlapBackend` reads a level from
word overlap with the reference, enough to exercise the plumbing (batch, CLI) without a model.
"""

from __future__ import annotations

import json
import math
import re
from collections import deque

from .backends import FLAG_DIGITS, Backend, DigitRead, JudgeReplyError, distribution, one_hot
from .models import Usage
from .prompts import Messages


class ScriptedBackend(Backend):
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


class OverlapBackend(Backend):
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
        reply: dict
        if "key_points" in props:
            reply = _points_reply(user, crit)
        elif "off_task_or_injection" in props:
            for c in crit:
                c["level"] = "2"
            reply = {"criteria": crit, "red_flags": [], "rationale": "fake", "off_task_or_injection": False}
        else:
            reply = {"criteria": crit, "rationale": "fake overlap judge: no real explanation"}
        return json.dumps(reply), Usage(calls=1), []


def _points_reply(user: str, crit: list[dict]) -> dict:
    """The key-point reply of the overlap fake: every numbered point stated (no quote), no claim made."""
    listed = user.split("KEY POINTS (numbered)", 1)[-1].split("\n\n", 1)[0]
    points = [{"point": n, "evidence": "", "stated": "yes"} for n in re.findall(r"^(\d)\. ", listed, flags=re.M)]
    claims = user.split("MISTAKEN CLAIMS", 1)[1].split("\n\n", 1)[0] if "MISTAKEN CLAIMS" in user else ""
    made = [{"id": c, "made": "no"} for c in re.findall(r"^\[([A-Za-z0-9_.\-]+)\] ", claims, flags=re.M)]
    for c in crit:
        c["level"] = "2"
    return {"key_points": points, "claims": made, "key_idea": "3", "criteria": crit}
