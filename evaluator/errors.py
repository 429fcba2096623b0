"""Specific errors whose messages say what is wrong, where, and how to fix it.

Library code raises these; only cli.py turns them into messages and exit codes.
"""

from __future__ import annotations


class EvaluatorError(Exception):
    """Base class. `exit_code` is what the CLI returns for it."""

    exit_code = 1


class DataNotFoundError(EvaluatorError):
    exit_code = 2


class ValidationError(EvaluatorError):
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


class PromptTemplateError(ValidationError):
    """A rubric names a prompt template that does not exist."""
