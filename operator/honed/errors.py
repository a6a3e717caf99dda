"""User-facing errors: one clear message naming the problem and the fix, never a traceback."""

from __future__ import annotations


class HonedError(Exception):
    """An error caused by input or environment that the user can fix.

    The CLI prints ``str(error)`` and exits with ``exit_code``; nothing else about the
    failure is shown, so the message must name the field or file and say what to do. ``hint``,
    when given, is the fix, printed on a second line after ``fix:``.
    """

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n  fix: {hint}")


class InputError(HonedError):
    """A model, data file or option that cannot be used as given."""


class EnvironmentProblem(HonedError):
    """Something missing on the machine (a binary, a port, a runtime)."""

    exit_code = 3


class BudgetExhausted(HonedError):
    """The time budget ran out before the search could compare anything.

    The original model was not even measured: more time, not a different input, is the fix.
    """

    exit_code = 4
