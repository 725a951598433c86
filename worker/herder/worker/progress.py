"""What a running task reports besides its outcome: progress summaries (fenced by the lease
token) and its event log. Both are advisory: a failed write is logged, never fails the job."""

from __future__ import annotations

from typing import Any

from redis.exceptions import RedisError

from herder.jobevents import next_number
from herder.keys import QueueKeys
from herder.limits import TRUNCATED_KEY, encode_lenient
from herder.logs import get_logger
from herder.scripts import Scripts

log = get_logger("herder.worker")

LOG_EVENTS_KEPT = 2000


class Reporter:
    def __init__(
        self,
        redis: Any,
        scripts: Scripts,
        keyspace: QueueKeys,
        worker_id: str,
        *,
        max_progress_bytes: int = 64 << 10,
        max_event_bytes: int = 8192,
        max_events: int = LOG_EVENTS_KEPT,
    ) -> None:
        self.redis = redis
        self.scripts = scripts
        self.keyspace = keyspace
        self.worker_id = worker_id
        # Caps (HerderSettings.max_*): past them a value is stored as a truncation marker.
        self.max_progress_bytes = max_progress_bytes
        self.max_event_bytes = max_event_bytes
        self.max_events = max_events

    async def progress(self, job_id: str, token: str, data: dict[str, Any]) -> None:
        try:
            await self.scripts.progress(
                self.keyspace, job_id, token, self.worker_id, encode_lenient(data, self.max_progress_bytes)
            )
        except RedisError as exc:
            log.warning("progress not stored", job=job_id, error=str(exc))

    def _event(self, event: dict[str, Any], number: int) -> str:
        """One log entry, capped; a truncation marker keeps the entry's number."""
        encoded = encode_lenient({**event, "_n": number}, self.max_event_bytes)
        if encoded.startswith('{"' + TRUNCATED_KEY):
            encoded = encoded[:-1] + f',"_n":{number}}}'
        return encoded

    async def log(self, job_id: str, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        key = self.keyspace.log(job_id)
        try:
            # Number each event (`_n`, counted across attempts) so readers keep absolute
            # positions when the log is trimmed from the left (herder.jobevents). Only the lease
            # holder writes a job's log, so reading the tail first is enough.
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.lindex(key, -1)
                pipe.llen(key)
                tail, length = await pipe.execute()
            n = next_number(tail, int(length))
            # Not a transaction (redis-py's cluster client has none, and it is not needed):
            # a crash between the two leaves the log one batch over its cap until the next
            # write trims it, and readers already check the head for trims (jobevents).
            async with self.redis.pipeline(transaction=False) as pipe:
                # Only the newest max_events can survive the trim: don't ship the rest.
                skip = max(0, len(events) - self.max_events)
                encoded = [self._event(e, n + skip + i) for i, e in enumerate(events[skip:])]
                pipe.rpush(key, *encoded)
                pipe.ltrim(key, -self.max_events, -1)
                await pipe.execute()
        except RedisError as exc:
            log.warning("event log not stored", job=job_id, error=str(exc))
