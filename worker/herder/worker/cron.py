"""Cron on workers: which ticks to enqueue in a window (pure). Every worker enqueues the same
deterministic ids, so a tick runs once however many workers see it."""

from __future__ import annotations

from herder.cron import due_ticks, tick_job_id
from herder.request import JobRequest
from herder.tasks import TaskSet


def cron_requests(tasks: TaskSet, since: float, until: float) -> list[JobRequest]:
    """The jobs for every cron tick t with since < t <= until, scheduled at the tick."""
    reqs = []
    for t in tasks:
        if not t.cron:
            continue
        for tick in due_ticks(t.cron, since, until):
            reqs.append(
                JobRequest(task=t.name, payload=t.cron_payload, id=tick_job_id(t.name, tick), at=tick)
            )
    return reqs
