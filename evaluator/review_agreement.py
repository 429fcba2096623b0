"""The review workspace's agreement figures: calibrate's analysis on the stored human grades, computed in a
background thread and kept for the grades version it was computed on (plots under the batch folder's
review/agreement/)."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from .errors import EvaluatorError
from .review_data import Folder, Snapshot

AGREEMENT_MIN = 10  # calibrate needs at least this many scored answers with a human grade
AGREEMENT_BOOTSTRAP = 1000


class Agreement:
    """calibrate's analysis on the stored human grades. It takes seconds on a large batch (bootstrap, mapping fit,
    six plots), so it runs in a background thread when the page asks for it after a grade was added; meanwhile the
    page shows the previous figures (or says they are being computed) and refreshes itself."""

    def __init__(self, folder: Folder):
        self.folder = folder
        self.root = folder.folder / "review" / "agreement"
        self.lock = threading.Lock()
        self.version: int | None = None  # the grades version the result was computed on
        self.result: dict | None = None
        self.running: int | None = None

    @property
    def out(self) -> Path:
        return self.root / f"v{self.version}"

    def get(self, snap: Snapshot) -> dict:
        graded = [a for a in snap.answers if a.human is not None]
        joined = [a for a in graded if a.status == "scored"]
        counts = {"graded": len(graded), "joined": len(joined)}
        if len(joined) < AGREEMENT_MIN:
            error = (
                f"{len(joined)} scored answers have a human grade; the agreement figures need at least "
                f"{AGREEMENT_MIN}. Grade more in the review queue."
            )
            return {**counts, "report": None, "error": error, "computing": False, "stale": False}
        with self.lock:
            if self.version == snap.human_version and self.result is not None:
                return {**self.result, "computing": False, "stale": False}
            if self.running is None:
                self.running = snap.human_version
                threading.Thread(target=self._compute, args=(snap,), name="agreement", daemon=True).start()
            if self.result is None:
                return {**counts, "report": None, "error": None, "computing": True, "stale": False}
            return {**self.result, "computing": False, "stale": True}

    def wait(self, timeout: float = 120.0) -> None:
        """Until no computation runs (tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        while self.running is not None and time.monotonic() < deadline:
            time.sleep(0.05)

    def _compute(self, snap: Snapshot) -> None:
        from .calibrate_inputs import stored_human
        from .calibrate_report import analyse

        version = snap.human_version
        out = self.root / f"v{version}"
        graded = [a for a in snap.answers if a.human is not None]
        result: dict = {"graded": len(graded), "joined": sum(a.status == "scored" for a in graded), "error": None}
        verdicts = [
            {"answer_id": a.answer_id, "candidate_id": a.candidate_id, "line": a.line, **a.v}
            for a in snap.answers
            if a.v
        ]
        t0 = time.perf_counter()
        try:
            human = stored_human(self.folder.folder)
            report, plots = analyse(verdicts, human, ["grade"], "latest human grade", out, AGREEMENT_BOOTSTRAP)
            result.update(report=report, plots={k: Path(p).name for k, p in plots.items()})
        except EvaluatorError as e:
            result.update(report=None, error=str(e))
        except Exception as e:  # a failed analysis must not leave the page waiting forever
            result.update(report=None, error=f"the agreement analysis failed: {type(e).__name__}: {e}")
        result["seconds"] = round(time.perf_counter() - t0, 2)
        with self.lock:
            self.result, self.version, self.running = result, version, None
        for old in self.root.glob("v*"):
            if old != out and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
