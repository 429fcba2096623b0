"""evaluator: grade written screening answers like a careful senior interviewer."""

__version__ = "0.1.0"

from .scoring import build_evaluator, score_answer  # noqa: E402

__all__ = ["__version__", "build_evaluator", "calibrate", "score_answer"]


def __getattr__(name: str) -> object:
    # calibrate brings scipy, sklearn and matplotlib (seconds): loaded on first use, not by every command.
    if name == "calibrate":
        from .calibrate_report import calibrate

        return calibrate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
