"""The package version, in one place: pyproject reads it from here, the code imports it from here."""

__version__ = "0.3.3"
