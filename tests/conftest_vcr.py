"""vcrpy set-up for the recorded-response tests (tests/test_recorded_judge.py).

The cassettes under tests/cassettes/ hold real exchanges with an OpenAI-compatible server
(`python -m llama_cpp.server`, see benchmarks/record_cassettes.sh). By default they are replayed
offline: record mode "none", so a request that is not in the cassette (a changed prompt template,
rubric, bank question or request parameter) fails the test instead of reaching the network.

EVALUATOR_RECORD=1 re-records: the cassette is deleted and every request goes to the server at
RECORD_BASE_URL. EVALUATOR_RECORD=missing records only the requests the cassette lacks (after a change
that alters a few of them) and drops the recorded ones no longer made; the rest is replayed.

Requests match on method, scheme, host, port, path and body (the prompt lives in the body; vcrpy
compares JSON bodies parsed, so key order and whitespace do not matter). Secrets and client
fingerprint headers are never written. Bodies are stored as pretty-printed JSON text so a cassette
can be read and reviewed like any other fixture.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from pathlib import Path

import vcr
import yaml
from vcr.util import read_body

CASSETTES = Path(__file__).parent / "cassettes"
RECORD_MISSING = os.environ.get("EVALUATOR_RECORD", "") == "missing"
RECORDING = os.environ.get("EVALUATOR_RECORD", "") in ("1", "missing")
RECORD_BASE_URL = "http://127.0.0.1:8765/v1"
API_KEY = "dummy-key"  # the local server needs none; a real key must never reach a cassette
MODEL = "qwen"

FILTERED_HEADERS = ["authorization", "openai-organization", "openai-project", "api-key", "x-api-key", "cookie"]
MATCH_ON = ["method", "scheme", "host", "port", "path", "json_body"]

# Environment variables that resolve_judge_settings reads: a developer's shell must not change the
# request bodies (and so make replay miss) or point the tests at another endpoint.
SETTINGS_ENV = [
    "EVALUATOR_JUDGE",
    "EVALUATOR_JUDGE_MODE",
    "EVALUATOR_BASE_URL",
    "EVALUATOR_API_KEY",
    "EVALUATOR_MODEL",
    "EVALUATOR_TEMPERATURE",
    "EVALUATOR_SEED",
    "EVALUATOR_TIMEOUT",
    "EVALUATOR_MAX_TOKENS",
    "EVALUATOR_DIALECT",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "OPENAI_MODEL",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
]


# ---------------------------------------------------------------- readable serializer


def _format(obj, indent: int = 0, width: int = 100) -> str:
    """JSON with one item per line, except that anything short enough stays on one line."""
    flat = json.dumps(obj, ensure_ascii=False)
    if len(flat) <= width or not isinstance(obj, (dict, list)) or not obj:
        return flat
    pad, end = " " * (indent + 1), " " * indent
    if isinstance(obj, dict):
        items = [f"{pad}{json.dumps(k, ensure_ascii=False)}: {_format(v, indent + 1, width)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + end + "}"
    items = [pad + _format(v, indent + 1, width) for v in obj]
    return "[\n" + ",\n".join(items) + "\n" + end + "]"


def _pretty(text):
    if not isinstance(text, str) or not text.strip().startswith(("{", "[")):
        return text
    try:
        return _format(json.loads(text)) + "\n"
    except ValueError:
        return text


try:  # libyaml when available: the injection cassette is a few MB
    from yaml import CSafeDumper as _SafeDumper
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # pragma: no cover
    from yaml import SafeDumper as _SafeDumper
    from yaml import SafeLoader as _SafeLoader


class _Dumper(_SafeDumper):
    pass


def _str_representer(dumper, data):
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_representer)


class ReadableYaml:
    """YAML with request and response bodies as indented JSON in literal blocks."""

    @staticmethod
    def serialize(cassette_dict: dict) -> str:
        for it in cassette_dict.get("interactions", []):
            req, resp = it["request"], it["response"]
            req["body"] = _pretty(req.get("body"))
            body = resp.get("body") or {}
            if isinstance(body.get("string"), str):
                body["string"] = _pretty(body["string"])
                headers = resp.get("headers") or {}
                for name in list(headers):
                    if name.lower() == "content-length":
                        headers[name] = [str(len(body["string"].encode("utf-8")))]
        return yaml.dump(cassette_dict, Dumper=_Dumper, allow_unicode=True, sort_keys=False, width=110)

    @staticmethod
    def deserialize(text: str) -> dict:
        return yaml.load(text, Loader=_SafeLoader)


# ---------------------------------------------------------------- body matcher


@functools.lru_cache(maxsize=16384)
def _canonical(body: bytes) -> bytes:
    try:
        return json.dumps(json.loads(body), sort_keys=True, ensure_ascii=False).encode("utf-8")
    except ValueError:
        return body


def json_body(r1, r2) -> None:
    """vcrpy's `body` matcher for JSON (parsed, so formatting and key order do not count), with the
    parse cached: the injection cassette holds a few hundred prompts, and vcrpy compares every
    request with every recorded one."""
    b1, b2 = (_canonical(_as_bytes(read_body(r))) for r in (r1, r2))
    if b1 != b2:
        raise AssertionError(f"JSON bodies differ ({len(b1)} and {len(b2)} bytes)")


def _as_bytes(body) -> bytes:
    if body is None:
        return b""
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


def _drop_fingerprint_headers(request):
    for name in list(request.headers):
        if name.lower().startswith("x-stainless") or name.lower() == "user-agent":
            del request.headers[name]
    return request


def make_vcr() -> vcr.VCR:
    v = vcr.VCR(
        cassette_library_dir=str(CASSETTES),
        serializer="readable_yaml",
        record_mode="new_episodes" if RECORD_MISSING else "all" if RECORDING else "none",
        drop_unused_requests=RECORD_MISSING,
        match_on=MATCH_ON,
        filter_headers=FILTERED_HEADERS,
        before_record_request=_drop_fingerprint_headers,
        decode_compressed_response=True,
    )
    v.register_serializer("readable_yaml", ReadableYaml)
    v.register_matcher("json_body", json_body)
    return v


VCR = make_vcr()


@contextlib.contextmanager
def recorded(name: str):
    """Context manager: the cassette tests/cassettes/<name>.yaml, fully played when replaying."""
    path = CASSETTES / f"{name}.yaml"
    if RECORDING and not RECORD_MISSING:
        path.unlink(missing_ok=True)
    elif not path.is_file():
        raise FileNotFoundError(
            f"no cassette {path}; record it with benchmarks/record_cassettes.sh (EVALUATOR_RECORD=1)"
        )
    with VCR.use_cassette(path.name) as cassette:
        if RECORD_MISSING:
            _record_repeats(cassette)
        yield cassette
    if not RECORDING:
        unplayed = len(cassette) - len(cassette.play_counts)
        assert cassette.all_played, f"cassette {path.name}: {unplayed} recorded interaction(s) were never replayed"


def _record_repeats(cassette) -> None:
    """A request made twice is recorded twice, as a full recording has it, so that replay (which plays each
    interaction once) finds both: an interaction recorded now counts as played."""
    append = cassette.append

    def append_played(request, response):
        append(request, response)
        cassette.play_counts[len(cassette.data) - 1] += 1

    cassette.append = append_played


def request_json(request) -> dict:
    body = request.body
    if isinstance(body, bytes):
        body = body.decode("utf-8")
    return json.loads(body)


def response_json(response: dict) -> dict:
    body = response["body"]["string"]
    if isinstance(body, bytes):
        body = body.decode("utf-8")
    return json.loads(body)
