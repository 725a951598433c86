"""Pure translation between arq's job model and Herder's: queue names, the JSON envelope
that carries an arq call (args, kwargs, enqueue time, score), and failures read back as
exceptions. No I/O here."""

from __future__ import annotations

import asyncio
import builtins
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from arq.jobs import SerializationError
from arq.worker import JobExecutionFailed, Retry

from herder.errors import InvalidInput
from herder.keys import QUEUE_RE

ENVELOPE_KEYS = frozenset({"args", "kwargs", "arq"})
META_INT_KEYS = ("enqueue_ms", "score", "job_try", "expires_at_ms")
_BAD_QUEUE_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_RETRY_TEXT = re.compile(r"^<Retry (?:defer ([0-9.]+)s|at [^>]*)>$")


class JobSerializationError(SerializationError, InvalidInput):
    """An argument that is not JSON: refused before anything is written to Redis."""


class JobFailed(JobExecutionFailed):
    """A failure whose exception type cannot be rebuilt here (not a built-in one)."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message


def herder_queue(arq_queue: str) -> str:
    """arq queue names are Redis keys (default 'arq:queue'); Herder's are restricted to
    letters, digits, '.', '_' and '-', so other characters become '.'."""
    name = _BAD_QUEUE_CHARS.sub(".", arq_queue)
    if not QUEUE_RE.match(name):
        raise InvalidInput(
            f"queue name {arq_queue!r} cannot be mapped to a Herder queue (max 128 characters)"
        )
    return name


def arq_queue_of(queue: str) -> str:
    """The arq name of a Herder queue, for display: the default queue maps back to 'arq:queue'."""
    return "arq:queue" if queue == "arq.queue" else queue


def to_ms(value: int | float | timedelta | None) -> int | None:
    """arq's durations: seconds as a number, or a timedelta."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        return int(value.total_seconds() * 1000)
    return int(value * 1000)


def datetime_ms(value: datetime) -> int:
    if value.tzinfo is None:  # arq reads a naive datetime as local time
        value = value.astimezone()
    return int(value.timestamp() * 1000)


def ms_datetime(ms: float) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def encode_call(
    function: str, args: tuple[Any, ...], kwargs: dict[str, Any], meta: dict[str, Any]
) -> dict[str, Any]:
    """The job payload: JSON only, refused with a clear error otherwise."""
    envelope = {"args": list(args), "kwargs": kwargs, "arq": meta}
    try:
        json.dumps(envelope, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise JobSerializationError(
            f'unable to serialize job "{function}": herder.arq stores arguments as JSON ({exc})'
        ) from None
    return envelope


def decode_call(payload: Any) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """args, kwargs and arq metadata of a job. A payload that is not an envelope (a job
    enqueued through Herder's own client) is a dict of keyword arguments."""
    if isinstance(payload, dict) and set(payload) <= ENVELOPE_KEYS and "args" in payload:
        args = payload.get("args") or []
        kwargs = payload.get("kwargs") or {}
        meta = payload.get("arq") or {}
        if not isinstance(args, list) or not isinstance(kwargs, dict) or not isinstance(meta, dict):
            raise InvalidInput("malformed arq job payload: args must be a list, kwargs an object")
        for key in META_INT_KEYS:
            value = meta.get(key)
            # bool is an int in Python, and JSON numbers may be floats: both are corruption here.
            if value is not None and (type(value) is not int or value < 0):
                raise InvalidInput(f"malformed arq job payload: arq.{key} must be a non-negative integer")
        if any(not isinstance(k, str) for k in kwargs):
            raise InvalidInput("malformed arq job payload: keyword argument names must be strings")
        return args, kwargs, meta
    if payload is None:
        return [], {}, {}
    if isinstance(payload, dict):
        return [], payload, {}
    raise InvalidInput("job payload is neither an arq call nor an object of keyword arguments")


def rebuild_exception(type_name: str, message: str) -> BaseException:
    """The exception a failed job raised, as far as JSON lets us: built-in exception types
    come back as themselves, arq's JobExecutionFailed too, anything else as JobFailed."""
    if type_name == "CancelledError":
        return asyncio.CancelledError(message)
    if type_name == "SerializationError":
        return SerializationError(message)
    if type_name == "JobExecutionFailed":
        return JobExecutionFailed(message)
    if type_name == "Retry":  # a Retry raised with retry_jobs=False; str() is "<Retry defer 1.00s>"
        m = _RETRY_TEXT.match(message)
        return Retry(defer=float(m.group(1)) if m and m.group(1) else None)
    cls = getattr(builtins, type_name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except Exception:  # an exception class with a different constructor
            pass
    return JobFailed(type_name, message)
