"""A small OpenAI-compatible chat-completions server for tests and benchmarks (stdlib only).

    with serve(latency=0.05, faults={"http500": 0.1, "timeout": 0.05}, seed=1) as base_url:
        ...  # point --base-url at base_url; base_url.server.requests counts the requests

Replies are deterministic and valid for the evaluator's judge (see fake_replies.py); every reply carries `usage`.

`GET {base_url}/fake/stats` returns the request counts (for a server run in another process with
`python tests/fake_server.py`, which prints its base URL).

Faults are fractions of requests: HTTP 500, timeouts (the server sleeps `timeout_sleep` seconds,
longer than the client's timeout), malformed JSON content (HTTP 200 with a cut-off JSON object),
HTTP 429 with a Retry-After header, an empty body with status 200, an HTML error page with status
200 (what a proxy in front of the server sends), a connection closed without any reply, and a valid
JSON reply of the wrong schema. Whether a request fails is decided from (seed, request number), so
a run is reproducible and a fault is transient: the retried request has a new number. `first_500`
answers the first N requests with HTTP 500 whatever else is set (a burst at start).

Configuration errors: with `api_key` set, a request without that bearer key gets HTTP 401; with
`models` set, a request for another model gets HTTP 404 (as vLLM answers); `reject_dialects` lists
response_format forms answered with HTTP 400 (json_schema, llama_cpp, json_object); with
`context_chars` set, a request whose messages are longer gets HTTP 400 "maximum context length".
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fake_replies import chat_reply, unit


@dataclass
class Faults:
    """Fractions of requests that fail, each way (they must sum to at most 1)."""

    http500: float = 0.0
    timeout: float = 0.0
    malformed: float = 0.0
    http429: float = 0.0
    empty: float = 0.0  # HTTP 200 with an empty body
    html: float = 0.0  # HTTP 200 with an HTML error page
    disconnect: float = 0.0  # the connection is closed without a reply
    wrong_schema: float = 0.0  # HTTP 200, a chat completion whose content is valid JSON of another schema
    timeout_sleep: float = 1.0  # seconds the server sleeps on a timeout fault
    retry_after: str = "0"  # the Retry-After header sent with a 429
    first_500: int = 0  # the first N requests are answered with HTTP 500

    @classmethod
    def of(cls, faults: Faults | dict | None) -> Faults:
        if faults is None:
            return cls()
        if isinstance(faults, Faults):
            return faults
        aliases = {"500": "http500", "429": "http429", "timeouts": "timeout", "malformed_json": "malformed"}
        known = {f.name for f in fields(cls)}
        kw = {}
        for k, v in faults.items():
            name = aliases.get(str(k), str(k))
            if name not in known:
                raise ValueError(f"unknown fault '{k}'; use one of {sorted(known)}")
            kw[name] = v
        return cls(**kw)

    def kinds(self) -> list[tuple[str, float]]:
        out = [
            ("http500", self.http500),
            ("timeout", self.timeout),
            ("malformed", self.malformed),
            ("http429", self.http429),
            ("empty", self.empty),
            ("html", self.html),
            ("disconnect", self.disconnect),
            ("wrong_schema", self.wrong_schema),
        ]
        if sum(p for _, p in out) > 1.0 + 1e-9:
            raise ValueError("fault fractions sum to more than 1")
        return out


class FakeOpenAIServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a handler sleeping on a timeout fault must not hold up shutdown
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: 32 urllib clients connecting at once had connections reset.
    # Real servers queue hundreds of pending connections.
    request_queue_size = 1024

    def __init__(
        self,
        latency: float = 0.0,
        faults: Faults | dict | None = None,
        seed: int = 0,
        model: str = "fake-model",
        logprobs: bool = True,
        api_key: str | None = None,
        models: list[str] | None = None,
        reject_dialects: tuple[str, ...] = (),
        context_chars: int | None = None,
        faults_by_request: bool = False,
    ):
        super().__init__(("127.0.0.1", 0), _Handler)
        # Faults drawn from (seed, request body, how many times that body came) rather than (seed, arrival number):
        # the same requests meet the same faults whatever order concurrent clients send them in.
        self.faults_by_request = faults_by_request
        self._seen: Counter = Counter()
        self.context_chars = context_chars
        self.api_key = api_key
        self.models = models
        self.reject_dialects = tuple(reject_dialects)
        self.latency = latency
        self.faults = Faults.of(faults)
        self.fault_kinds = self.faults.kinds()
        self.seed = seed
        self.model = model
        self.logprobs = logprobs
        self._lock = threading.Lock()
        self._n = 0
        self._in_flight = 0
        self.max_in_flight = 0  # the most chat requests handled at once: checks a client's concurrency bound
        self.counts: Counter = Counter()
        self._thread: threading.Thread | None = None

    # -- bookkeeping

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def requests(self) -> int:
        """Chat-completion requests received so far (faulty ones included)."""
        with self._lock:
            return self._n

    def stats(self) -> dict:
        with self._lock:
            return {"requests": self._n, "max_in_flight": self.max_in_flight, **self.counts}

    def reset(self) -> None:
        with self._lock:
            self._n = 0
            self.max_in_flight = 0
            self.counts.clear()

    def _next(self, req: dict) -> tuple[int, str | None]:
        body = json.dumps(req, sort_keys=True)
        with self._lock:
            n = self._n
            self._n += 1
            self._seen[body] += 1
            again = self._seen[body]
        u = unit("fault", self.seed, body, again) if self.faults_by_request else unit("fault", self.seed, n)
        fault = "http500" if n < self.faults.first_500 else None
        acc = 0.0
        for kind, p in self.fault_kinds:
            acc += p
            if fault is None and u < acc:
                fault = kind
                break
        with self._lock:
            self.counts[fault or "ok"] += 1
        return n, fault

    # -- lifecycle

    def start(self) -> FakeOpenAIServer:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    # -- replies

    def reply(self, req: dict, n: int, malformed: bool) -> dict:
        return chat_reply(req, n, malformed, self.model, self.logprobs)


class _Handler(BaseHTTPRequestHandler):
    server: FakeOpenAIServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm and the client's delayed ACK that adds
    # ~40 ms to every reply (measured: 246 ms median round trip for a 200 ms latency). Real servers set
    # TCP_NODELAY too.
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass

    def _send(self, status: int, body: dict | bytes, headers: dict | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        headers = dict(headers or {})
        content_type = headers.pop("Content-Type", "application/json")
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True

    def do_GET(self):  # noqa: N802
        if self.path.rstrip("/").endswith("/fake/stats"):  # request counts, for a server in another process
            self._send(200, self.server.stats())
        elif self.path.rstrip("/").endswith("/models"):
            ids = self.server.models or [self.server.model]
            self._send(200, {"object": "list", "data": [{"id": i, "object": "model"} for i in ids]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            return
        try:
            req = json.loads(raw or b"{}")
        except json.JSONDecodeError as e:
            self._send(400, {"error": {"message": f"invalid JSON body: {e}", "type": "invalid_request_error"}})
            return
        srv = self.server
        if srv.api_key is not None and self.headers.get("Authorization") != f"Bearer {srv.api_key}":
            with srv._lock:
                srv.counts["http401"] += 1
            msg = "Incorrect API key provided."
            self._send(401, {"error": {"message": msg, "type": "invalid_request_error", "code": "invalid_api_key"}})
            return
        if srv.models is not None and req.get("model") not in srv.models:
            with srv._lock:
                srv.counts["http404"] += 1
            msg = f"The model `{req.get('model')}` does not exist."
            self._send(404, {"error": {"message": msg, "type": "NotFoundError", "code": 404}})
            return
        chars = sum(len(str(m.get("content") or "")) for m in req.get("messages") or [])
        if srv.context_chars is not None and chars > srv.context_chars:
            with srv._lock:
                srv.counts["context_exceeded"] += 1
            msg = f"This model's maximum context length is {srv.context_chars} tokens; your messages have {chars}."
            self._send(400, {"error": {"message": msg, "type": "invalid_request_error"}})
            return
        form = _form(req.get("response_format"))
        with srv._lock:
            srv.counts[f"form:{form}"] += 1
        if form in srv.reject_dialects:
            msg = f"response_format of type {form} is not supported"
            self._send(400, {"error": {"message": msg, "type": "invalid_request_error"}})
            return
        with srv._lock:
            srv._in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv._in_flight)
        try:
            reply = self._reply(srv, req)
        finally:
            # Counted out before the reply is written: a client can send its next request only after it has read
            # this reply, so the count never includes a request the client already considers finished.
            with srv._lock:
                srv._in_flight -= 1
        if reply is None:  # a connection closed without a reply
            self.close_connection = True
            return
        self._send(*reply)

    def _reply(self, srv: FakeOpenAIServer, req: dict) -> tuple[int, dict | bytes, dict | None] | None:
        n, fault = srv._next(req)
        if fault == "timeout":
            time.sleep(srv.faults.timeout_sleep)
            # The client has gone by now; answer anyway in case it waited.
            return 200, srv.reply(req, n, False), None
        if srv.latency:
            time.sleep(srv.latency)
        if fault == "http500":
            return 500, {"error": {"message": "fake internal error", "type": "server_error"}}, None
        if fault == "http429":
            return (
                429,
                {"error": {"message": "fake rate limit", "type": "rate_limit_error"}},
                {"Retry-After": srv.faults.retry_after},
            )
        if fault == "empty":
            return 200, b"", None
        if fault == "html":
            page = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
            return 200, page, {"Content-Type": "text/html"}
        if fault == "disconnect":
            return None
        reply = srv.reply(req, n, fault == "malformed")
        if fault == "wrong_schema":
            message = reply["choices"][0]["message"]
            message["content"] = '{"verdict": "good", "score": 7}' if req.get("max_tokens") != 1 else "good"
            reply["choices"][0]["logprobs"] = None
        return 200, reply, None


def _form(response_format) -> str:
    """The structured-output form a request asks for (as the evaluator names its dialects), or none."""
    if not isinstance(response_format, dict):
        return "none"
    if response_format.get("type") == "json_schema":
        return "json_schema"
    return "llama_cpp" if "schema" in response_format else "json_object"


class BaseURL(str):
    """The server's base URL (ends in /v1); `.server` is the FakeOpenAIServer for counts and stats."""

    server: FakeOpenAIServer


@contextmanager
def serve(
    latency: float = 0.0,
    faults: Faults | dict | None = None,
    seed: int = 0,
    model: str = "fake-model",
    logprobs: bool = True,
    **options,
) -> Iterator[BaseURL]:
    """Runs a fake server on 127.0.0.1 (ephemeral port) for the duration of the block; yields its base URL.
    `options`: api_key, models, reject_dialects, context_chars, faults_by_request (see FakeOpenAIServer)."""
    srv = FakeOpenAIServer(latency=latency, faults=faults, seed=seed, model=model, logprobs=logprobs, **options).start()
    url = BaseURL(srv.base_url)
    url.server = srv
    try:
        yield url
    finally:
        srv.stop()


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(
        prog="python tests/fake_server.py",
        description="Run the fake OpenAI-compatible judge server until interrupted.",
    )
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    kinds = ("http500", "timeout", "malformed", "http429", "empty", "html", "disconnect", "wrong_schema")
    for name in kinds:
        p.add_argument(f"--{name.replace('_', '-')}", type=float, default=0.0, help=f"fraction of requests: {name}")
    p.add_argument("--timeout-sleep", type=float, default=1.0, help="seconds a timeout fault sleeps")
    p.add_argument("--first-500", type=int, default=0, help="answer the first N requests with HTTP 500")
    a = p.parse_args(argv)
    faults = Faults(**{k: getattr(a, k) for k in kinds}, timeout_sleep=a.timeout_sleep, first_500=a.first_500)
    with serve(a.latency, faults, a.seed) as url:
        print(url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
