"""A job's events as server-sent events, resumable with Last-Event-ID.

Built on `herder.jobevents.JobEventReader` (shared with the dashboard): each frame's id is the
absolute position in the job's event log, so a reconnect with Last-Event-ID gets a fresh
`snapshot` (the current state, idempotent) and then only the log events it has not seen. When
the job is final and its log drained, a `result` frame carries the whole job and the stream ends.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from herder.errors import CorruptData
from herder.jobevents import MAX_BATCH, JobEventReader
from herder.keys import QueueKeys
from herder.models import Job

HEARTBEAT_S = 15.0  # a comment line keeps proxies from closing an idle stream


def frame(event: str, cursor: int, data: Any) -> str:
    body = json.dumps(data, separators=(",", ":"), default=str)
    return f"id: {cursor}\nevent: {event}\ndata: {body}\n\n"


async def job_events(
    redis: Any, keys: QueueKeys, job_id: str, cursor: int, poll: float = 0.25
) -> AsyncIterator[str]:
    """SSE text for one job until it is final (then `result`) or gone (then `gone`)."""
    reader = JobEventReader(redis, keys, job_id, cursor)
    last_sent = time.monotonic()
    yield "retry: 1000\n\n"
    while True:
        events = await reader.poll()
        for e in events:
            if e.kind == "end":
                raw = await redis.hgetall(keys.job(job_id))
                if not raw:
                    yield frame("gone", e.cursor, {"id": job_id})
                    return
                try:
                    job = Job.from_hash(raw).model_dump(mode="json")
                except CorruptData as exc:  # anything in Redis may be corrupt: say so, end cleanly
                    yield frame("error", e.cursor, {"detail": f"stored data is corrupt: {exc}"})
                    return
                yield frame("result", e.cursor, job)
                return
            yield frame(e.kind, e.cursor, e.data)
            if e.kind == "gone":
                return
        now = time.monotonic()
        if events:
            last_sent = now
        elif now - last_sent > HEARTBEAT_S:
            yield ": keep-alive\n\n"
            last_sent = now
        # A full batch of log events means more is waiting: read on at once.
        if sum(1 for e in events if e.kind == "log") < MAX_BATCH:
            await asyncio.sleep(poll)


# The documented shape of each SSE frame (for the OpenAPI document and generated clients).
class SnapshotEvent(BaseModel):
    """First frame of every connection: the job's current state (sent again on reconnect)."""

    event: Literal["snapshot"]
    id: str
    data: dict[str, Any]


class StateEvent(BaseModel):
    """Fields of the job that changed (state, attempts, worker, finished_at, ...)."""

    event: Literal["state"]
    id: str
    data: dict[str, Any]


class AttemptEvent(BaseModel):
    """A failed attempt was recorded: the job's error list."""

    event: Literal["attempt"]
    id: str
    data: dict[str, Any]


class ProgressEvent(BaseModel):
    event: Literal["progress"]
    id: str
    data: dict[str, Any] | None


class LogEvent(BaseModel):
    """One entry of the job's event log (for claude_code: a stream-json event of the CLI)."""

    event: Literal["log"]
    id: str
    data: Any


class ResultEvent(BaseModel):
    """The job in its final state; the stream ends after it."""

    event: Literal["result"]
    id: str
    data: Job


class GoneEvent(BaseModel):
    """The job was removed (or never existed in this queue); the stream ends."""

    event: Literal["gone"]
    id: str
    data: dict[str, Any]


class ErrorData(BaseModel):
    detail: str


class ErrorEvent(BaseModel):
    """The job's stored data could not be read (corrupt); the stream ends."""

    event: Literal["error"]
    id: str
    data: ErrorData


JobEvent = Annotated[
    SnapshotEvent
    | StateEvent
    | AttemptEvent
    | ProgressEvent
    | LogEvent
    | ResultEvent
    | GoneEvent
    | ErrorEvent,
    Field(discriminator="event"),
]
