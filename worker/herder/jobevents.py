"""A resumable feed of one job's changes, read from Redis: state, attempts, progress and the
job's event log (a Claude Code run's stream events among them).

The cursor is the absolute position in the job's event log, so a server-sent-events stream can
resume with `Last-Event-ID`: on (re)connect the reader first sends a `snapshot` (idempotent:
the whole current state, bounded), then only log events past the cursor. State, progress and
attempt changes are detected by comparing what was last sent, so nothing is replayed twice in
one connection and nothing is missed across reconnects (the snapshot carries the latest).

Used by the dashboard (`/api/jobs/{id}/events`) and meant for the HTTP API's
`/v1/jobs/{id}/events`. One read-only script call per poll (lua/feed.lua), two when new log
entries are due; the poll interval is the caller's.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

from herder.keys import QueueKeys
from herder.models import FINAL_STATES

MAX_EVENT_BYTES = 16_384  # one event's JSON in the feed; larger ones are cut with a note
MAX_BATCH = 200  # log events per poll
SNAPSHOT_FIELDS = (
    "state",
    "attempts",
    "max_attempts",
    "worker",
    "started_at",
    "finished_at",
    "dead_reason",
    "cancel",
    "task",
)


@dataclass(frozen=True)
class JobEvent:
    """One event of the feed. `cursor` is the SSE id: the count of log events delivered so far."""

    kind: str  # snapshot | state | progress | attempt | log | end | gone
    cursor: int
    data: Any


def parse_cursor(last_event_id: str | None) -> int:
    """The log position a client has seen; anything odd (corrupt, negative, huge) starts over."""
    if not last_event_id:
        return 0
    try:
        n = int(last_event_id.strip())
    except ValueError:
        return 0
    return n if 0 <= n < 2**53 else 0


def bounded_json(raw: str | None, limit: int = MAX_EVENT_BYTES) -> Any:
    """Decode a stored JSON value, replacing it by a marked preview when over `limit` bytes or
    not JSON at all (anything in Redis may be corrupt)."""
    if raw is None or raw == "":
        return None
    if len(raw) > limit:
        return {"_truncated": True, "bytes": len(raw), "preview": raw[: min(limit, 2048)]}
    try:
        return json.loads(raw)
    except ValueError:
        return {"_corrupt": True, "preview": raw[:512]}


def first_index(head: str | None) -> int:
    """Absolute position of the log's first element. The worker numbers every event it appends
    (`_n`, counted across attempts) and trims the log from the left, so the head's `_n` says how
    much was trimmed. An unnumbered head (an older writer) counts as position 0."""
    if not head or '"_n"' not in head:
        return 0
    try:
        n = json.loads(head).get("_n")
    except (ValueError, AttributeError):
        return 0
    return n if isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**53 else 0


def next_number(tail: str | None, length: int) -> int:
    """The `_n` for the next event appended to a log whose last element is `tail` and whose
    length is `length` (an unnumbered or corrupt tail: count the list as untrimmed)."""
    if tail is not None and '"_n"' in tail:
        try:
            n = json.loads(tail).get("_n")
        except (ValueError, AttributeError):
            n = None
        if isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**53:
            return n + 1
    return length


def _feed_source() -> str:
    return (resources.files("herder") / "lua" / "feed.lua").read_text()


@cache
def _feed_sha() -> str:
    return hashlib.sha1(_feed_source().encode()).hexdigest()


@dataclass
class _Seen:
    fields: dict[str, str | None] = field(default_factory=dict)
    progress: str | None = None
    errors_len: int = -1


class JobEventReader:
    """Reads one job's feed. `poll()` returns the events since the last call; `follow()` polls
    until the job is final (and its log drained) or gone."""

    def __init__(self, redis: Any, keys: QueueKeys, job_id: str, cursor: int = 0) -> None:
        self.redis = redis
        self.keys = keys
        self.job_id = job_id
        self.cursor = cursor
        self._seen: _Seen | None = None
        self.done = False

    async def _feed(self, *argv: Any) -> list[Any]:
        keys = (self.keys.job(self.job_id), self.keys.log(self.job_id))
        try:
            return list(await self.redis.evalsha_ro(_feed_sha(), 2, *keys, *argv))
        except NoScriptError:  # first call on this server (or after SCRIPT FLUSH / a failover)
            await self.redis.script_load(_feed_source())
            return list(await self.redis.evalsha_ro(_feed_sha(), 2, *keys, *argv))

    async def _read(self) -> tuple[list[str | None], str | None, int, str | None, int]:
        fields, progress, errors_len, head, llen = await self._feed("snapshot", *SNAPSHOT_FIELDS)
        return list(fields), progress, int(errors_len), head, int(llen)

    async def _read_log(self, first: int, start: int) -> list[str] | None:
        """Log entries from list index `start`, read atomically with the list's head; None when
        a trim moved the list since `first` was read (the next poll reads again)."""
        head, raws = await self._feed("log", start, MAX_BATCH)
        if first_index(head) != first:
            return None
        return list(raws)

    async def poll(self) -> list[JobEvent]:
        if self.done:
            return []
        fields, progress, errors_len, head, llen = await self._read()
        values = dict(zip(SNAPSHOT_FIELDS, fields, strict=True))
        out: list[JobEvent] = []
        if values["state"] is None:
            self.done = True
            return [JobEvent("gone", self.cursor, {"id": self.job_id})]
        first = first_index(head)
        if self.cursor < first:
            # Events the client never saw were trimmed away: say so, then go on from what is kept.
            out.append(
                JobEvent(
                    "log", first, {"type": "herder", "subtype": "log_gap", "missed": first - self.cursor}
                )
            )
            self.cursor = first
        if self._seen is None:
            errors = await self.redis.hget(self.keys.job(self.job_id), "errors")
            self._seen = _Seen(values, progress, errors_len)
            out.append(
                JobEvent(
                    "snapshot",
                    self.cursor,
                    {
                        "id": self.job_id,
                        **values,
                        "progress": bounded_json(progress),
                        "errors": bounded_json(errors, 65_536) or [],
                    },
                )
            )
        else:
            seen = self._seen
            changed = {k: v for k, v in values.items() if seen.fields.get(k) != v}
            if changed:
                seen.fields = values
                out.append(JobEvent("state", self.cursor, changed))
            if errors_len != seen.errors_len:
                seen.errors_len = errors_len
                errors = bounded_json(await self.redis.hget(self.keys.job(self.job_id), "errors"), 65_536)
                out.append(JobEvent("attempt", self.cursor, {"errors": errors or []}))
            if progress != seen.progress:
                seen.progress = progress
                out.append(JobEvent("progress", self.cursor, bounded_json(progress)))
        start = self.cursor - first
        if start < llen:
            for raw in await self._read_log(first, start) or []:
                self.cursor += 1
                out.append(JobEvent("log", self.cursor, bounded_json(raw)))
        more = self.cursor - first < llen
        if values["state"] in FINAL_STATES and not more:
            self.done = True
            out.append(JobEvent("end", self.cursor, {"state": values["state"]}))
        return out

    async def follow(self, interval: float = 0.25) -> AsyncIterator[JobEvent]:
        while not self.done:
            events = await self.poll()
            for e in events:
                yield e
            # A full batch means more is waiting: read on at once instead of sleeping.
            if not self.done and sum(1 for e in events if e.kind == "log") < MAX_BATCH:
                await asyncio.sleep(interval)
