"""Exceptions that cross module boundaries.

`InvalidInput` means the caller asked for something malformed: nothing was written.
`PermanentError` and `RetryableError` are raised by task code to steer the retry policy.
"""

from __future__ import annotations


class HerderError(Exception):
    """Base class of every error Herder raises on purpose."""


class InvalidInput(HerderError, ValueError):
    """Bad input: rejected before anything was written to Redis (CLI exit code 2)."""


class NotFound(HerderError, LookupError):
    """A job, queue or worker that does not exist."""


class CorruptData(HerderError):
    """Something stored in Redis cannot be decoded (bad UTF-8, bad JSON, wrong type)."""


class Conflict(HerderError):
    """The object exists but is in a state that forbids the operation."""


class IdConflict(Conflict, InvalidInput):
    """Enqueue with an existing job id but another task or payload: nothing was written
    (a Conflict for callers, bad input for the CLI: exit 2)."""


class PermanentError(Exception):
    """Raised by a task: do not retry, dead-letter the job at once with this reason."""


class RetryableError(Exception):
    """Raised by a task: retry (while attempts remain), optionally after a given delay."""

    def __init__(self, message: str = "", *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay
