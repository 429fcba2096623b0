"""The review workspace end to end in a real headless browser (Debian's chromium driven by Playwright): open the
candidate list, grade an answer with the keyboard, reload, and find the grade stored and the scorecard updated.
A malicious answer runs no script. With REVIEW_SCREENSHOTS=DIR it saves the README's screenshots there."""

from __future__ import annotations

import csv
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from evaluator.cli import main
from evaluator.review_app import create_app
from evaluator.review_data import Folder
from fake_server import serve

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("REVIEW_CHROMIUM", "/usr/bin/chromium")
XSS = 'It memorises noise. <script>window.__xss = 1; alert("x")</script><img src=x onerror="window.__xss = 2">'

pytestmark = pytest.mark.slow


def _browser_or_skip():
    required = os.environ.get("REVIEW_BROWSER_REQUIRED") == "1"  # CI installs both: missing there is a failure
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if required:
            raise
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    if not Path(CHROMIUM).exists():
        if required:
            raise FileNotFoundError(f"{CHROMIUM} not found: apt-get install -y chromium")
        pytest.skip(f"{CHROMIUM} not found (apt-get install -y chromium)")
    return sync_playwright


def _batch(tmp_path: Path) -> Path:
    """The example answers plus a malicious one, graded by the fake OpenAI-compatible server in structured mode
    (it quotes evidence and fires red flags, so the pages show highlights)."""
    src = tmp_path / "answers.csv"
    shutil.copy(ROOT / "examples" / "answers.csv", src)
    with open(src, "a", encoding="utf-8", newline="") as f:
        csv.writer(f).writerow(["mallory", "overfitting", XSS, "ml-engineer"])
    out = tmp_path / "demo"
    with serve() as url:
        judge = ["--judge", "openai", "--base-url", url, "--model", "fake", "--embedder", "fake:hash", "--no-cache"]
        assert main(["grade", str(src), "--out", str(out), *judge]) == 0
    return out


def _shot(page, path: Path) -> None:
    """A screenshot of the viewport, reduced to a 96-colour palette so the README's copies stay small."""
    page.screenshot(path=str(path))
    from PIL import Image

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=96)
    small.save(path, optimize=True)


class _Server:
    def __init__(self, app):
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the review server did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def test_grade_with_the_keyboard_in_a_real_browser(tmp_path):
    sync_playwright = _browser_or_skip()
    out = _batch(tmp_path)
    folder = Folder(out)
    shots = Path(os.environ["REVIEW_SCREENSHOTS"]) if os.environ.get("REVIEW_SCREENSHOTS") else tmp_path / "shots"
    shots.mkdir(parents=True, exist_ok=True)
    with _Server(create_app(folder)) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

        # The candidate list, ranked by final score; j selects the top row, Enter opens it.
        page.goto(base + "/")
        top = page.locator("#candidates tbody tr").first.locator("td a").inner_text()
        before = page.locator(f'td.final[data-candidate="{top}"]').inner_text()
        _shot(page, shots / "candidates.png")
        page.keyboard.press("j")
        page.keyboard.press("Enter")
        page.wait_for_url("**/candidate?id=*")
        assert page.locator("h1").inner_text() == f"Candidate {top}"

        # j selects the first answer, g jumps to its grade field; type, Tab through note and name, Enter saves.
        page.keyboard.press("j")
        page.keyboard.press("g")
        first = page.locator("article.answer").first
        assert page.evaluate("document.activeElement.name") == "grade"
        page.keyboard.type("9.5")
        page.keyboard.press("Tab")
        page.keyboard.type("reads better than the model thought")
        page.keyboard.press("Tab")
        page.keyboard.type("kim")
        page.keyboard.press("Enter")
        page.wait_for_selector("#saved")
        assert "Saved grade 9.5 by kim" in page.locator("#saved").inner_text()
        answer_id = first.get_attribute("id")

        # Reload: the grade is stored (history and final grade) and the scorecard follows it.
        page.reload()
        card = page.locator(f"#{answer_id}")
        assert card.locator(".final-grade").inner_text() == "9.5"
        assert "kim" in card.locator("details.history").inner_text()
        assert "reads better than the model thought" in card.locator("details.history").inner_text()
        snap = folder.snapshot()
        graded = [a for a in snap.answers if a.human is not None]
        assert [(a.candidate_id, a.human.grade, a.human.reviewer) for a in graded] == [(top, 9.5, "kim")]
        expected = next(c for c in snap.cards if c["candidate_id"] == top)["final_overall_score_100"]
        assert f"{expected:g}" in page.locator("#scorecard").inner_text()
        page.evaluate("window.scrollTo(0, 0)")
        _shot(page, shots / "candidate.png")
        page.goto(base + "/")
        after = page.locator(f'td.final[data-candidate="{top}"]').inner_text()
        assert after != before and float(after) == expected

        # The review queue: n and p walk it.
        page.goto(base + "/queue")
        start = page.url
        page.keyboard.press("n")
        page.wait_for_url("**/queue?key=*")
        assert page.url != start
        page.keyboard.press("p")
        page.wait_for_function("document.querySelector('a[rel=next]') && !document.querySelector('a[rel=prev]')")
        _shot(page, shots / "queue.png")

        # A malicious answer is shown as text and runs nothing.
        page.goto(base + "/candidate?id=mallory")
        assert "<script>window.__xss" in page.locator(".answer-text").first.inner_text()
        assert page.evaluate("window.__xss") is None and page.locator("img[src=x]").count() == 0
        assert dialogs == []

        # Agreement: a reviewer grades every scored answer (here a stand-in: the model's score, shifted).
        for i, a in enumerate(folder.snapshot().answers):
            if a.status == "scored" and a.human is None:
                g = min(10.0, max(0.0, round(a.v["score"] + (1.5 if i % 3 else -2.0), 1)))
                folder.grades.add(a.key, g, "", "kim", (0, 10))
        page.goto(base + "/agreement")
        page.wait_for_selector("#metrics", timeout=120_000)  # computed in the background; the page refreshes itself
        assert page.locator(".plots img").count() == 6
        assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        _shot(page, shots / "agreement.png")
        browser.close()
    assert not [e for e in errors if "Content Security Policy" in e], errors

    # The grade entered in the browser reaches results.csv through --export, and calibrate reads it.
    assert main(["review", str(out), "--export", str(tmp_path / "grades.csv")]) == 0
    with open(out / "results.csv", encoding="utf-8", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["human_reviewer"] == "kim" and r["human_score"] == "9.5")
    assert row["candidate_id"] == top and row["final_score"] == "9.5" and row["final_source"] == "human"
    assert main(["calibrate", "--verdicts", str(out), "--out", str(tmp_path / "calib"), "--bootstrap", "50"]) == 0
    assert (tmp_path / "calib" / "mapping.json").exists()
