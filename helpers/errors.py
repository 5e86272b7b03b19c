"""The course's own errors, each with a message that says what to do: about data (a file, a row or a column that
cannot be used; :mod:`helpers.data`, :mod:`helpers.hub_data`), about output paths, and about loading a model."""

from __future__ import annotations


class DataError(ValueError):
    """Bad or missing data; the message says which file, line or column, and what to do."""


class RowError(DataError):
    """One row that breaks a rule of its schema: ``rule`` says what is wrong, ``fix`` what to do; the message
    (``str(err)``) carries both."""

    def __init__(self, rule: str, fix: str = "fix or drop the row") -> None:
        super().__init__(rule)
        self.rule, self.fix = rule, fix

    def __str__(self) -> str:   # a traceback shows the rule and what to do, not the rule alone
        return f"{self.rule.rstrip().rstrip('.')}. What to do: {self.fix.rstrip().rstrip('.')}."


class OutputPathError(ValueError):
    """A path the course was asked to write to that holds something it did not write (a file, a link, a folder of
    the user's): the course refuses to replace it, before any work, and the message says what to do."""


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says what to do."""
