"""`evaluator review DIR`: serve the review workspace over a batch folder, or export its final grades."""

from __future__ import annotations

import argparse
import ipaddress
import secrets
import socket
import sys
from pathlib import Path

from .errors import InputError

LOOPBACK_NAMES = ("localhost",)


def add_review_parser(sub, add_data_dir) -> None:
    r = sub.add_parser(
        "review",
        help="a local web page to read verdicts, overrule grades and see agreement (or --export the grades)",
        description="Serve a review workspace over a batch folder (from `evaluator grade --out DIR`): candidates "
        "ranked, every answer with its evidence, a review queue with keyboard navigation, and the agreement of "
        "the model with the grades reviewers enter. Grades are stored append-only in DIR/results.sqlite3.",
    )
    r.add_argument("folder", metavar="DIR", help="the batch folder (holds results.sqlite3)")
    r.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need a token)")
    r.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    r.add_argument(
        "--export",
        metavar="GRADES.csv",
        help="write every answer's final grade and reviewers' notes to this CSV, refresh results.csv and "
        "scorecards.csv, and exit",
    )
    r.add_argument("--eval-set", help="eval set name or path (default: the one the verdicts name)")
    r.add_argument("--advance-at", type=float, default=70.0, help="scorecard: recommend 'advance' at this mean /100")
    r.add_argument("--reject-below", type=float, default=40.0, help="scorecard: recommend 'reject' below this")
    add_data_dir(r)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run_review(a: argparse.Namespace) -> int:
    from .resources import Resources
    from .review_data import Folder

    folder = Folder(
        Path(a.folder),
        Resources.locate(a.data_dir),
        eval_set=a.eval_set,
        advance_at=a.advance_at,
        reject_below=a.reject_below,
    )
    if a.export:
        from .review_export import export

        paths = export(folder, Path(a.export))
        for p in paths:
            print(f"wrote {p}")
        return 0
    if not 0 < a.port < 65536:
        raise InputError(f"--port {a.port} is not a port number (1-65535)")
    import uvicorn

    from .review_app import create_app

    local = is_loopback(a.host)
    token = None if local else secrets.token_urlsafe(24)
    snap = folder.snapshot()  # fail here, with a clear message, rather than on the first page
    app = create_app(folder, token=token, local_only=local, bound_host=a.host)
    # An unspecified address listens everywhere: reviewers reach it by this machine's name.
    shown = socket.gethostname() if a.host in ("0.0.0.0", "::") else f"[{a.host}]" if ":" in a.host else a.host
    url = f"http://{shown}:{a.port}/" + (f"?token={token}" if token else "")
    print(f"review workspace for {a.folder}: {len(snap.answers)} answers, {len(snap.cards)} candidates")
    print(f"open {url}")
    if token:
        print("bound beyond this machine: every request needs the token above (keep it private)", file=sys.stderr)
    print("stop with Ctrl+C; grades are saved as they are entered")
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning")
    return 0
