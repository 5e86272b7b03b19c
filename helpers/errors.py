"""Errors about data: a file, a row or a column that cannot be used (shared by :mod:`helpers.data` and
:mod:`helpers.hub_data`)."""

from __future__ import annotations


class DataError(ValueError):
    """Bad or missing data; the message says which file, line or column, and what to do."""


class RowError(DataError):
    """One row that breaks a rule of its schema: the message is the ``rule``, ``fix`` says what to do."""

    def __init__(self, rule: str, fix: str = "fix or drop the row") -> None:
        super().__init__(rule)
        self.rule, self.fix = rule, fix
