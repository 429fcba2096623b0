"""The review workspace through Starlette's test client: pages, grading, safety (escaping, CSP, CSRF, token,
host check), malformed input, append-only history, final grades in the outputs, export and calibrate."""

from __future__ import annotations

import csv
import json
import re
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from evaluator.cli import main
from evaluator.human_grades import HumanGrades, validate
from evaluator.review_app import CSP, create_app
from evaluator.review_data import Folder, highlight, review_order, score_spread
from fake_server import serve

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "answers.csv"
FAKE = ["--judge", "fake:overlap", "--embedder", "fake:hash", "--no-cache"]
LOCAL = "http://127.0.0.1"

XSS_ANSWER = (
    'Overfitting <script>alert("answer")</script> means the model memorises noise '
    '<img src=x onerror=alert(1)> and validation error rises. "><svg onload=alert(2)>'
)
XSS_CANDIDATE = "<b>mallory</b>"


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> Path:
    """The example answers graded once with the fake judge; tests copy the folder."""
    src = tmp_path_factory.mktemp("graded") / "demo"
    assert main(["grade", str(EXAMPLES), "--out", str(src), *FAKE]) == 0
    return src


@pytest.fixture
def folder(graded, tmp_path) -> Path:
    dst = tmp_path / "demo"
    shutil.copytree(graded, dst)
    return dst


def client_for(folder_path: Path, **kw) -> tuple[TestClient, Folder]:
    f = Folder(folder_path)
    return TestClient(create_app(f, **kw), base_url=LOCAL, follow_redirects=False), f


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)


def grade_form(client: TestClient, key: str, grade, page: str = "/queue", **extra) -> dict:
    html = client.get(page).text
    data = {"csrf": csrf_of(html), "key": key, "grade": str(grade), "note": "", "reviewer": "rita", "next": page}
    data.update(extra)
    return data


def read_csv_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def human_rows(folder_path: Path) -> list[tuple]:
    with sqlite3.connect(folder_path / "results.sqlite3") as c:
        return c.execute(
            "SELECT key, grade, old_grade, old_source, note, reviewer FROM human_grades ORDER BY id"
        ).fetchall()


# ---------------------------------------------------------------- pages


def test_every_page_renders_with_the_safety_headers(folder):
    client, f = client_for(folder)
    for url in ("/", "/candidate?id=ana", "/queue", "/agreement", "/static/review.js", "/static/review.css"):
        r = client.get(url)
        assert r.status_code == 200, url
        assert r.headers["content-security-policy"] == CSP
        assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
        assert r.headers["x-content-type-options"] == "nosniff"
    page = client.get("/").text
    # The only script is the static file: no inline script and no inline handlers in any page.
    for url in ("/", "/candidate?id=ana", "/queue", "/agreement"):
        html = client.get(url).text
        assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/review.js" defer>']
        assert not re.search(r"\son[a-z]+=", html) and "style=" not in html
    ranked = sorted(f.snapshot().cards, key=lambda c: -c["final_overall_score_100"])
    assert re.findall(r'/candidate\?id=(\w+)"', page) == [c["candidate_id"] for c in ranked]


def test_candidate_page_shows_every_answer_in_full(folder):
    client, f = client_for(folder)
    snap = f.snapshot()
    html = client.get("/candidate?id=chen").text
    for a in snap.candidate_answers("chen"):
        assert f'id="a-{a.line}"' in html
        # The full text, escaped by the template (the answers hold quotes and apostrophes).
        first = a.text.split("\n")[0][:60].replace("'", "&#39;").replace('"', "&#34;")
        assert first in html
    injected = next(a for a in snap.candidate_answers("chen") if a.line == 8)
    assert injected.flagged and "injection_suspected" in html
    assert "Provenance</summary>" in html and "<details" in html
    assert "holistic level" in html and "correctness" in html
    assert client.get("/candidate?id=nobody").status_code == 404


def test_key_points_render_covered_and_missing_with_their_evidence(folder):
    # The key-point grading fills Verdict.key_points; the fake judges leave it empty, so one verdict gets two here.
    with sqlite3.connect(folder / "results.sqlite3") as c:
        key, answer, verdict = c.execute("SELECT key, answer, verdict FROM results WHERE line = 2").fetchone()
        v = json.loads(verdict)
        quote = answer.split(".")[0]
        v["key_points"] = [
            {
                "text": "Names the gap between training and validation error",
                "probability": 0.91,
                "covered": True,
                "evidence": quote,
                "similarity": 0.72,
            },
            {
                "text": "Mentions cross-validation",
                "probability": 0.12,
                "covered": False,
                "evidence": "",
                "similarity": 0.18,
            },
        ]
        c.execute("UPDATE results SET verdict = ? WHERE key = ?", (json.dumps(v), key))
    client, _ = client_for(folder)
    html = client.get("/candidate?id=ana").text
    assert '<tr class="covered"><td>✓ covered</td><td>Names the gap between training and validation error</td>' in html
    assert '<tr class="missing"><td>✗ missing</td><td>Mentions cross-validation</td>' in html
    assert "91%" in html and "12%" in html
    esc = quote.replace("'", "&#39;")
    assert f'<mark class="ev ev-key_point" title="key point 1">{esc}</mark>' in html


def test_list_sorts_and_filters_by_a_carried_through_column(folder):
    client, f = client_for(folder)

    def order(url: str) -> list[str]:
        return re.findall(r'/candidate\?id=(\w+)"', client.get(url).text)

    assert order("/?sort=candidate_id&dir=asc") == ["ana", "ben", "chen", "dana"]
    assert order("/?sort=candidate_id&dir=desc") == ["dana", "chen", "ben", "ana"]
    assert order("/?f_role=ml-engineer&sort=candidate_id&dir=asc") == ["ana", "chen"]
    assert order("/?f_role=research") == ["dana"]
    cards = {c["candidate_id"]: c["recommendation"].split(" ")[0] for c in f.snapshot().cards}
    rec = cards["ana"]
    assert order(f"/?recommendation={rec}&sort=candidate_id&dir=asc") == sorted(c for c, r in cards.items() if r == rec)
    assert order("/?sort=no-such-column") == order("/")  # unknown sort falls back to the final score


@pytest.fixture(scope="module")
def graded_by_server(tmp_path_factory) -> Path:
    """The example answers graded by the fake OpenAI-compatible server in structured mode: every criterion level
    comes with the probabilities of its digit (top_logprobs), so each score has a spread."""
    out = tmp_path_factory.mktemp("server") / "demo"
    with serve() as url:
        judge = ["--judge", "openai", "--base-url", url, "--model", "fake", "--embedder", "fake:hash", "--no-cache"]
        assert main(["grade", str(EXAMPLES), "--out", str(out), *judge]) == 0
    return out


def test_queue_puts_flagged_first_then_least_certain(graded_by_server, tmp_path):
    folder = tmp_path / "demo"
    shutil.copytree(graded_by_server, folder)
    client, f = client_for(folder)
    snap = f.snapshot()
    order = [snap.by_key[k] for k in snap.queue]
    flags = [a.flagged for a in order]
    assert flags == sorted(flags, reverse=True) and flags[0]
    rest = [a.spread for a in order if not a.flagged]
    assert rest == sorted(rest, reverse=True) and all(s is not None and s > 0 for s in rest)
    first = client.get("/queue").text
    assert f'id="a-{order[0].line}"' in first and 'rel="next"' in first and 'rel="prev"' not in first
    nxt = re.search(r'href="([^"]+)" rel="next"', first).group(1).replace("&amp;", "&")
    assert f'id="a-{order[1].line}"' in client.get(nxt).text
    assert client.get("/queue?key=nope").status_code == 404


# ---------------------------------------------------------------- grading


def test_grading_appends_who_when_old_and_new_and_updates_the_final_grade(folder):
    client, f = client_for(folder)
    a = f.snapshot().candidate_answers("ana")[0]
    page = "/candidate?id=ana"
    r = client.post("/grade", data=grade_form(client, a.key, 9, page, note="clear, complete"))
    assert r.status_code == 303 and r.headers["location"].startswith(page)
    assert r.cookies.get("review_reviewer") == "rita"
    r = client.post("/grade", data=grade_form(client, a.key, "8.5", page, reviewer="sam"))
    assert r.status_code == 303
    assert human_rows(folder) == [
        (a.key, 9.0, a.v["score"], "model", "clear, complete", "rita"),
        (a.key, 8.5, 9.0, "human", "", "sam"),
    ]
    html = client.get(r.headers["location"]).text
    assert "Saved grade 8.5 by sam" in html and "replacing human grade 9" in html
    snap = f.snapshot()
    assert snap.by_key[a.key].final == 8.5 and snap.by_key[a.key].final_source == "human"
    card = next(c for c in snap.cards if c["candidate_id"] == "ana")
    assert card["human_graded"] == 1
    others = [x.final_100 for x in snap.candidate_answers("ana") if x.key != a.key]
    assert card["final_overall_score_100"] == round(sum([85.0, *others]) / 3, 1)
    assert card["final_overall_score_100"] != card["overall_score_100"]


def test_two_reviewers_at_once_last_write_wins_and_both_are_kept(folder):
    alice, f = client_for(folder)
    bob = TestClient(alice.app, base_url=LOCAL, follow_redirects=False)  # another browser: its own session
    key = f.snapshot().queue[0]
    form_a = grade_form(alice, key, 3, reviewer="alice")
    form_b = grade_form(bob, key, 7, reviewer="bob")  # both opened the page before either saved
    assert form_a["csrf"] != form_b["csrf"]
    assert alice.post("/grade", data=form_a).status_code == 303
    r = bob.post("/grade", data=form_b)
    assert r.status_code == 303 and "conflict=1" in r.headers["location"]
    assert [(g[1], g[2], g[5]) for g in human_rows(folder)] == [
        (3.0, f.snapshot().by_key[key].v["score"], "alice"),
        (7.0, 3.0, "bob"),
    ]
    assert f.snapshot().by_key[key].final == 7.0
    assert "Another reviewer graded this answer after you opened it" in bob.get(r.headers["location"]).text


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        ({"grade": "11"}, 400, "grade 11 is outside the scale; enter a number from 0 to 10"),
        ({"grade": "-1"}, 400, "outside the scale"),
        ({"grade": "nan"}, 400, "outside the scale"),
        ({"grade": "seven"}, 400, "is not a number"),
        ({"grade": ""}, 400, "is not a number"),
        ({"key": "nobody|overfitting"}, 404, "unknown answer id"),
        ({"note": "x" * 2001}, 400, "the note has 2001 characters, over the limit of 2000"),
        ({"reviewer": "  "}, 400, "the reviewer&#39;s name is empty"),
        ({"reviewer": "a\x00b"}, 400, "control characters"),
        ({"csrf": "0" * 64}, 403, "CSRF check"),
        ({"csrf": ""}, 403, "CSRF check"),
    ],
)
def test_malformed_input_gets_a_clear_error_and_changes_nothing(folder, change, status, message):
    client, f = client_for(folder)
    key = f.snapshot().queue[0]
    r = client.post("/grade", data={**grade_form(client, key, 5), **change})
    assert r.status_code == status
    assert message in r.text and "Nothing was changed" in r.text
    assert human_rows(folder) == []
    assert f.snapshot().by_key[key].final_source == "model"


def test_a_post_from_another_site_without_the_session_is_refused(folder):
    client, f = client_for(folder)
    form = grade_form(client, f.snapshot().queue[0], 5)
    stranger = TestClient(client.app, base_url=LOCAL, follow_redirects=False)  # no session cookie
    assert stranger.post("/grade", data=form).status_code == 403
    assert client.post("/grade", data={**form, "next": "//evil.example/x"}).headers["location"].startswith("/?")
    assert human_rows(folder) and len(human_rows(folder)) == 1


def test_oversized_form_is_refused(folder):
    client, f = client_for(folder)
    form = grade_form(client, f.snapshot().queue[0], 5, note="x" * 70000)
    r = client.post("/grade", data=form)
    assert r.status_code == 413 and human_rows(folder) == []


def test_concurrent_writers_each_name_the_grade_they_replaced(folder):
    key = Folder(folder).snapshot().queue[0]
    model = Folder(folder).snapshot().by_key[key].v["score"]
    stores = [HumanGrades(folder / "results.sqlite3") for _ in range(4)]  # as four server processes would

    def write(i: int) -> None:
        for k in range(5):
            stores[i].add(key, i + k / 10, "", f"r{i}", (0, 10))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    history = stores[0].history(key)
    assert len(history) == 20 and sorted(e.grade for e in history) == sorted(
        i + k / 10 for i in range(4) for k in range(5)
    )
    # Serialised: every grade replaced exactly the one saved just before it; the last one is the final grade.
    assert history[0].old_grade == model and history[0].old_source == "model"
    assert all(b.old_grade == a.grade and b.old_source == "human" for a, b in zip(history, history[1:], strict=False))
    assert Folder(folder).snapshot().by_key[key].final == history[-1].grade


def test_history_is_append_only_in_the_database(folder):
    hg = HumanGrades(folder / "results.sqlite3")
    key = Folder(folder).snapshot().queue[0]
    hg.add(key, 4, "", "rita", (0, 10))
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        hg.conn.execute("UPDATE human_grades SET grade = 10")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        hg.conn.execute("DELETE FROM human_grades")
    assert [e.grade for e in hg.history(key)] == [4.0]


# ---------------------------------------------------------------- untrusted text


def test_malicious_answer_renders_as_text(tmp_path):
    src = tmp_path / "answers.csv"
    with open(src, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["candidate_id", "question_id", "answer", "role"])
        w.writerow([XSS_CANDIDATE, "overfitting", XSS_ANSWER, '"><script>alert(3)</script>'])
    out = tmp_path / "xss"
    assert main(["grade", str(src), "--out", str(out), *FAKE]) == 0
    client, f = client_for(out)
    key = f.snapshot().answers[0].key
    hg = HumanGrades(out / "results.sqlite3")
    hg.add(key, 2, '<script>alert("note")</script>', "<i>eve</i>", (0, 10))
    pages = [
        client.get("/").text,
        client.get("/candidate", params={"id": XSS_CANDIDATE}).text,
        client.get("/queue").text,
    ]
    for html in pages:
        assert "<script>alert" not in html and "<img src=x" not in html and "<svg onload" not in html
        assert "<b>mallory" not in html and "<i>eve" not in html
        assert not re.search(r"<[a-z]+[^>]*\son(error|load)=", html)
    cand, queue = pages[1], pages[2]
    for html in (cand, queue):
        assert "&lt;script&gt;alert(&#34;answer&#34;)&lt;/script&gt;" in html
        assert "&lt;img src=x onerror=alert(1)&gt;" in html
        assert "&lt;script&gt;alert(&#34;note&#34;)&lt;/script&gt;" in html
    assert "&lt;b&gt;mallory&lt;/b&gt;" in pages[0]


def test_sentences_set_aside_are_shown_as_text(tmp_path, monkeypatch):
    from evaluator import similarity

    # The off-topic step runs with MiniLM only; the hash embedder gets a threshold for this test.
    monkeypatch.setattr(similarity, "OFF_TOPIC_BELOW", {"fake:hash": 0.25})
    brag = "My <b>previous manager</b> said nobody on my team knows it better, and I led our review."
    src = tmp_path / "answers.csv"
    with open(src, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["candidate_id", "question_id", "answer"])
        w.writerow(["c1", "overfitting", f"Overfitting is when the model is too big for the training data. {brag}"])
    out = tmp_path / "aside"
    assert main(["grade", str(src), "--out", str(out), *FAKE]) == 0
    client, _ = client_for(out)
    html = client.get("/candidate", params={"id": "c1"}).text
    assert "Set aside: off the subject" in html
    assert "My &lt;b&gt;previous manager&lt;/b&gt; said nobody" in html and "<b>previous" not in html


def test_highlight_cuts_text_without_markup_and_finds_respaced_quotes():
    text = "Bias is error from wrong assumptions.\nVariance   is sensitivity to the training set."
    segs = highlight(
        text,
        [
            ("variance is sensitivity", "criterion", "criterion coverage"),
            ("Bias is error", "red_flag", "red flag x"),
            ("error from wrong", "key_point", "key point 1"),
            ("not in the answer", "criterion", "criterion y"),
            ("<b>", "criterion", "too short to match"),
        ],
    )
    assert "".join(s.text for s in segs) == text
    marked = [(s.text, s.kind) for s in segs if s.kind]
    assert marked == [
        ("Bias is ", "red_flag"),
        ("error", "red_flag"),  # red flag wins over the key point where they overlap
        (" from wrong", "key_point"),
        ("Variance   is sensitivity", "criterion"),
    ]
    assert next(s for s in segs if s.text == "error").labels == ("red flag x", "key point 1")


# ---------------------------------------------------------------- spread and order


def _verdict(crit_probs, hol_probs=None, views=None, source="logits"):
    return {
        "status": "scored",
        "scale_min": 0,
        "scale_max": 10,
        "criteria": [
            {"id": f"c{i}", "weight": w, "level": 2.0, "probabilities": p, "probability_source": source}
            for i, (w, p) in enumerate(crit_probs)
        ],
        "holistic_level": 2.0 if hol_probs or views else None,
        "holistic_probabilities": hol_probs,
        "views": views or {},
        "review_flags": [],
    }


def test_score_spread_propagates_level_probabilities():
    sure = {"0": 0.0, "1": 0.0, "2": 1.0, "3": 0.0, "4": 0.0}
    split = {"0": 0.0, "1": 0.5, "2": 0.0, "3": 0.5, "4": 0.0}  # SD 1 level
    # One criterion with SD 1 level of 4: a quarter of the scale.
    assert score_spread(_verdict([(1.0, split)]), None) == 2.5
    # Two equal weights, one uncertain: half the weight, so half the spread.
    assert score_spread(_verdict([(0.5, split), (0.5, sure)]), None) == 1.25
    # Holistic only (reference-only rubric): the same arithmetic on the holistic reading.
    assert score_spread(_verdict([], hol_probs=split), 1.0) == 2.5
    # Criteria and holistic with the rubric's weight 0.5: sqrt(0.5^2 * 2.5^2 + 0.5^2 * 2.5^2).
    assert score_spread(_verdict([(1.0, split)], hol_probs=split), 0.5) == pytest.approx(1.768, abs=1e-3)
    # Both readings but the rubric unknown, sampled digits, one-hot everywhere: no figure rather than a false one.
    assert score_spread(_verdict([(1.0, split)], hol_probs=split), None) is None
    assert score_spread(_verdict([(1.0, sure)], source="sampled"), None) is None
    assert score_spread(_verdict([(1.0, sure)], hol_probs=sure), 0.5) is None
    # Criterion levels without probabilities (derived, or sampled) that weigh in the score: unknown, not zero.
    derived = _verdict([(1.0, None)], hol_probs=split)
    assert score_spread(derived, 0.5) is None
    assert score_spread(derived, 1.0) == 2.5  # they do not weigh in: the holistic reading is the whole score


def test_review_order_is_flagged_then_least_certain_then_file_order():
    from evaluator.review_data import Answer

    def ans(line, flagged, spread):
        v = {"review_flags": [{"code": "x", "reason": "y"}] if flagged else [], "status": "scored"}
        return Answer(str(line), line, "c", "q", "", "t", {}, "scored", v, None, None, spread)

    answers = [ans(2, False, 0.1), ans(3, True, 0.2), ans(4, False, 0.9), ans(5, True, None), ans(6, False, None)]
    assert review_order(answers) == ["3", "5", "4", "2", "6"]


def test_validate_cleans_and_rejects():
    assert validate(" 7.5 ", " a note\r\nline two ", " rita ", (0, 10)) == (7.5, "a note\nline two", "rita")
    assert validate("0", None, "r", (0, 10))[0] == 0.0 and validate("10", "", "r", (0, 10))[0] == 10.0


# ---------------------------------------------------------------- access


def test_token_is_required_beyond_this_machine(folder):
    app = create_app(Folder(folder), token="s3cret-token", local_only=False)
    c = TestClient(app, base_url="http://192.0.2.10:8765", follow_redirects=False)
    r = c.get("/")
    assert r.status_code == 401 and "access token" in r.text
    assert c.get("/?token=wrong").status_code == 401
    assert c.get("/", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    r = c.get("/candidate?id=ana&token=s3cret-token")
    assert r.status_code == 303 and r.headers["location"] == "/candidate?id=ana"  # the token leaves the address
    assert c.get("/candidate?id=ana").status_code == 200  # now by cookie
    assert c.get("/static/review.js").status_code == 200


def test_local_server_refuses_other_host_names(folder):
    client, _ = client_for(folder)
    assert client.get("/", headers={"host": "evil.example:8765"}).status_code == 400
    assert client.get("/", headers={"host": "localhost:8765"}).status_code == 200
    other = TestClient(create_app(Folder(folder), bound_host="127.0.0.2"), base_url="http://127.0.0.2:8765")
    assert other.get("/").status_code == 200  # --host 127.0.0.2 is loopback too: its own name is accepted


def test_review_cli_errors_and_loopback():
    from evaluator.review_app import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")


def test_review_of_a_folder_without_a_store_says_what_to_do(tmp_path, capsys):
    assert main(["review", str(tmp_path)]) == 3
    assert "no results store" in capsys.readouterr().err


# ---------------------------------------------------------------- outputs, export, calibrate


def test_regrading_keeps_human_grades_and_outputs_show_both(folder, capsys):
    client, f = client_for(folder)
    a = f.snapshot().candidate_answers("ben")[0]
    assert client.post("/grade", data=grade_form(client, a.key, 9.5, note="better than it reads")).status_code == 303
    # Re-grading the batch from scratch rewrites every verdict; the grade stays.
    assert main(["grade", str(EXAMPLES), "--out", str(folder), *FAKE, "--refresh"]) == 0
    rows = {r["candidate_id"] + "|" + r["question_id"]: r for r in read_csv_rows(folder / "results.csv")}
    row = rows[a.key]
    assert row["human_score"] == "9.5" and row["final_score"] == "9.5" and row["final_source"] == "human"
    assert row["human_reviewer"] == "rita" and row["human_note"] == "better than it reads"
    assert row["final_score_100"] == "95.0" and row["score"] != "9.5"
    other = next(r for k, r in rows.items() if k != a.key)
    assert other["final_score"] == other["score"] and other["final_source"] == "model" and other["human_score"] == ""
    cards = {c["candidate_id"]: c for c in read_csv_rows(folder / "scorecards.csv")}
    assert cards["ben"]["human_graded"] == "1"
    assert float(cards["ben"]["final_overall_score_100"]) > float(cards["ben"]["overall_score_100"])
    assert cards["ana"]["final_overall_score_100"] == cards["ana"]["overall_score_100"]


def test_export_writes_final_grades_and_notes_and_refreshes_results(folder, capsys):
    f = Folder(folder)
    a = f.snapshot().candidate_answers("dana")[0]
    f.grades.add(a.key, 1, "misses the point", "rita", (0, 10))
    f.grades.add(a.key, 2, "on second reading", "sam", (0, 10))
    (folder / "results.csv").unlink()
    out = folder.parent / "grades.csv"
    assert main(["review", str(folder), "--export", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    rows = read_csv_rows(out)
    assert len(rows) == 10
    mine = next(r for r in rows if r["answer_id"] == a.key)
    assert (mine["human_grade"], mine["final_grade"], mine["final_source"], mine["reviewer"]) == (
        "2.0",
        "2.0",
        "human",
        "sam",
    )
    assert mine["note"] == "on second reading" and mine["human_grades_count"] == "2"
    rest = [r for r in rows if r["answer_id"] != a.key]
    assert all(r["final_source"] == "model" and r["final_grade"] == r["model_score"] for r in rest)
    results = {r["candidate_id"] + "|" + r["question_id"]: r for r in read_csv_rows(folder / "results.csv")}
    assert results[a.key]["final_score"] == "2.0"


def test_calibrate_and_the_agreement_page_use_the_stored_grades(folder, tmp_path, capsys):
    client, f = client_for(folder)
    assert "need at least 10" in client.get("/agreement").text
    assert main(["calibrate", "--verdicts", str(folder), "--out", str(tmp_path / "c0")]) == 8
    assert "no human grades stored" in capsys.readouterr().err
    # A reviewer grades every scored answer: a noisy version of the model's score (a stand-in for real grades).
    for i, a in enumerate(f.snapshot().answers):
        if a.status == "scored":
            f.grades.add(a.key, min(10, max(0, round(a.v["score"] + (1 if i % 2 else -1.5), 1))), "", "rita", (0, 10))
    assert main(["calibrate", "--verdicts", str(folder), "--out", str(tmp_path / "c1"), "--bootstrap", "50"]) == 0
    printed = capsys.readouterr().out
    assert "Agreement with the official grade on 10 answers" in printed
    assert (tmp_path / "c1" / "metrics.json").exists() and (tmp_path / "c1" / "mapping.json").exists()
    html = client.get("/agreement").text
    assert 'id="agreement-computing"' in html and 'http-equiv="refresh"' in html  # computed in the background
    client.app.state.agreement.wait()
    html = client.get("/agreement").text
    assert 'id="metrics"' in html and "pearson" in html and 'http-equiv="refresh"' not in html
    plots = re.findall(r'<img src="(/agreement/[a-z_]+\.png)"', html)
    assert len(plots) == 6
    r = client.get(plots[0])
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content[:4] == b"\x89PNG"
    assert client.get("/agreement/../../results.sqlite3").status_code == 404
    # A new grade: the old figures stay on the page, marked as being updated, until the new ones are ready.
    f.grades.add(f.snapshot().answers[0].key, 0, "", "sam", (0, 10))
    assert 'id="agreement-stale"' in client.get("/agreement").text
    client.app.state.agreement.wait()
    assert 'id="agreement-stale"' not in client.get("/agreement").text
    # --human-columns describes a file: without one it is an error, not ignored.
    assert main(["calibrate", "--verdicts", str(folder), "--human-columns", "a,b"]) == 3
