"""Page load times of the review workspace on a 1000-answer batch folder.

    .venv/bin/python benchmarks/review_load.py [--answers 1000] [--graded 200] [--browser /usr/bin/chromium]

Builds the folder without an LLM: 4 answers per candidate taken from the bank's exemplars (strong, partial and
weak answers written for the questions), graded in structured mode by the fake OpenAI-compatible server (it
quotes evidence and fires red flags, so pages carry highlights). Then `--graded` answers get a stand-in human
grade (the model's score shifted by a fixed pattern: for timing the agreement page, not a measurement of
agreement). The app is served by uvicorn on 127.0.0.1 in this process and each page is fetched over HTTP:
the first request (which reads the store) and the median of the next five. With --browser, the same pages are
also opened in headless chromium and timed to the load event (HTML, CSS, JS and images).
"""

from __future__ import annotations

import argparse
import csv
import re
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the fake server lives with the tests

from evaluator import build_evaluator, grade_csv  # noqa: E402
from evaluator.resources import Resources  # noqa: E402
from evaluator.review_app import create_app  # noqa: E402
from evaluator.review_data import Folder  # noqa: E402
from fake_server import serve  # noqa: E402


def build_folder(work: Path, n: int) -> Path:
    les = Resources.locate().load_eval_set("ml-screening")
    qs = [q for q in les.eval_set.questions if q.exemplars]
    src = work / "answers.csv"
    with open(src, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["candidate_id", "question_id", "answer", "role"])
        for i in range(n):
            cand, k = divmod(i, 4)
            q = qs[(cand * 4 + k * 7) % len(qs)]
            ex = q.exemplars[(cand + k) % len(q.exemplars)]
            w.writerow([f"c{cand:04d}", q.id, ex.answer, ("ml-engineer", "data-analyst", "research")[cand % 3]])
    out = work / "batch"
    with serve() as url:
        ev = build_evaluator("openai", base_url=url, model="fake", embedder="fake:hash", use_cache=False, explain=False)
        t0 = time.perf_counter()
        grade_csv(src, out, ev, concurrency=16)
        print(f"graded {n} answers with the fake server in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return out


def add_stand_in_grades(folder: Folder, n: int) -> None:
    answers = [a for a in folder.snapshot().answers if a.status == "scored"][:n]
    for i, a in enumerate(answers):
        g = min(10.0, max(0.0, round(a.v["score"] + (1.5, -1.0, 0.5, -2.0)[i % 4], 1)))
        folder.grades.add(a.key, g, "", "bench", (0, 10))


class Server:
    def __init__(self, app):
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def timed(opener, url: str, data: bytes | None = None) -> tuple[float, str]:
    t0 = time.perf_counter()
    with opener.open(url, data=data) as r:
        body = r.read().decode()
    return time.perf_counter() - t0, body


def ms(x: float) -> str:
    return f"{1000 * x:.0f} ms"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--answers", type=int, default=1000)
    p.add_argument("--graded", type=int, default=200, help="answers given a stand-in human grade")
    p.add_argument("--browser", default=None, help="chromium executable: also time each page in a browser")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = build_folder(Path(tmp), a.answers)
        folder = Folder(out)
        add_stand_in_grades(folder, a.graded)
        snap = folder.snapshot()
        mid = snap.queue[len(snap.queue) // 2]
        pages = {
            "candidates (ranked list)": "/",
            "candidates, sorted and filtered": "/?f_role=research&sort=red_flags&dir=desc",
            "one candidate (4 answers)": "/candidate?id=c0123",
            "review queue (first)": "/queue",
            "review queue (middle)": "/queue?" + urllib.parse.urlencode({"key": mid}),
            "agreement": "/agreement",
        }
        rows = []
        folder = Folder(out)  # a fresh process's view: nothing read yet
        app = create_app(folder)
        with Server(app) as base:
            opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
            for name, path in pages.items():
                first, _ = timed(opener, base + path)
                if path == "/agreement":
                    t0 = time.perf_counter()
                    app.state.agreement.wait(600)
                    print(
                        f"agreement figures ({a.graded} grades) computed in {time.perf_counter() - t0:.1f} s "
                        "more (background)",
                        file=sys.stderr,
                    )
                warm = statistics.median(timed(opener, base + path)[0] for _ in range(5))
                rows.append((name, first, warm))
            # Saving a grade: the POST, its redirect, and the next queue page (the store is read again).
            _, html = timed(opener, base + "/queue")
            csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)
            saves = []
            for key in snap.queue[:5]:
                form = {"csrf": csrf, "key": key, "grade": "5", "note": "", "reviewer": "bench", "next": "/queue"}
                saves.append(timed(opener, base + "/grade", urllib.parse.urlencode(form).encode())[0])
            rows.append(("save a grade + next page", saves[0], statistics.median(saves[1:])))
            # Agreement: the page answers at once; the figures are computed in the background.
            t0 = time.perf_counter()
            timed(opener, base + "/agreement")  # shows the previous figures and starts the update
            app.state.agreement.wait(600)
            computed = time.perf_counter() - t0
            print(f"agreement figures after the new grades computed in {computed:.1f} s (background)", file=sys.stderr)
            browser_rows = browser_times(a.browser, base, pages) if a.browser else {}
    print(f"\n{a.answers} answers, {len(snap.cards)} candidates, {a.graded} with a stand-in human grade")
    print(
        f"{'page':38} {'first request':>14} {'median of next 5':>17}" + ("  browser (load event)" if a.browser else "")
    )
    for name, first, warm in rows:
        b = browser_rows.get(name)
        warm_s = ms(warm) if warm == warm else "-"
        print(f"{name:38} {ms(first):>14} {warm_s:>17}" + (f"  {ms(b):>20}" if b is not None else ""))
    return 0


def browser_times(executable: str, base: str, pages: dict[str, str]) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    out = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(base + "/")
        for name, path in pages.items():
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                page.goto(base + path, wait_until="load")
                times.append(time.perf_counter() - t0)
            out[name] = statistics.median(times)
        browser.close()
    return out


if __name__ == "__main__":
    raise SystemExit(main())
