"""A job's events as server-sent events, resumable with Last-Event-ID.

The reader polls the job hash and its event log (one pipelined round trip per poll). Each
event's id is a cursor saying what the client has seen (log entries, state, attempts and a
digest of the progress), so a reconnect with Last-Event-ID resumes without repeats or gaps,
and without any per-client state on the server.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from herder.keys import QueueKeys
from herder.models import FINAL_STATES, Job, JobState

LOG_BATCH = 500  # log entries read per poll
HEARTBEAT_S = 15.0  # a comment line keeps proxies from closing an idle stream


@dataclass(frozen=True)
class Cursor:
    log: int = 0  # log entries already sent
    state: str = ""
    attempts: int = -1
    progress: str = ""  # digest of the progress last sent

    def encode(self) -> str:
        return f"{self.log}.{self.state}.{self.attempts}.{self.progress}"

    @classmethod
    def decode(cls, text: str | None) -> Cursor:
        """Parse a Last-Event-ID; anything malformed starts from the beginning (never fails)."""
        if not text or len(text) > 200:
            return cls()
        parts = text.split(".")
        if len(parts) != 4:
            return cls()
        log, state, attempts, progress = parts
        if not log.isdigit() or not attempts.lstrip("-").isdigit() or state not in {*JobState, ""}:
            return cls()
        return cls(int(log), state, int(attempts), progress[:16])


@dataclass(frozen=True)
class Event:
    event: str  # state | progress | log | result | error
    data: Any
    id: str

    def encode(self) -> str:
        body = json.dumps(self.data, separators=(",", ":"), default=str)
        return f"id: {self.id}\nevent: {self.event}\ndata: {body}\n\n"


def _digest(raw: str | None) -> str:
    return hashlib.sha256((raw or "").encode()).hexdigest()[:16] if raw else ""


def step(cur: Cursor, raw: dict[str, str], log: list[str]) -> tuple[Cursor, list[Event], bool]:
    """Pure: the events one poll yields after `cur`, the new cursor, and whether it is over."""
    out: list[Event] = []
    for line in log:
        cur = replace(cur, log=cur.log + 1)
        try:
            data = json.loads(line)
        except ValueError:  # a corrupt entry is skipped, not fatal to the stream
            continue
        out.append(Event("log", data, cur.encode()))
    progress = raw.get("progress") or None
    digest = _digest(progress)
    if digest and digest != cur.progress:
        cur = replace(cur, progress=digest)
        try:
            out.append(Event("progress", json.loads(progress or "null"), cur.encode()))
        except ValueError:
            pass
    state, attempts = raw.get("state", ""), int(raw.get("attempts") or 0)
    if (state, attempts) != (cur.state, cur.attempts):
        cur = replace(cur, state=state, attempts=attempts)
        out.append(Event("state", {"state": state, "attempts": attempts}, cur.encode()))
    done = state in FINAL_STATES
    if done:
        out.append(Event("result", Job.from_hash(raw).model_dump(mode="json"), cur.encode()))
    return cur, out, done


async def job_events(
    redis: Any, keys: QueueKeys, job_id: str, cursor: Cursor, poll: float = 0.25
) -> AsyncIterator[str]:
    """SSE text for one job until it reaches a final state (or disappears)."""
    job_key, log_key = keys.job(job_id), keys.log(job_id)
    last_sent = time.monotonic()
    yield "retry: 1000\n\n"
    while True:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(job_key)
            pipe.lrange(log_key, cursor.log, cursor.log + LOG_BATCH - 1)
            raw, log = await pipe.execute()
        if not raw:
            yield Event("error", {"detail": f"job {job_id!r} no longer exists"}, cursor.encode()).encode()
            return
        cursor, events, done = step(cursor, raw, log)
        # A final state with log entries still unread: send those first, then the result.
        if done and len(log) == LOG_BATCH:
            events = [e for e in events if e.event != "result"]
            done = False
        for e in events:
            yield e.encode()
        if events:
            last_sent = time.monotonic()
        if done:
            return
        if len(log) == LOG_BATCH:
            continue
        if time.monotonic() - last_sent > HEARTBEAT_S:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(poll)
