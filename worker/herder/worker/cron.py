"""Cron on workers: which ticks to enqueue in a window (pure), and the workers' shared secret
that keys the tick ids (I/O, once per worker). Every worker enqueues the same ids, so a tick
runs once however many workers see it; without the secret nobody can predict (squat) them."""

from __future__ import annotations

import secrets
from typing import Any

from herder.cron import cron_tick_id, due_ticks
from herder.keys import QueueKeys
from herder.request import JobRequest
from herder.tasks import TaskSet


def cron_requests(tasks: TaskSet, since: float, until: float, secret: str) -> list[JobRequest]:
    """The jobs for every cron tick t with since < t <= until, scheduled at the tick."""
    reqs = []
    for t in tasks:
        if not t.cron:
            continue
        for tick in due_ticks(t.cron, since, until):
            reqs.append(
                JobRequest(
                    task=t.name, payload=t.cron_payload, id=cron_tick_id(t.name, tick, secret), at=tick
                )
            )
    return reqs


async def cron_secret(redis: Any, keys: QueueKeys) -> str:
    """The queue's cron secret: the first worker creates it (SET NX), every worker reads it."""
    await redis.set(keys.cron_secret, secrets.token_hex(32), nx=True)
    value = await redis.get(keys.cron_secret)
    return str(value)
