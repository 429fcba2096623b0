"""evaluator: grade written screening answers like a careful senior interviewer."""

__version__ = "0.1.0"

from .scoring import build_evaluator, score_answer  # noqa: E402

__all__ = ["__version__", "build_evaluator", "score_answer"]
