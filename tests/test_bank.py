"""The shipped bank and rubrics: complete, valid, and covering every seed question."""

import csv
import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, SHARED, run_cli
from evaluator.errors import DataValidationError
from evaluator.resources import Resources

BANK = ROOT / "eval_sets" / "ml-screening.yaml"
COVERAGE = ROOT / "eval_sets" / "ml-screening.coverage.csv"


SEED_FIXTURE = ROOT / "tests" / "fixtures" / "seeds.json"
RUN_WORDS = 12  # a run of this many words that also appears in a seed counts as copying


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def run_hash(words: list[str]) -> str:
    return hashlib.sha256(" ".join(words).encode("utf-8")).hexdigest()[:12]


def seed_fixture(seeds_dir: Path) -> dict:
    """What the tests need from the seed documents: their questions, and a hash of every RUN_WORDS-word run of their
    text (so the fixture does not carry the text itself). tests/fixtures/seeds.json is this, written as JSON."""
    questions = []
    texts = []
    for p in sorted(seeds_dir.glob("*.txt")):
        text = p.read_text(encoding="utf-8")
        texts.append(text)
        lines = [ln.strip() for ln in text.splitlines()]
        if p.name.startswith("000_"):
            questions += [ln for ln in lines if ln.endswith("?")]
        else:
            # Numbered questions; the numbered list inside one answer (regression assumptions) is not one.
            questions += [
                ln
                for ln in lines
                if re.match(r"^\d+\. ", ln) and ("?" in ln or re.match(r"^\d+\. (Explain|Describe|Differentiate)", ln))
            ]
    words = words_of(" ".join(texts))
    runs = sorted({run_hash(words[i : i + RUN_WORDS]) for i in range(len(words) - RUN_WORDS + 1)})
    return {"questions": questions, "run_words": RUN_WORDS, "run_hashes": runs}


def stored_seeds() -> dict:
    return json.loads(SEED_FIXTURE.read_text(encoding="utf-8"))


@pytest.mark.skipif(not (SHARED / "seeds").exists(), reason="shared/seeds not beside the checkout")
def test_seed_fixture_is_current():
    stored = stored_seeds()
    assert {k: stored[k] for k in ("questions", "run_words", "run_hashes")} == seed_fixture(SHARED / "seeds")


def test_every_seed_question_is_in_the_coverage_table(resources):
    rows = list(csv.DictReader(open(COVERAGE, encoding="utf-8", newline="")))
    covered = {r["seed_question"] for r in rows}
    seeds = stored_seeds()["questions"]
    assert len(seeds) == 95
    missing = [q for q in seeds if q not in covered]
    assert not missing, missing
    ids = set(resources.load_eval_set("ml-screening").by_id)
    assert {r["bank_id"] for r in rows} <= ids


def test_every_bank_question_is_complete(resources):
    es = resources.load_eval_set("ml-screening").eval_set
    assert len(es.questions) >= 85
    for q in es.questions:
        assert q.references and all(60 <= len(r.split()) <= 160 for r in q.references), q.id
        assert 3 <= len(q.key_points) <= 6, q.id
        assert len(q.red_flags) >= 2, q.id
        assert sorted(e.band.value for e in q.exemplars) == ["partial", "strong", "weak"], q.id
        assert q.level.value in {"junior", "mid", "senior"}


def test_key_point_contrasts_match_the_bank(resources):
    """benchmarks/contrast_reads.py pairs each key point with a false statement by position: a bank edit that adds,
    drops or reorders key points must be carried into the contrasts file."""
    contrasts = yaml.safe_load((ROOT / "benchmarks" / "data" / "key_point_contrasts.yaml").read_text(encoding="utf-8"))
    es = resources.load_eval_set("ml-screening").eval_set
    assert sorted(contrasts) == sorted(q.id for q in es.questions)
    for q in es.questions:
        assert len(contrasts[q.id]) == len(q.key_points), q.id
        assert not set(contrasts[q.id]) & set(q.key_points), q.id


def test_bank_text_is_not_copied_from_the_seeds():
    stored = stored_seeds()
    n, seed_runs = stored["run_words"], set(stored["run_hashes"])
    es = yaml.safe_load(BANK.read_text(encoding="utf-8"))
    copied = []
    for q in es["questions"]:
        for text in q["references"] + [e["answer"] for e in q["exemplars"]]:
            words = words_of(text)
            for i in range(len(words) - n + 1):
                if run_hash(words[i : i + n]) in seed_runs:
                    copied.append((q["id"], " ".join(words[i : i + n])))
                    break
    assert not copied, copied[:5]


def test_rubric_levels_and_weights(resources):
    for lr in resources.rubrics().values():
        r = lr.rubric
        assert abs(sum(c.weight for c in r.criteria) - r.weights_sum) < 1e-9
        for c in r.criteria:
            assert sorted(c.levels) == [0, 1, 2, 3, 4]
    screening = resources.rubric("ml-screening").rubric
    assert all(set(c.level_expectations) == {"junior", "mid", "senior"} for c in screening.criteria)


def _broken_copy(tmp_path, mutate, rubric_mutate=None):
    root = tmp_path / "data"
    for d in ("rubrics", "prompts", "eval_sets"):
        (root / d).mkdir(parents=True)
    for p in (ROOT / "rubrics").glob("*.yaml"):
        text = p.read_text()
        if rubric_mutate and p.stem == "ml-screening":
            text = rubric_mutate(text)
        (root / "rubrics" / p.name).write_text(text)
    for p in (ROOT / "rubrics").glob("*.json"):  # schemas and shipped calibration mappings
        (root / "rubrics" / p.name).write_text(p.read_text())
    for p in (ROOT / "prompts").glob("*.j2"):
        (root / "prompts" / p.name).write_text(p.read_text())
    data = yaml.safe_load(BANK.read_text())
    data["questions"] = data["questions"][:3]
    mutate(data)
    (root / "eval_sets" / "bank.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root


@pytest.mark.parametrize(
    "mutate,expect",
    [
        (lambda d: d["questions"][1].update(colour="red"), r"bank.yaml:\d+ \(question .+\): .*unknown key 'colour'"),
        (lambda d: d["questions"][0].update(references=[]), r"bank.yaml:\d+ \(question .+\): questions.0.references"),
        (
            lambda d: d["questions"][2].update(id=d["questions"][0]["id"]),
            r"bank.yaml:\d+ \(question .+\): duplicate id",
        ),
        (lambda d: d["questions"][0].update(level="principal"), r"bank.yaml:\d+ \(question .+\): questions.0.level"),
        (
            lambda d: d["questions"][1].update(rubric="nope"),
            r"bank.yaml:\d+ \(question .+\): rubric 'nope' does not exist",
        ),
    ],
    ids=["unknown-key", "missing-reference", "duplicate-id", "bad-level", "unknown-rubric"],
)
def test_validate_locates_problems(tmp_path, mutate, expect):
    root = _broken_copy(tmp_path, mutate)
    with pytest.raises(DataValidationError) as e:
        Resources(root).load_eval_set("bank")
    assert re.search(expect, str(e.value)), str(e.value)
    r = run_cli("questions", "validate", "--data-dir", str(root))
    assert r.returncode == 3
    assert re.search(expect, r.stderr), r.stderr


def test_validate_rejects_weights_that_do_not_sum(tmp_path):
    root = _broken_copy(tmp_path, lambda d: None, lambda t: t.replace("weight: 0.4", "weight: 0.5", 1))
    r = run_cli("questions", "validate", "--data-dir", str(root))
    assert r.returncode == 3
    assert re.search(r"ml-screening.yaml.*weights sum to 1.1 but weights_sum is 1", r.stderr), r.stderr


def test_shipped_bank_validates():
    r = run_cli("questions", "validate")
    assert r.returncode == 0, r.stderr
    assert "85 questions" in r.stdout


def test_json_schemas_are_current(tmp_path):
    from evaluator.resources import export_schemas

    for p in export_schemas(tmp_path):
        shipped = ROOT / ("rubrics" if p.name.startswith("rubric") else "eval_sets") / p.name
        assert shipped.read_text() == p.read_text(), f"{shipped} is stale: run `evaluator questions schema`"


def test_missing_data_dir_names_paths_tried(tmp_path):
    r = run_cli("questions", "list", "--data-dir", str(tmp_path / "nowhere"))
    assert r.returncode == 9  # not 2, which is argparse's usage error
    assert str(tmp_path / "nowhere") in r.stderr and "--data-dir" in r.stderr


def test_import_questions_from_csv(tmp_path):
    src = tmp_path / "q.csv"
    src.write_text(
        "question_id,question,reference_answer,level,key_points\n"
        "q1,What is a hash map?,A structure mapping keys to values via a hash function.,junior,keys;hash\n"
        "q1,What is a hash map?,A structure mapping keys to values via a hash function.,junior,keys;hash\n"
        "q2,What is recursion?,A function calling itself on a smaller input.,,\n",
        encoding="utf-8",
    )
    out = tmp_path / "mine.yaml"
    r = run_cli("questions", "import", str(src), "--out", str(out))
    assert r.returncode == 0, r.stderr
    r = run_cli("questions", "validate", str(out))
    assert r.returncode == 0, r.stderr
    data = yaml.safe_load(out.read_text())
    assert [q["id"] for q in data["questions"]] == ["q1", "q2"]
    assert data["questions"][0]["key_points"] == ["keys", "hash"]
    bad = tmp_path / "bad.csv"
    bad.write_text("id,question\nq1,What?\n", encoding="utf-8")
    r = run_cli("questions", "import", str(bad), "--out", str(tmp_path / "x.yaml"))
    assert r.returncode == 3 and "columns found: id, question" in r.stderr


def test_import_writes_how_many_key_points_a_question_asks_for(tmp_path):
    """From a points_required column, else from the wording ("name two of ..."), so the user can see and edit it;
    a bad value names its row and column."""
    src = tmp_path / "q.csv"
    src.write_text(
        "question_id,question,reference_answer,points_required\n"
        "q1,Name two causes of overfitting.,Too little data. Too many parameters. Training too long.,\n"
        "q2,What causes overfitting?,Too little data. Too many parameters. Training too long.,2\n"
        "q3,What is recursion?,A function calling itself. It needs a base case.,\n",
        encoding="utf-8",
    )
    out = tmp_path / "mine.yaml"
    r = run_cli("questions", "import", str(src), "--out", str(out))
    assert r.returncode == 0, r.stderr
    qs = yaml.safe_load(out.read_text())["questions"]
    assert [q.get("points_required") for q in qs] == [2, 2, None]
    r = run_cli("questions", "show", "q1", "--eval-set", str(out))
    assert "The question asks for 2 of these (points_required)" in r.stdout, r.stderr
    src.write_text(
        "question_id,question,reference_answer,points_required\nq1,What causes it?,Data. Parameters.,five\n",
        encoding="utf-8",
    )
    r = run_cli("questions", "import", str(src), "--out", str(tmp_path / "x.yaml"))
    assert r.returncode == 3 and f"{src}:2 (question q1), column points_required: 'five'" in r.stderr


def test_import_refuses_two_questions_under_one_id_and_names_both_rows(tmp_path):
    """Graded data sets do this (SAF's "saf-2.1" holds three questions): merging them would grade answers
    against another question's reference."""
    src = tmp_path / "q.csv"
    src.write_text(
        "question_id,question,reference_answer\n"
        "q1,What is a hash map?,A structure mapping keys to values via a hash function.\n"
        "q1,What is recursion?,A function calling itself on a smaller input.\n",
        encoding="utf-8",
    )
    r = run_cli("questions", "import", str(src), "--out", str(tmp_path / "x.yaml"))
    assert r.returncode != 0 and not (tmp_path / "x.yaml").exists()
    assert f"{src}:3 (question q1): question text differs from the one at q.csv:2" in r.stderr
    assert "give each distinct question its own id" in r.stderr
