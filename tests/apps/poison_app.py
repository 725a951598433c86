"""Poison jobs: tasks that turn on the worker running them (the hostile-agent suite's worker
side). Each one must still end in the dead-letter queue."""

from __future__ import annotations

import asyncio
import os
import signal

from herder.demo import tasks as demo_tasks
from herder.tasks import JobContext, TaskSet

tasks = TaskSet(demo_tasks)


@tasks.task(max_attempts=2)
async def regicide(ctx: JobContext, p: object) -> None:
    """SIGTERM its own worker twice: a drain, then the stop-now that hands jobs back."""
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.sleep(0.5)  # the attacker lets the first signal land
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.sleep(60)
