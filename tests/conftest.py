import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test picks up a real endpoint, key or the user's cache from the environment."""
    for k in list(os.environ):
        if k.startswith(("EVALUATOR_", "OPENAI_")):
            monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("EVALUATOR_CACHE_DIR", str(tmp_path / "cache"))
    # The assembled default model is large: reuse the user's copy when there is one.
    home_model = Path.home() / ".cache" / "evaluator" / "models"
    if home_model.exists():
        (tmp_path / "cache").mkdir(exist_ok=True)
        os.symlink(home_model, tmp_path / "cache" / "models")


@pytest.fixture
def resources():
    from evaluator.resources import Resources

    return Resources.locate()


@pytest.fixture
def fake_evaluator():
    from evaluator.scoring import build_evaluator

    return build_evaluator(judge="fake:overlap", embedder="fake:hash", use_cache=False)


@pytest.fixture
def scripted_evaluator(resources):
    """An evaluator whose judge replies with the digit distributions a test enqueues (anchors not read, so the
    test scripts the answer's reads only)."""
    from evaluator.config import resolve_judge_settings
    from evaluator.judges import make_judge
    from evaluator.scoring import Evaluator

    ev = Evaluator(
        resources=resources,
        judge=make_judge(resolve_judge_settings("fake:scripted", mode="probability")),
        embedder_name="fake:hash",
        cache=None,
    )
    ev.anchors = lambda q, rubric: None
    return ev


def run_cli(*args: str, input: str | None = None, env: dict | None = None):
    import subprocess

    e = {k: v for k, v in os.environ.items()}
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "evaluator", *args],
        capture_output=True,
        text=True,
        input=input,
        cwd=ROOT,
        env=e,
        timeout=600,
    )
