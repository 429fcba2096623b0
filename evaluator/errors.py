"""Specific errors whose messages say what is wrong, where, and how to fix it.

Library code raises these; only cli.py turns them into messages and exit codes. `DataValidationError` is named
apart from pydantic's ValidationError, which the boundaries also raise.
"""

from __future__ import annotations


class EvaluatorError(Exception):
    """Base class. `exit_code` is what the CLI returns for it."""

    exit_code = 1


class DataNotFoundError(EvaluatorError):
    """The bank, rubric and prompt folders are not where they were looked for."""

    # Not 2: argparse exits 2 on a usage error, and a script must be able to tell the two apart.
    exit_code = 9


class DataValidationError(EvaluatorError):
    """A bank, rubric, CSV or grade file is malformed. Messages carry file, row/question and field."""

    exit_code = 3

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = problems or []
        if self.problems:
            message = message + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


class UnknownQuestionError(EvaluatorError):
    exit_code = 4


class InputError(EvaluatorError):
    """A candidate answer or CLI input that cannot be used as given."""

    exit_code = 5


class JudgeConfigError(EvaluatorError):
    exit_code = 6


class ModelInstallError(EvaluatorError):
    exit_code = 7


class CalibrationError(EvaluatorError):
    exit_code = 8


class PromptTemplateError(DataValidationError):
    """A rubric names a prompt template that does not exist."""
