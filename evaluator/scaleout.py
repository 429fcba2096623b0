"""Scale-out past one machine: export judge requests in the OpenAI Batch API format (also read by
vLLM's run-batch) and ingest the responses into the same results store and outputs (`import_responses`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from .backends import Backend, DigitRead, JudgeReplyError
from .config import DEFAULT_ADVANCE_AT, DEFAULT_EMBEDDER, DEFAULT_EVAL_SET, DEFAULT_REJECT_BELOW, resolve_judge_settings
from .errors import DataValidationError
from .judges import Judge, reply_model, structured_read
from .models import Usage
from .openai_backend import levels_from_logprobs, request_body
from .outputs import write_outputs
from .prompts import Messages
from .resources import LoadedEvalSet, Resources
from .scoring import Evaluator
from .store import STORE_NAME, CountedRun, ResultStore, StoreCounts, summarise


def request_line(ev: Evaluator, les: LoadedEvalSet, key: str, qid: str, answer: str) -> dict:
    q = les.by_id[qid]
    rubric = ev.resources.rubric_for(les, q).rubric
    text, _ = ev.prepare_answer(answer)
    # The request live structured grading sends: the key-point reply for a key-point rubric, else per criterion.
    read = structured_read(q, rubric, text, ev.prompts)
    body = request_body(ev.judge.settings, read.messages.as_chat(), reply_model(q, rubric).model_json_schema())
    return {"custom_id": key, "method": "POST", "url": "/v1/chat/completions", "body": body}


def export_batch(ev: Evaluator, les: LoadedEvalSet, rows, path: Path) -> int:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(request_line(ev, les, r.key, r.question_id, r.answer), ensure_ascii=False) + "\n")
    (path.parent / (path.name + ".meta.json")).write_text(
        json.dumps(
            {"eval_set": str(les.path), "judge": ev.judge.settings.public_params(), "embedder": ev.embedder_name},
            indent=2,
        )
    )
    return len(rows)


@dataclass
class _Reply:
    """One response line: the reply's text, or why there is none that can be used."""

    content: str | None
    usage: Usage
    error: str | None
    model: str = ""
    reads: list = field(default_factory=list)


class _ReplayBackend(Backend):
    """Serves the recorded reply of the row being imported, looked up by its custom_id; a re-ask is impossible
    offline, so a bad reply ends unscored."""

    name = "openai-batch"

    def __init__(self, model: str, replies: dict[str, _Reply]):
        self.default_model = model
        self.model = model
        self.replies = replies
        self.key: str | None = None
        self.used = False

    @contextmanager
    def replaying(self, key: str) -> Iterator[None]:
        """Judge calls inside the block are answered from the reply of `key`."""
        self.key, self.used = key, False
        reply = self.replies.get(key)
        self.model = (reply.model if reply else "") or self.default_model
        try:
            yield
        finally:
            self.key = None

    def read_digits(self, messages: Messages, digits: list[str]) -> tuple[DigitRead, Usage]:
        raise JudgeReplyError("batch replies carry structured verdicts only")

    def complete_json(self, chat: list[dict], schema: dict) -> tuple[str, Usage, list[DigitRead]]:
        if self.key is None:
            raise JudgeReplyError("no batch reply is being replayed")
        reply = self.replies[self.key]
        if reply.error:
            raise JudgeReplyError(reply.error)
        if self.used:
            raise JudgeReplyError("the batch reply was invalid and no re-ask is possible in an imported batch")
        self.used = True
        return reply.content or "", reply.usage, reply.reads


def _reads(choice: dict) -> list:
    content = ((choice.get("logprobs") or {}).get("content")) or []

    def ns(d: dict) -> SimpleNamespace:
        return SimpleNamespace(
            token=d.get("token", ""),
            logprob=d.get("logprob", -1e9),
            top_logprobs=[ns(t) for t in d.get("top_logprobs") or []],
        )

    return levels_from_logprobs([ns(t) for t in content])


def _parse_response_line(line: str, lineno: int, path: Path) -> tuple[str, _Reply]:
    try:
        obj = json.loads(line)
        key = obj["custom_id"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataValidationError(
            f"{path}:{lineno}: not a batch response line ({e}); expected JSON with custom_id"
        ) from e
    resp = obj.get("response") or {}
    if obj.get("error") or resp.get("status_code", 200) != 200:
        err = obj.get("error") or {"status_code": resp.get("status_code")}
        return key, _Reply(None, Usage(), f"batch request failed: {json.dumps(err)[:200]}")
    body = resp.get("body") or {}
    try:
        choice = body["choices"][0]
        content = choice["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return key, _Reply(None, Usage(), "batch response has no choices[0].message.content")
    if choice.get("finish_reason") == "length":
        return key, _Reply(content, Usage(), "the reply was truncated at max_tokens", body.get("model", ""))
    u = body.get("usage") or {}
    usage = Usage(calls=1, prompt_tokens=u.get("prompt_tokens", 0), completion_tokens=u.get("completion_tokens", 0))
    return key, _Reply(content, usage, None, body.get("model", ""), _reads(choice))


def _read_responses(path: Path, keys: set[str]) -> tuple[dict[str, _Reply], int, list[str]]:
    """The replies to rows in `keys` by custom_id (the last one where an id repeats), how many response lines
    matched a row, and the custom_ids that match none. A malformed line raises before anything is imported."""
    replies: dict[str, _Reply] = {}
    matched = 0
    unknown = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            key, reply = _parse_response_line(line, lineno, path)
            if key not in keys:
                unknown.append(key)
                continue
            replies[key] = reply
            matched += 1
    return replies, matched, unknown


@dataclass(frozen=True)
class ImportSummary(CountedRun):
    """What `import_responses` did: response lines imported, the store's rows by outcome afterwards, the
    custom_ids that match no exported row, and the outputs written."""

    imported: int
    counts: StoreCounts
    unknown: list[str]
    paths: list[Path]


def _replay_evaluator(data_dir: str | Path | None, meta: dict, backend: _ReplayBackend) -> Evaluator:
    """An evaluator that judges with the recorded replies: structured mode, no cache, no explanation pass, the
    settings the batch was exported for (its model and endpoint) and its embedder (similarity depends on it)."""
    exported = meta.get("judge") or {}
    settings = resolve_judge_settings("openai", model=backend.default_model, base_url=exported.get("base_url"))
    return Evaluator(
        resources=Resources.locate(data_dir),
        judge=Judge(backend=backend, settings=settings, mode="structured", explain_default=False),
        embedder_name=meta.get("embedder") or DEFAULT_EMBEDDER,
        explain=False,
    )


def import_responses(
    out_dir: str | Path,
    responses_path: str | Path,
    *,
    data_dir: str | Path | None = None,
    advance_at: float = DEFAULT_ADVANCE_AT,
    reject_below: float = DEFAULT_REJECT_BELOW,
) -> ImportSummary:
    """Grades the rows of a folder exported with `grade --export-batch` from the batch's responses (OpenAI Batch
    API or vLLM run-batch output), saves the verdicts in its results store and rewrites its outputs."""
    out, path = Path(out_dir), Path(responses_path)
    if not (out / STORE_NAME).exists():
        raise DataValidationError(
            f"{out}: no results store; export the batch first with grade --export-batch --out {out}"
        )
    store = ResultStore(out / STORE_NAME)
    rows = {r.key: r for r in store.all()}
    replies, matched, unknown = _read_responses(path, set(rows))
    meta_candidates = list(out.glob("*.meta.json")) + list(path.parent.glob("*.meta.json"))
    meta = json.loads(meta_candidates[0].read_text()) if meta_candidates else {}
    backend = _ReplayBackend((meta.get("judge") or {}).get("model") or "batch", replies)
    ev = _replay_evaluator(data_dir, meta, backend)
    les = ev.resources.load_eval_set(meta.get("eval_set") or DEFAULT_EVAL_SET)
    for key, reply in replies.items():
        r = rows[key]
        with backend.replaying(key):
            v = ev.score(les, les.by_id[r.question_id], r.answer)
        if reply.error and v.status == "unscored":
            v.raw_reply = reply.content
        store.save(key, v)
    paths = write_outputs(store, les, ev.resources, out, advance_at, reject_below)
    return ImportSummary(matched, summarise(store), unknown, paths)
