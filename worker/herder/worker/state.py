"""The worker's state, shared by the mixins that make up `HerderWorker` (health, shutdown, the
loop): declared once here so each concern's module types-checks on its own."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from arq.worker import Worker

from herder.client import HerderClient
from herder.keys import QueueKeys
from herder.scripts import Scripts
from herder.settings import HerderSettings
from herder.tasks import JobContext, TaskSet


@dataclass
class Running:
    job_id: str
    token: str
    task: asyncio.Task[None]
    ctx: JobContext
    started: float = field(default_factory=time.time)
    stop_reason: str | None = None  # why we cancelled it: cancelled | handback | lost
    finishing: bool = False  # outcome computed and being written: never cancel it now

    def stop(self, reason: str) -> bool:
        """Cancel the task for `reason`, unless it is already stopping or writing its outcome."""
        if self.stop_reason is not None or self.finishing:
            return False
        self.stop_reason = reason
        self.task.cancel()
        return True


class WorkerState(Worker):
    settings: HerderSettings
    keyspace: QueueKeys
    herder_queue: str
    taskset: TaskSet
    worker_id: str
    capacity: int
    capabilities: list[str]
    drain_timeout: float
    lease_ms: int
    keep_result_ms: int
    hb_interval: float
    redis: Any
    scripts: Scripts
    client: HerderClient
    running: dict[str, Running]
    # drain and stop (see shutdown.py)
    draining: bool
    drain_source: str | None  # "signal" or "redis"
    exit_when_drained: bool
    drain_deadline: float | None
    _drain_started: float | None
    _give_up_at: float | None
    stop_now: bool
    stop_event: asyncio.Event
    slot_event: asyncio.Event
    # health (see health.py)
    _healthy_since: float | None
    _outage_since: float | None
    persistence_warning: str | None
    _persistence_checked: bool
    # the loop
    _next_hb: float
    _next_due: float | None
    _next_expiry: float | None
    _burst_idle: bool
    exit_code: int
