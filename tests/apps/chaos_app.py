"""Tasks for crash tests: each execution is counted in Redis (outside the queue's keys)."""

from __future__ import annotations

import asyncio
import time

from pydantic import BaseModel

from herder.demo import tasks as demo_tasks
from herder.tasks import JobContext, TaskSet

tasks = TaskSet(demo_tasks)


class Work(BaseModel):
    seconds: float = 0.05
    # When set, the first attempt takes this long instead: a job that is surely still running
    # when a test kills its worker, yet finishes quickly once taken over.
    first_attempt_seconds: float | None = None


@tasks.task(payload=Work, max_attempts=20)
async def work(ctx: JobContext, p: Work) -> dict[str, str]:
    await ctx.state["redis"].incr(f"test:exec:{ctx.job_id}")
    first = ctx.attempt == 1 and p.first_attempt_seconds is not None
    await asyncio.sleep(p.first_attempt_seconds if first and p.first_attempt_seconds else p.seconds)
    return {"worker": ctx.worker_id}


@tasks.task(payload=Work, max_attempts=1)
async def blocker(ctx: JobContext, p: Work) -> None:
    time.sleep(p.seconds)  # noqa: ASYNC251 - deliberately blocks the event loop
