"""Scale-out past one machine: export judge requests in the OpenAI Batch API format (also read by
vLLM's run-batch) and ingest the responses into the same results store and outputs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

from .backends import Backend, DigitRead, JudgeReplyError
from .errors import ValidationError
from .judges import Judge
from .models import JudgeOutput, Usage
from .openai_backend import levels_from_logprobs, request_body
from .prompts import Messages
from .resources import LoadedEvalSet, Resources
from .scoring import Evaluator


def request_line(ev: Evaluator, les: LoadedEvalSet, key: str, qid: str, answer: str) -> dict:
    q = les.by_id[qid]
    rubric = ev.resources.rubric(les.rubric_id_for(q)).rubric
    text, _ = ev.prepare_answer(answer)
    msgs = ev.prompts.structured(q, rubric, text)
    body = request_body(ev.judge.settings, msgs.as_chat(), JudgeOutput.model_json_schema())
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


class _ReplayBackend(Backend):
    """Serves one recorded reply; a re-ask is impossible offline, so a bad reply ends unscored."""

    name = "openai-batch"

    def __init__(self, model: str, content: str | None, usage: Usage, error: str | None, reads=None):
        self.model = model
        self.content, self.usage, self.error = content, usage, error
        self.reads = reads or []
        self.used = False

    def read_digits(self, messages: Messages, digits: list[str]) -> tuple[DigitRead, Usage]:
        raise JudgeReplyError("batch replies carry structured verdicts only")

    def complete_json(self, chat: list[dict], schema: dict) -> tuple[str, Usage, list[DigitRead]]:
        if self.error:
            raise JudgeReplyError(self.error)
        if self.used:
            raise JudgeReplyError("the batch reply was invalid and no re-ask is possible in an imported batch")
        self.used = True
        return self.content or "", self.usage, self.reads


def _reads(choice: dict) -> list:
    content = ((choice.get("logprobs") or {}).get("content")) or []

    def ns(d: dict) -> SimpleNamespace:
        return SimpleNamespace(
            token=d.get("token", ""),
            logprob=d.get("logprob", -1e9),
            top_logprobs=[ns(t) for t in d.get("top_logprobs") or []],
        )

    return levels_from_logprobs([ns(t) for t in content])


def _parse_response_line(line: str, lineno: int, path: Path) -> tuple[str, str | None, Usage, str | None, str, list]:
    try:
        obj = json.loads(line)
        key = obj["custom_id"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValidationError(f"{path}:{lineno}: not a batch response line ({e}); expected JSON with custom_id") from e
    resp = obj.get("response") or {}
    if obj.get("error") or resp.get("status_code", 200) != 200:
        err = obj.get("error") or {"status_code": resp.get("status_code")}
        return key, None, Usage(), f"batch request failed: {json.dumps(err)[:200]}", "", []
    body = resp.get("body") or {}
    try:
        choice = body["choices"][0]
        content = choice["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return key, None, Usage(), "batch response has no choices[0].message.content", "", []
    if choice.get("finish_reason") == "length":
        return key, content, Usage(), "the reply was truncated at max_tokens", body.get("model", ""), []
    u = body.get("usage") or {}
    usage = Usage(calls=1, prompt_tokens=u.get("prompt_tokens", 0), completion_tokens=u.get("completion_tokens", 0))
    return key, content, usage, None, body.get("model", ""), _reads(choice)


def import_batch(a: argparse.Namespace) -> int:
    from .batch import ResultStore, summarise
    from .config import resolve_judge_settings
    from .outputs import write_outputs
    from .scoring import build_evaluator

    out = Path(a.out)
    store_path = out / "results.sqlite3"
    if not store_path.exists():
        raise ValidationError(f"{out}: no results store; export the batch first with grade --export-batch --out {out}")
    store = ResultStore(store_path)
    rows = {r["key"]: r for r in store.all()}
    path = Path(a.responses)
    meta_candidates = list(out.glob("*.meta.json")) + list(path.parent.glob("*.meta.json"))
    meta = json.loads(meta_candidates[0].read_text()) if meta_candidates else {}
    settings = resolve_judge_settings(
        "openai",
        model=(meta.get("judge") or {}).get("model") or "batch",
        api_key="unused",
        base_url="http://127.0.0.1:9",
    )
    # Similarity figures come from the embedder the batch was exported with (not always the default).
    ev = build_evaluator(
        data_dir=a.data_dir,
        settings=settings,
        use_cache=False,
        explain=False,
        embedder=meta.get("embedder") or "minilm",
    )
    res: Resources = ev.resources
    les = res.load_eval_set(meta.get("eval_set") or "ml-screening")
    seen = 0
    unknown = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            key, content, usage, error, model, reads = _parse_response_line(line, lineno, path)
            if key not in rows:
                unknown.append(key)
                continue
            r = rows[key]
            backend = _ReplayBackend(model or settings.model or "batch", content, usage, error, reads)
            ev.judge = Judge(backend=backend, settings=settings, mode="structured", explain_default=False)
            v = ev.score(les, les.by_id[r["question_id"]], r["answer"])
            if error and v.status == "unscored":
                v.raw_reply = content
            store.save(key, v)
            seen += 1
    paths = write_outputs(store, les, res, out, a.advance_at, a.reject_below)
    s = summarise(store)
    print(
        f"imported {seen} responses: {s['scored']} scored, {s['unscored']} unscored, {s['pending']} still pending"
        + (f"; {len(unknown)} responses matched no exported row (e.g. {unknown[0]})" if unknown else "")
    )
    for p in paths:
        print(f"wrote {p}")
    return 0
