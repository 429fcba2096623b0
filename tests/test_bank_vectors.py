"""Reference vectors shipped beside an eval set, so a bank is not encoded again on each new machine."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from evaluator.cache import VectorCache
from evaluator.cli import main
from evaluator.embeddings import (
    CachedEmbedder,
    HashEmbedder,
    MiniLMEmbedder,
    bank_vectors_path,
    read_bank_vectors,
    write_bank_vectors,
)
from evaluator.errors import InputError


class Counting(HashEmbedder):
    def __init__(self):
        super().__init__()
        self.encoded: list[str] = []

    def encode(self, texts):
        self.encoded += texts
        return super().encode(texts)


def test_the_shipped_vectors_cover_the_bank(resources):
    """Fails when a reference or key point was edited without `evaluator questions vectors` being run."""
    les = resources.load_eval_set("ml-screening")
    path = bank_vectors_path(les.path)
    known = read_bank_vectors(path, MiniLMEmbedder.name)
    texts = {t for q in les.eval_set.questions for t in q.reference_texts}
    missing = [t for t in texts if VectorCache.key(t) not in known]
    assert not missing, f"{len(missing)} texts lack a vector in {path}; run: evaluator questions vectors"
    assert len(known) == len(texts)  # nothing stale either
    assert {v.shape for v in known.values()} == {(384,)}


def test_known_vectors_are_used_before_the_model(tmp_path):
    inner = Counting()
    emb = CachedEmbedder(inner, persist=True)
    shipped = {VectorCache.key("a reference"): np.full(256, 0.0625, dtype=np.float32)}
    emb.add_known(shipped)
    out = emb.encode(["a reference", "another text"])
    assert inner.encoded == ["another text"]  # only the text without a shipped vector was encoded
    assert np.array_equal(out[0], shipped[VectorCache.key("a reference")])


def test_vectors_file_round_trip_and_other_models(tmp_path):
    path = tmp_path / "bank.vectors.npz"
    write_bank_vectors(path, HashEmbedder(), ["one text", "two texts", "one text"])
    got = read_bank_vectors(path, "fake:hash")
    assert len(got) == 2
    assert np.array_equal(got[VectorCache.key("two texts")], HashEmbedder().encode(["two texts"])[0])
    assert read_bank_vectors(path, MiniLMEmbedder.name) == {}  # another model's vectors are never used
    assert read_bank_vectors(tmp_path / "none.vectors.npz", "fake:hash") == {}


def test_a_broken_vectors_file_is_named_with_the_fix(tmp_path):
    path = tmp_path / "bank.vectors.npz"
    path.write_bytes(b"not a numpy file")
    with pytest.raises(InputError, match=r"bank\.vectors\.npz: not a bank vectors file.*questions vectors"):
        read_bank_vectors(path, "fake:hash")


def test_questions_vectors_command_and_grading_use_them(tmp_path, resources, capsys, monkeypatch):
    bank = tmp_path / "bank.yaml"
    shutil.copy(resources.eval_set_path("ml-screening"), bank)
    assert main(["questions", "vectors", "--eval-set", str(bank), "--embedder", "fake:hash"]) == 0
    assert "bank.vectors.npz: 505 texts" in capsys.readouterr().out

    from evaluator import embeddings
    from evaluator.scoring import build_evaluator

    inner = Counting()
    monkeypatch.setitem(embeddings._EMBEDDERS, "fake:hash", CachedEmbedder(inner))
    ev = build_evaluator(judge="fake:overlap", embedder="fake:hash", use_cache=False)
    les = resources.load_eval_set(bank)
    q = les.by_id["overfitting"]
    v = ev.score(les, q, "Overfitting means the model memorises noise in the training data.")
    assert v.status == "scored" and v.similarity.best_reference > 0
    assert not set(q.reference_texts) & set(inner.encoded)  # references came from the file, not the model


@pytest.mark.slow
def test_shipped_vectors_match_a_fresh_encode(resources):
    les = resources.load_eval_set("ml-screening")
    known = read_bank_vectors(bank_vectors_path(les.path), MiniLMEmbedder.name)
    texts = [t for q in les.eval_set.questions[::17] for t in q.reference_texts[:2]]
    fresh = MiniLMEmbedder().encode(texts)
    shipped = np.stack([known[VectorCache.key(t)] for t in texts])
    assert np.abs(fresh - shipped).max() < 1e-5
