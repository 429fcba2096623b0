"""evaluator: grade written screening answers like a careful senior interviewer.

The public API is imported lazily, so `evaluator --version` or `import evaluator.csvio` does not load numpy, the
judge, the embedder or (for `calibrate`) scipy, sklearn and matplotlib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .batch import GradeSummary, grade_csv
    from .calibrate_report import CalibrationResult, calibrate
    from .scaleout import ImportSummary, import_responses
    from .scoring import build_evaluator, score_answer

_PUBLIC = {
    "build_evaluator": "scoring",
    "score_answer": "scoring",
    "grade_csv": "batch",
    "GradeSummary": "batch",
    "import_responses": "scaleout",
    "ImportSummary": "scaleout",
    "calibrate": "calibrate_report",
    "CalibrationResult": "calibrate_report",
}

__all__ = [
    "CalibrationResult",
    "GradeSummary",
    "ImportSummary",
    "__version__",
    "build_evaluator",
    "calibrate",
    "grade_csv",
    "import_responses",
    "score_answer",
]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module 'evaluator' has no attribute {name!r}")
