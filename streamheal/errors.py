"""The one root of streamheal's errors, and a subclass per area.

Every error carries its facts as attributes so that callers (the command line,
the API, the log) can report them without parsing the message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class StreamhealError(Exception):
    """Base of every error streamheal raises on purpose."""


@dataclass(frozen=True)
class RuleFileProblem:
    """One thing wrong in a rule file: where it is and what was expected."""

    path: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.field}: {self.message}"


class RuleFileError(StreamhealError):
    """The rule file cannot be used; every problem found in one pass is listed."""

    def __init__(self, problems: Sequence[RuleFileProblem]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        lines = [f"{count} {noun} in the rule file:"]
        lines += [f"  {problem}" for problem in self.problems]
        super().__init__("\n".join(lines))


class ConnectionFailedError(StreamhealError):
    """The database could not be reached; the message never holds a password."""

    def __init__(self, address: str, reason: str) -> None:
        self.address = address
        self.reason = reason
        super().__init__(f"Could not connect to MongoDB at {address}: {reason}")


class EmbeddedServerError(StreamhealError):
    """The embedded SecantusDB server could not be started."""


class DashboardError(StreamhealError):
    """The dashboard could not listen on its address (a port in use, say)."""


class FixError(StreamhealError):
    """A fix could not be planned, applied or rolled back."""

    def __init__(self, message: str, *, fix_id: str | None = None) -> None:
        self.fix_id = fix_id
        super().__init__(message)


class FixNotFoundError(FixError):
    """No audit record has the fix id asked for."""


class FixConflictError(FixError):
    """A document changed between planning and applying; nothing was written."""
