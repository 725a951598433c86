"""What a running task reports besides its outcome: progress summaries (fenced by the lease
token) and its event log. Both are advisory: a failed write is logged, never fails the job."""

from __future__ import annotations

import json
from typing import Any

from redis.exceptions import RedisError

from herder.jobevents import next_number
from herder.keys import QueueKeys
from herder.logs import get_logger
from herder.scripts import Scripts

log = get_logger("herder.worker")

LOG_EVENTS_KEPT = 2000


class Reporter:
    def __init__(self, redis: Any, scripts: Scripts, keyspace: QueueKeys, worker_id: str) -> None:
        self.redis = redis
        self.scripts = scripts
        self.keyspace = keyspace
        self.worker_id = worker_id

    async def progress(self, job_id: str, token: str, data: dict[str, Any]) -> None:
        try:
            await self.scripts.progress(
                keys=[self.keyspace.job(job_id)],
                args=[self.keyspace.base, job_id, token, self.worker_id, json.dumps(data, default=str)],
            )
        except RedisError as exc:
            log.warning("progress not stored", job=job_id, error=str(exc))

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
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.rpush(key, *[json.dumps({**e, "_n": n + i}, default=str) for i, e in enumerate(events)])
                pipe.ltrim(key, -LOG_EVENTS_KEPT, -1)
                await pipe.execute()
        except RedisError as exc:
            log.warning("event log not stored", job=job_id, error=str(exc))
