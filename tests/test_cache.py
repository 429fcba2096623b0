"""The verdict cache: hit, miss, invalidation, concurrent writers."""

import threading

from evaluator.cache import VerdictCache
from evaluator.prompts import PromptSet
from evaluator.scoring import build_evaluator


def errors_in_threads(fn, n: int) -> list[BaseException]:
    """Runs fn(0) .. fn(n-1) in n threads at once; returns what they raised."""
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            fn(k)
        except BaseException as e:  # noqa: BLE001 - collected for the caller's assertion
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_second_run_makes_no_judge_call(tmp_path):
    ev = build_evaluator(judge="fake:overlap", embedder="fake:hash", cache_path=tmp_path / "c.sqlite3")
    les, q = ev.resources.find_question("overfitting")
    a = ev.score(les, q, "Overfitting is fitting noise in the training data.")
    calls = ev.judge.backend.calls
    b = ev.score(les, q, "Overfitting is fitting noise in the training data.")
    assert ev.judge.backend.calls == calls and a == b
    ev.refresh = True
    ev.score(les, q, "Overfitting is fitting noise in the training data.")
    assert ev.judge.backend.calls > calls


def test_key_changes_with_rubric_prompt_answer_and_model(tmp_path, resources):
    ev = build_evaluator(judge="fake:overlap", embedder="fake:hash", cache_path=tmp_path / "c.sqlite3")
    les, q = ev.resources.find_question("overfitting")
    lr = ev.resources.rubric("ml-screening")
    k = ev.key_for(les, q, lr, "answer")
    assert ev.key_for(les, q, lr, "answer 2") != k
    assert ev.key_for(les, q, type(lr)(lr.rubric, lr.path, "otherhash"), "answer") != k
    prompts_copy = tmp_path / "prompts"
    prompts_copy.mkdir()
    for p in resources.prompts_dir.glob("*.j2"):
        (prompts_copy / p.name).write_text(p.read_text() + ("\n" if p.name == "system.j2" else ""))
    ev.prompts = PromptSet(prompts_copy)
    assert ev.key_for(les, q, lr, "answer") != k
    ev2 = build_evaluator(judge="fake:overlap", embedder="fake:hash", temperature=0.5, use_cache=False)
    assert ev2.key_for(les, q, lr, "answer") != k


def test_concurrent_writers(tmp_path):
    # Twenty new files, six threads opening each at once: switching a new file to WAL once failed one opener in
    # about sixteen with "database is locked" (the busy timeout does not cover that lock).
    for trial in range(20):
        path = tmp_path / f"c{trial}.sqlite3"

        def writer(n, path=path):
            c = VerdictCache(path)
            for i in range(50):
                c.put(f"{n}-{i}", "{}")

        assert not errors_in_threads(writer, 6) and len(VerdictCache(path)) == 300


def test_reference_vectors_persist_across_processes(tmp_path, monkeypatch):
    import numpy as np

    from evaluator.embeddings import CachedEmbedder, HashEmbedder

    monkeypatch.setenv("EVALUATOR_CACHE_DIR", str(tmp_path / "vc"))

    class Counting(HashEmbedder):
        encoded = 0

        def encode(self, texts):
            Counting.encoded += len(texts)
            return super().encode(texts)

    refs = ["Overfitting is fitting noise.", "Regularisation shrinks weights.", "Overfitting is fitting noise."]
    first = CachedEmbedder(Counting(), persist=True).encode(refs)
    assert Counting.encoded == 2
    second = CachedEmbedder(Counting(), persist=True).encode(refs)  # a new process: memory empty
    assert Counting.encoded == 2  # read from disk, not encoded again
    assert np.array_equal(first, second)
    CachedEmbedder(Counting(), persist=False).encode(refs)
    assert Counting.encoded == 4


def test_memory_cache_evicts_the_oldest_and_never_loses_a_result_to_eviction():

    from evaluator.embeddings import CachedEmbedder, HashEmbedder

    emb = CachedEmbedder(HashEmbedder(), max_items=8)
    emb.encode_answers([f"first answer {i}" for i in range(8)])
    emb.encode_answers(["a new answer"])
    assert "first answer 0" not in emb._answers and "first answer 1" in emb._answers and len(emb._answers) == 8

    # Threads that keep adding and so evicting (as the batch's embed-ahead thread does): every call returns
    # a vector for every text it asked for.
    def read(k: int) -> None:
        for i in range(200):
            texts = [f"t{k}-{i % 5}", f"t{k}-{(i + 1) % 5}"]
            assert len(emb.encode_answers(texts)) == 2 and emb.encode(texts).shape == (2, 256)

    assert not errors_in_threads(read, 4) and len(emb._answers) <= 8 and len(emb._cache) <= 8
