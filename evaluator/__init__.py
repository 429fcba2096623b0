"""evaluator: grade written screening answers like a careful senior interviewer."""

__version__ = "0.1.0"

from .batch import GradeSummary, grade_csv  # noqa: E402
from .scaleout import ImportSummary, import_responses  # noqa: E402
from .scoring import build_evaluator, score_answer  # noqa: E402

__all__ = [
    "GradeSummary",
    "ImportSummary",
    "__version__",
    "build_evaluator",
    "grade_csv",
    "import_responses",
    "score_answer",
]
