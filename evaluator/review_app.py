"""The review workspace: a local web app (Starlette + Jinja2, served by uvicorn) over a batch folder, where a hiring
team reads every verdict, overrules grades and sees how far the model agrees with them.

Pages are rendered on the server. The only script is a small static file for keyboard navigation; the
Content-Security-Policy forbids any other, so a candidate's answer cannot run code even if a template forgot to
escape it (templates autoescape every field as well).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import jinja2
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from .errors import EvaluatorError
from .human_grades import MAX_NOTE_CHARS, MAX_REVIEWER_CHARS, GradeInputError, UnknownAnswerError
from .review_agreement import Agreement
from .review_data import Folder, Snapshot

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates" / "review"
STATIC = HERE / "static" / "review"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
SESSION_COOKIE = "review_session"
TOKEN_COOKIE = "review_token"
REVIEWER_COOKIE = "review_reviewer"
MAX_FORM_BYTES = 64 * 1024  # a grade form is a few hundred bytes; a note is at most MAX_NOTE_CHARS


class ReviewError(Exception):
    """Shown to the reviewer as a page with `status`; nothing was changed."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class _Security(BaseHTTPMiddleware):
    """Access token (when serving beyond this machine), session cookie for CSRF, and the safety headers."""

    def __init__(self, app, token: str | None):
        super().__init__(app)
        self.token = token

    async def dispatch(self, request: Request, call_next) -> Response:
        if self.token is not None:
            given = request.query_params.get("token")
            if given is not None and hmac.compare_digest(given, self.token):
                # Move the token from the address into a cookie, so it does not linger in history or Referer.
                url = request.url.remove_query_params("token")
                resp: Response = RedirectResponse(str(url.replace(scheme="", netloc="")) or "/", status_code=303)
                resp.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
                return _harden(resp)
            cookie = request.cookies.get(TOKEN_COOKIE, "")
            bearer = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not (hmac.compare_digest(cookie, self.token) or hmac.compare_digest(bearer, self.token)):
                return _harden(
                    PlainTextResponse(
                        "This review server needs its access token: open the address printed when it started "
                        "(it ends in ?token=...).",
                        status_code=401,
                    )
                )
        session = request.cookies.get(SESSION_COOKIE)
        fresh = None
        if not session or len(session) != 32:
            fresh = session = secrets.token_hex(16)
        request.state.session = session
        resp = await call_next(request)
        if fresh:
            resp.set_cookie(SESSION_COOKIE, fresh, httponly=True, samesite="strict")
        return _harden(resp)


def _harden(resp: Response) -> Response:
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers.setdefault("Cache-Control", "no-store")
    return resp


def _text(form: FormData, name: str) -> str | None:
    """A text field of a posted form; a file where text belongs counts as absent (and fails validation)."""
    value = form.get(name)
    return value if isinstance(value, str) else None


LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class _Review:
    """What every page reaches through `request.app.state.review`: the folder, the templates, the CSRF secret
    and the agreement figures."""

    folder: Folder
    templates: Jinja2Templates
    secret: bytes
    agreement: Agreement

    def csrf_token(self, request: Request) -> str:
        return hmac.new(self.secret, request.state.session.encode(), hashlib.sha256).hexdigest()

    def render(self, request: Request, name: str, status_code: int = 200, **ctx) -> Response:
        snap = ctx.pop("snap", None) or self.folder.snapshot()
        base = {
            "folder": self.folder.folder.name or str(self.folder.folder),
            "csrf": self.csrf_token(request),
            "reviewer": request.cookies.get(REVIEWER_COOKIE, ""),
            "warnings": snap.warnings,
            "max_note": MAX_NOTE_CHARS,
            "max_reviewer": MAX_REVIEWER_CHARS,
            "n_answers": len(snap.answers),
        }
        return self.templates.TemplateResponse(request, name, {**base, **ctx}, status_code=status_code)


def _review(request: Request) -> _Review:
    return request.app.state.review


def _candidate_values(snap: Snapshot) -> dict[str, dict[str, set]]:
    """Per candidate, the values each extra column takes over their answers."""
    values: dict[str, dict[str, set]] = {}
    for a in snap.answers:
        for c, x in a.extra.items():
            values.setdefault(a.candidate_id, {}).setdefault(c, set()).add(x)
    return values


def _candidate_rows(snap: Snapshot, values: dict, filters: dict[str, str], rec: str) -> list[dict]:
    rows = []
    for card in snap.cards:
        cv = values.get(card["candidate_id"], {})
        if any(want not in cv.get(c, set()) for c, want in filters.items()):
            continue
        if rec and not card["recommendation"].startswith(rec):
            continue
        rows.append({**card, "extra": {c: ", ".join(sorted(cv.get(c, set()))) for c in snap.extra_columns}})
    return rows


def _sorted_rows(rows: list[dict], sort: str, desc: bool) -> list[dict]:
    def value(r):
        return r["extra"].get(sort[2:]) if sort.startswith("x_") else r.get(sort)

    present = [r for r in rows if value(r) not in (None, "")]
    present.sort(
        key=lambda r: (0, value(r), "") if isinstance(value(r), int | float) else (1, 0, str(value(r)).casefold()),
        reverse=desc,
    )
    return present + [r for r in rows if value(r) in (None, "")]  # missing values last, either way


async def candidates(request: Request) -> Response:
    review = _review(request)
    snap = review.folder.snapshot()
    q = request.query_params
    filters = {c: q[f"f_{c}"] for c in snap.extra_columns if q.get(f"f_{c}")}
    rec = q.get("recommendation", "")
    values = _candidate_values(snap)
    rows = _candidate_rows(snap, values, filters, rec)
    sort = q.get("sort", "final_overall_score_100")
    desc = q.get("dir", "desc") != "asc"
    sortable = set(snap.cards[0]) | {f"x_{c}" for c in snap.extra_columns} if snap.cards else set()
    if sort not in sortable:
        sort = "final_overall_score_100"
    options = {c: sorted({x for cv in values.values() for x in cv.get(c, set())}) for c in snap.extra_columns}

    def link(col: str) -> str:
        params = {k: v for k, v in q.items() if k not in ("sort", "dir")}
        params["sort"] = col
        params["dir"] = "asc" if (col == sort and desc) else "desc"
        return "/?" + urlencode(params)

    return review.render(
        request,
        "candidates.html",
        snap=snap,
        rows=_sorted_rows(rows, sort, desc),
        sort=sort,
        desc=desc,
        link=link,
        filters=filters,
        options=options,
        extra_columns=snap.extra_columns,
        recommendation=rec,
        total=len(snap.cards),
        graded=sum(a.human is not None for a in snap.answers),
    )


async def candidate(request: Request) -> Response:
    review = _review(request)
    snap = review.folder.snapshot()
    cid = request.query_params.get("id", "")
    answers = snap.candidate_answers(cid)
    if not answers:
        raise ReviewError(404, f"no candidate {cid!r} in this batch folder")
    card = next((c for c in snap.cards if c["candidate_id"] == cid), None)
    here = "/candidate?" + urlencode({"id": cid})
    return review.render(
        request,
        "candidate.html",
        snap=snap,
        cid=cid,
        card=card,
        answers=answers,
        here=here,
        history={a.key: review.folder.grades.history(a.key) for a in answers},
        saved=_saved(request, review.folder),
    )


async def queue(request: Request) -> Response:
    review = _review(request)
    snap = review.folder.snapshot()
    order = snap.queue
    key = request.query_params.get("key") or (order[0] if order else "")
    if key not in snap.by_key:
        raise ReviewError(404, f"unknown answer id {key!r}: it is not in this batch folder")
    i = order.index(key)
    prev_url = "/queue?" + urlencode({"key": order[i - 1]}) if i > 0 else None
    next_url = "/queue?" + urlencode({"key": order[i + 1]}) if i + 1 < len(order) else None
    a = snap.by_key[key]
    return review.render(
        request,
        "queue.html",
        snap=snap,
        a=a,
        position=i + 1,
        total=len(order),
        flagged=sum(x.flagged for x in snap.answers),
        graded=sum(x.human is not None for x in snap.answers),
        prev_url=prev_url,
        next_url=next_url,
        here="/queue?" + urlencode({"key": key}),
        after=next_url or "/queue?" + urlencode({"key": key}),
        history={key: review.folder.grades.history(key)},
        saved=_saved(request, review.folder),
    )


async def grade(request: Request) -> Response:
    review = _review(request)
    if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
        raise ReviewError(413, f"the form is over {MAX_FORM_BYTES // 1024} KiB; shorten the note")
    form = await request.form(max_files=0, max_fields=20)
    sent = str(form.get("csrf", ""))
    if not sent or not hmac.compare_digest(sent, review.csrf_token(request)):
        raise ReviewError(
            403, "the form's security token is missing or stale (CSRF check); reload the page and grade again"
        )
    key = str(form.get("key", ""))
    back = str(form.get("next", "/"))
    if not back.startswith("/") or back.startswith("//") or "\\" in back:
        back = "/"  # only this site's pages: never an open redirect
    folder = review.folder
    try:
        scale = folder.scale_for(key)
        seen = str(form.get("seen", "0"))
        before = folder.grades.history(key)
        entry = folder.grades.add(key, _text(form, "grade") or "", _text(form, "note"), _text(form, "reviewer"), scale)
    except UnknownAnswerError as e:
        raise ReviewError(404, str(e)) from e
    except GradeInputError as e:
        raise ReviewError(400, f"grade not saved: {e}") from e
    # Another reviewer saved a grade after this form was shown: both stay in the history, this one is latest.
    conflict = bool(before) and str(before[-1].id) != seen
    parts = urlsplit(back)
    params = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("saved", "conflict")]
    params += [("saved", str(entry.id))] + ([("conflict", "1")] if conflict else [])
    target = urlunsplit(("", "", parts.path, urlencode(params), parts.fragment))
    resp = RedirectResponse(target, status_code=303)
    resp.set_cookie(REVIEWER_COOKIE, entry.reviewer, httponly=True, samesite="strict", max_age=365 * 86400)
    return resp


async def agreement_page(request: Request) -> Response:
    review = _review(request)
    snap = review.folder.snapshot()
    return review.render(request, "agreement.html", snap=snap, result=review.agreement.get(snap))


async def agreement_plot(request: Request) -> Response:
    agreement = _review(request).agreement
    name = request.path_params["name"]
    result = agreement.result or {}
    if name not in (result.get("plots") or {}).values():  # only the files the page names: no path tricks
        raise ReviewError(404, f"no plot {name!r}; open the agreement page first")
    return FileResponse(agreement.out / name, media_type="image/png")


async def error_page(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ReviewError):
        status, message = exc.status, exc.message
    elif isinstance(exc, EvaluatorError):
        status, message = 500, str(exc)
    else:
        status = getattr(exc, "status_code", 500)
        message = getattr(exc, "detail", None) or "page not found"
    try:
        return _review(request).render(request, "error.html", status_code=status, code=status, message=message)
    except EvaluatorError:
        return PlainTextResponse(message, status_code=status)


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
    )
    env.filters["num"] = _num
    env.filters["pct"] = lambda x: "" if x is None else f"{100 * float(x):.0f}%"
    env.filters["when"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
    return Jinja2Templates(env=env)


def create_app(
    folder: Folder,
    token: str | None = None,
    local_only: bool = True,
    secret: bytes | None = None,
    bound_host: str = "127.0.0.1",
) -> Starlette:
    """The ASGI app. `token`: required on every request when set (serving beyond this machine); `local_only`:
    refuse requests whose Host is not this machine's loopback name (blocks DNS rebinding)."""
    review = _Review(folder, _templates(), secret or secrets.token_bytes(32), Agreement(folder))
    routes = [
        Route("/", candidates),
        Route("/candidate", candidate),
        Route("/queue", queue),
        Route("/grade", grade, methods=["POST"]),
        Route("/agreement", agreement_page),
        Route("/agreement/{name:str}", agreement_plot),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = []
    if local_only and token is None:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        names = ["127.0.0.1", "localhost", "[::1]", bound_host if ":" not in bound_host else f"[{bound_host}]"]
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(dict.fromkeys(names))))
    middleware.append(Middleware(_Security, token=token))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={ReviewError: error_page, EvaluatorError: error_page, 404: error_page, 405: error_page},
    )
    app.state.review = review
    app.state.agreement = review.agreement
    return app


def _saved(request: Request, folder: Folder) -> dict | None:
    """The grade just saved (after the redirect), to confirm it on the page."""
    raw = request.query_params.get("saved", "")
    if not raw.isdigit():
        return None
    entry = folder.grades.entry(int(raw))
    if entry is None:
        return None
    return {"entry": entry, "conflict": request.query_params.get("conflict") == "1"}


def _num(x, digits: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{x:.0f}"
    return str(x)
