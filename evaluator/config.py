"""Settings: CLI flag > EVALUATOR_* environment > OPENAI_* environment > default."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pydantic import BaseModel, Field

from .errors import JudgeConfigError

DEFAULT_MAX_ANSWER_CHARS = 8000
DEFAULT_CONCURRENCY = 8  # endpoint requests in flight at once, unless `grade --concurrency` says otherwise
DEFAULT_EMBEDDER = "minilm"
DEFAULT_EVAL_SET = "ml-screening"
DEFAULT_ADVANCE_AT = 70.0  # scorecards recommend "advance" at this mean score /100
DEFAULT_REJECT_BELOW = 40.0  # and "reject" below this one


def _env(*names: str) -> str | None:
    for n in names:
        v = os.environ.get(n)
        if v not in (None, ""):
            return v
    return None


class JudgeSettings(BaseModel):
    """Everything that selects and parameterises a judge. Secrets are excluded from dumps."""

    spec: str = Field(description="local | local:/path.gguf | openai | openai:MODEL | fake:scripted | fake:overlap")
    mode: str | None = Field(default=None, description="probability | structured (default depends on backend)")
    base_url: str | None = None
    api_key: str | None = Field(default=None, exclude=True, repr=False)
    model: str | None = None
    temperature: float = 0.0
    seed: int | None = 0
    timeout: float = 120.0
    max_tokens: int = 1024
    dialect: str = Field(default="auto", description="auto | json_schema | llama_cpp | json_object")
    explain: bool | None = Field(default=None, description="Generate evidence and rationale after scoring.")
    n_threads: int | None = None
    n_ctx: int = 4096

    def public_params(self) -> dict:
        """Parameters that can change a verdict (used in provenance and the cache key; no secrets)."""
        out = self.model_dump(exclude={"api_key", "timeout", "n_threads"})
        if out.get("base_url"):
            out["base_url"] = redact_url(out["base_url"])
        return out


_SECRET_PARAM = re.compile(r"key|token|secret|password|sig", re.I)


def redact_url(url: str) -> str:
    """The URL without a user and password (http://user:key@host/v1) and without query parameters that look like
    credentials (?api-key=...): what may be shown, logged, cached or written into a verdict."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = "&".join(
        f"{k}=***" if _SECRET_PARAM.search(k) else (f"{k}={v}" if v else k)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def resolve_judge_settings(
    judge: str | None = None,
    *,
    mode: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    model: str | None = None,
    temperature: float | None = None,
    seed: int | None = None,
    timeout: float | None = None,
    max_tokens: int | None = None,
    dialect: str | None = None,
    explain: bool | None = None,
) -> JudgeSettings:
    base_url = base_url or _env("EVALUATOR_BASE_URL", "OPENAI_BASE_URL")
    api_key = api_key or _env("EVALUATOR_API_KEY", "OPENAI_API_KEY")
    spec = judge or _env("EVALUATOR_JUDGE")
    if spec and spec.startswith("fake:") and not judge:
        # Fakes are for tests and must be asked for explicitly, never picked up from the environment.
        raise JudgeConfigError(
            f"EVALUATOR_JUDGE={spec} names a test fake; pass --judge {spec} explicitly if you mean it."
        )
    if not spec:
        spec = "openai" if (base_url or api_key) else "local"
    if spec.startswith("openai:"):
        model = model or spec.split(":", 1)[1]
        spec = "openai"
    if spec == "openai":
        model = model or _env("EVALUATOR_MODEL", "OPENAI_MODEL")
        if not model:
            raise JudgeConfigError(
                "the OpenAI-compatible judge needs a model name: pass --model NAME or set EVALUATOR_MODEL."
            )
    elif not (spec == "local" or spec.startswith("local:") or spec.startswith("fake:")):
        raise JudgeConfigError(
            f"unknown judge '{spec}'. Use local, local:/path/model.gguf, openai, openai:MODEL, fake:scripted or fake:overlap."
        )
    env_temp = _env("EVALUATOR_TEMPERATURE")
    env_seed = _env("EVALUATOR_SEED")
    env_timeout = _env("EVALUATOR_TIMEOUT")
    env_max = _env("EVALUATOR_MAX_TOKENS")
    return JudgeSettings(
        spec=spec,
        mode=mode or _env("EVALUATOR_JUDGE_MODE"),
        base_url=base_url,
        api_key=api_key,
        model=model,
        temperature=temperature if temperature is not None else float(env_temp or 0.0),
        seed=seed if seed is not None else (int(env_seed) if env_seed else 0),
        timeout=timeout if timeout is not None else float(env_timeout or 120.0),
        max_tokens=max_tokens if max_tokens is not None else int(env_max or 1024),
        dialect=dialect or _env("EVALUATOR_DIALECT") or "auto",
        explain=explain,
    )


def cache_dir() -> Path:
    d = _env("EVALUATOR_CACHE_DIR")
    if d:
        return Path(d)
    return Path(_env("XDG_CACHE_HOME") or Path.home() / ".cache") / "evaluator"
