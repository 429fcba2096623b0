"""What the fake OpenAI-compatible server (fake_server.py) answers: deterministic replies valid for the evaluator's
judge (stdlib only).

- a request with `response_format` gets a JSON object matching the judge schema: the criteria ids
  are read from the prompt lines `[id] Name: ...`, each level comes from a hash of the answer text
  between <answer> and </answer> (and the criterion id); the level tokens carry `top_logprobs`
  when the request asks for logprobs; a key-point prompt (`KEY POINTS (numbered)`) gets the key-point reply:
  each point stated or not from a hash, quoting the answer's first words, no claim made, a key idea 0-5;
- a request with `max_tokens=1` (probability mode) gets one digit with `logprobs.content[0].top_logprobs`
  over the digits;
- every reply carries `usage`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time

_CRITERION_LINE = re.compile(r"^\[([A-Za-z0-9][A-Za-z0-9_.\-]*)\] [^:\n]+: ", re.M)
_FLAG_LINE = re.compile(r"^\[([A-Za-z0-9][A-Za-z0-9_.\-]*)\] ", re.M)
_ANSWER = re.compile(r"<answer>\n?(.*?)\n?</answer>", re.S)
_DIGITS = ["0", "1", "2", "3", "4"]


def unit(*parts) -> float:
    """A deterministic number in [0, 1) from the parts."""
    h = hashlib.sha256(":".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def _level(answer: str, salt: str) -> int:
    return int(unit("level", salt, answer.strip()) * 5)


def _digit_logprobs(chosen: str, digits: list[str], p: float = 0.7) -> list[dict]:
    """The chosen digit gets p; the rest share 1 - p (more to the neighbours)."""
    c = int(chosen)
    weights = {d: 1.0 / (1 + abs(int(d) - c)) for d in digits if d != chosen}
    total = sum(weights.values()) or 1.0
    probs = {chosen: p} | {d: (1 - p) * w / total for d, w in weights.items()}
    return [
        {"token": d, "logprob": math.log(p), "bytes": list(d.encode())}
        for d, p in sorted(probs.items(), key=lambda kv: -kv[1])
    ]


def _prompt_parts(messages: list[dict]) -> tuple[str, str, str]:
    """All the messages' text, the first user message holding the fenced answer (else all the text), and the answer."""
    text = "\n".join(str(m.get("content") or "") for m in messages)
    first_user = next(
        (
            str(m.get("content") or "")
            for m in messages
            if m.get("role") == "user" and "<answer>" in str(m.get("content") or "")
        ),
        text,
    )
    m = _ANSWER.search(first_user)
    return text, first_user, m.group(1) if m else first_user


def _digit_reply(messages: list[dict], answer: str, malformed: bool, want_lp: bool) -> tuple[str, dict | None]:
    """A probability-mode reply: one digit, with top_logprobs over the digits when asked for."""
    # The ask is what follows the fenced answer: one criterion, the overall level, or one red flag.
    ask = str(messages[-1].get("content") or "").rsplit("</answer>", 1)[-1] if messages else ""
    if "red flag" in ask.lower():
        d = "1" if unit("flag", ask, answer.strip()) < 0.1 else "0"
        digits, p = ["0", "1"], 0.95
    else:
        d = str(_level(answer, ask))
        digits, p = _DIGITS, 0.7
    if malformed:
        content = "?"
        top = [{"token": t, "logprob": math.log(0.5), "bytes": list(t.encode())} for t in ("?", "x")]
    else:
        content = d
        top = _digit_logprobs(d, digits, p)
    if not want_lp:
        return content, None
    token = {"token": content, "logprob": top[0]["logprob"], "bytes": list(content.encode()), "top_logprobs": top}
    return content, {"content": [token]}


def _completion(n: int, model: str, text: str, content: str, logprobs: dict | None) -> dict:
    """The chat.completion envelope around one reply, with usage counted at 4 characters a token."""
    return {
        "id": f"chatcmpl-fake-{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "logprobs": logprobs,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": max(1, len(text) // 4),
            "completion_tokens": max(1, len(content) // 4),
            "total_tokens": max(1, len(text) // 4) + max(1, len(content) // 4),
        },
    }


def chat_reply(req: dict, n: int, malformed: bool, model: str, logprobs: bool) -> dict:
    """The chat completion for request `req` (number `n`); `model` when the request names none; `logprobs`: whether
    the server gives them at all; `malformed` cuts the content short (a fault)."""
    messages = req.get("messages") or []
    text, first_user, answer = _prompt_parts(messages)
    want_lp = bool(req.get("logprobs")) and logprobs
    if req.get("response_format") is not None:
        reply = _structured_points if _POINTS_HEAD in first_user else _structured
        content, lp = reply(first_user, answer, want_lp)
        if malformed:
            content, lp = content[: max(1, len(content) // 2)], None
    elif req.get("max_tokens") == 1:
        content, lp = _digit_reply(messages, answer, malformed, want_lp)
    else:
        content = "fake reply" if not malformed else "{"
        lp = None
    return _completion(n, req.get("model") or model, text, content, lp)


def _criterion_ids(prompt: str) -> list[str]:
    crit_part = prompt.split("CRITERIA", 1)[-1]
    crit_part = re.split(r"\nRED FLAGS|\nOVERALL|\nReturn one JSON|<answer>", crit_part, maxsplit=1)[0]
    return list(dict.fromkeys(_CRITERION_LINE.findall(crit_part)))


def _criteria_pieces(ids: list[str], answer: str, quote: str) -> list[tuple[str, list[str] | None]]:
    """The criteria entries, each level digit a token of its own (for logprobs)."""
    pieces: list[tuple[str, list[str] | None]] = []
    for i, cid in enumerate(ids):
        lvl = str(_level(answer, cid))
        entry = (
            f'{{"criterion": {json.dumps(cid)}, "evidence": {json.dumps(quote if lvl >= "2" else "")}, '
            f'"reason": "fake judge: level from a hash of the answer", "level": "'
        )
        pieces += [((", " if i else "") + entry, None), (lvl, _DIGITS), ('"}', None)]
    return pieces


def _tokens(pieces: list[tuple[str, list[str] | None]], want_lp: bool) -> tuple[str, dict | None]:
    """The reply text (checked to be JSON), and its logprobs when asked: a digit piece gets top_logprobs over its
    digits, any other piece is one certain token."""
    content = "".join(p for p, _ in pieces)
    json.loads(content)
    if not want_lp:
        return content, None
    toks = []
    for p, digits in pieces:
        top = _digit_logprobs(p, digits) if digits else [{"token": p, "logprob": 0.0, "bytes": None}]
        toks.append({"token": p, "logprob": top[0]["logprob"], "bytes": None, "top_logprobs": top})
    return content, {"content": toks}


_POINTS_HEAD = "KEY POINTS (numbered)"
_POINT_LINE = re.compile(r"^(\d)\. ", re.M)


def _structured_points(prompt: str, answer: str, want_lp: bool) -> tuple[str, dict | None]:
    """The key-point reply (structured mode, a key-point rubric): each numbered point stated or not from a hash
    of the answer, quoting the answer's first words; no claim made; the key idea and the levels from hashes."""
    points = _POINT_LINE.findall(prompt.split(_POINTS_HEAD, 1)[1].split("\n\n", 1)[0])
    claims: list[str] = []
    if "\nMISTAKEN CLAIMS" in prompt:
        claims = _FLAG_LINE.findall(prompt.split("\nMISTAKEN CLAIMS", 1)[1].split("\n\n", 1)[0])
    quote = " ".join(answer.split()[:5])
    entries = []
    for n in points:
        stated = unit("point", n, answer.strip()) < 0.6
        entries.append({"point": n, "evidence": quote if stated else "", "stated": "yes" if stated else "no"})
    made = [{"id": c, "made": "no"} for c in claims]
    idea = str(int(unit("key_idea", answer.strip()) * 6))
    pieces: list[tuple[str, list[str] | None]] = [
        (f'{{"key_points": {json.dumps(entries)}, "claims": {json.dumps(made)}, "key_idea": "', None),
        (idea, [*_DIGITS, "5"]),
        ('", "criteria": [', None),
    ]
    pieces += _criteria_pieces(_criterion_ids(prompt), answer, quote)
    pieces.append(('], "rationale": "Deterministic fake verdict.", "off_task_or_injection": false}', None))
    return _tokens(pieces, want_lp)


def _structured(prompt: str, answer: str, want_lp: bool) -> tuple[str, dict | None]:
    ids = _criterion_ids(prompt)
    flags: list[str] = []
    if "\nRED FLAGS" in prompt:
        flag_part = prompt.split("\nRED FLAGS", 1)[1].split("\n\n", 1)[0]
        flags = _FLAG_LINE.findall(flag_part)
    words = answer.split()
    quote = " ".join(words[:5])
    hits = [{"id": f, "evidence": quote} for f in flags if unit("flag", f, answer.strip()) < 0.1]
    # Built by hand so each level digit is a token of its own (for logprobs), then checked to be JSON.
    pieces: list[tuple[str, list[str] | None]] = [('{"criteria": [', None)]
    pieces += _criteria_pieces(ids, answer, quote)
    pieces.append(
        (
            f'], "red_flags": {json.dumps(hits)}, "rationale": "Deterministic fake verdict.", '
            '"off_task_or_injection": false}',
            None,
        )
    )
    return _tokens(pieces, want_lp)
