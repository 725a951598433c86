"""How an attempt ended, as pure functions: the exception (or result) of a task, and why it was
stopped, in; the outcome the finish script stores (ok, retry, dead, cancelled, handback), out."""

from __future__ import annotations

import json
import traceback
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from herder.backoff import Backoff, retry_delay
from herder.errors import InvalidInput, PermanentError, RetryableError
from herder.limits import cap_text, encode_capped

MAX_ERROR_MESSAGE = 4096  # defaults of HerderSettings.max_error_chars / max_traceback_chars
MAX_TRACEBACK = 16_384
TRACEBACK_TAIL_LINES = 20


@dataclass(frozen=True)
class Attempt:
    """What classification needs to know about the attempt that just ended."""

    attempt: int
    worker_id: str
    started: float
    timeout: float | None
    backoff_json: str
    max_message: int = MAX_ERROR_MESSAGE  # caps on what the error record stores (settings)
    max_traceback: int = MAX_TRACEBACK


@dataclass(frozen=True)
class Outcome:
    outcome: str  # ok | retry | dead | cancelled | handback (the finish script's vocabulary)
    data: str  # the result JSON for ok, else the error record JSON
    delay_ms: int = 0
    reason: str = ""


def encode_result(result: Any, limit: int = 1 << 20) -> str:
    """The stored result (a truncation marker past `limit` bytes); one we cannot store at all
    (not JSON, NaN included) is the task's bug, so it is not retried."""
    try:
        return encode_capped(result, limit)
    except Exception as exc:
        raise PermanentError(f"result is not JSON-serialisable: {exc}") from None


def error_record(a: Attempt, kind: str, etype: str, message: str, tb: str, now: float) -> str:
    return json.dumps(
        {
            "attempt": a.attempt,
            "kind": kind,
            "type": etype,
            "message": cap_text(message, a.max_message),
            "traceback": cap_text(tb, a.max_traceback),
            "worker": a.worker_id,
            "started_at": a.started,
            "ended_at": now,
        }
    )


def retry_delay_ms(backoff_json: str, attempt: int, hint: float | None, u: float) -> int:
    """The task's own hint (RetryableError.delay) wins; else the job's backoff policy."""
    if hint is not None:
        return int(max(0.0, hint) * 1000)
    policy = Backoff.model_validate_json(backoff_json) if backoff_json else Backoff()
    return int(retry_delay(policy, attempt, u) * 1000)


def traceback_tail(exc: BaseException) -> str:
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return "".join(lines)[-4000:].split("\n", 1)[-1] if len(lines) > TRACEBACK_TAIL_LINES else "".join(lines)


def stopped(a: Attempt, stop_reason: str | None, now: float) -> Outcome:
    """The task was cancelled by us: on request (cancelled) or because this worker stops (handback)."""
    if stop_reason == "cancelled":
        msg = "cancelled on request"
        return Outcome("cancelled", error_record(a, "cancelled", "Cancelled", msg, "", now), 0, msg)
    msg = f"worker {a.worker_id} stopped mid-task"
    return Outcome("handback", error_record(a, "handed_back", "Cancelled", msg, "", now), 0, msg)


def self_cancelled(exc: BaseException) -> RetryableError:
    """What a job that raised CancelledError without being cancelled is recorded as."""
    err = RetryableError("the task raised CancelledError without being cancelled")
    err.__cause__ = exc
    return err


def failed(a: Attempt, exc: Exception, now: float, u: float, cause: BaseException | None = None) -> Outcome:
    """One rule per kind of failure: timeouts and ordinary errors retry (with backoff), bad
    input and PermanentError go to the DLQ. `u` is the jitter draw in [-1, 1]. `cause`, when
    `exc` wraps another exception (herder.arq turns a failed arq function into PermanentError),
    is what the error record shows."""
    if isinstance(exc, TimeoutError):
        reason = f"timed out after {a.timeout} s"
        data = _record(a, "timeout", exc, cause, "TimeoutError", reason, "", now)
        return Outcome("retry", data, retry_delay_ms(a.backoff_json, a.attempt, None, u), reason)
    if isinstance(exc, InvalidInput | ValidationError):
        data = _record(a, "permanent", exc, cause, type(exc).__name__, str(exc), "", now)
        return Outcome("dead", data, 0, cap_text(f"cannot run: {exc}", a.max_message))
    if isinstance(exc, PermanentError):
        data = _record(a, "permanent", exc, cause, type(exc).__name__, str(exc), traceback_tail(exc), now)
        return Outcome("dead", data, 0, cap_text(str(exc) or type(exc).__name__, a.max_message))
    reason = cap_text(f"{type(exc).__name__}: {exc}", a.max_message)
    data = _record(a, "error", exc, cause, type(exc).__name__, str(exc), traceback_tail(exc), now)
    hint = exc.delay if isinstance(exc, RetryableError) else None
    return Outcome("retry", data, retry_delay_ms(a.backoff_json, a.attempt, hint, u), reason)


def _record(
    a: Attempt,
    kind: str,
    exc: BaseException,
    cause: BaseException | None,
    etype: str,
    message: str,
    tb: str,
    now: float,
) -> str:
    if cause is not None:  # record the wrapped exception, not our wrapper
        etype, message = type(cause).__name__, str(cause)
        tb = traceback_tail(cause) if cause.__traceback__ is not None else ""
        if isinstance(cause, TimeoutError):
            kind = "timeout"
    return error_record(a, kind, etype, message, tb, now)
