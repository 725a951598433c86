"""Tasks for the HTTP API tests: `steps` reports progress and log events one step at a time,
each step gated by a Redis counter the test raises, so a test controls it without sleeps."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict, Field

from herder.demo import tasks as demo_tasks
from herder.processors import register
from herder.processors.claude_code import claude_code
from herder.tasks import JobContext, TaskSet

tasks = TaskSet(demo_tasks)
register(tasks, claude_code)


class Steps(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = Field(ge=1, le=50)
    gated: bool = False


class StepsResult(BaseModel):
    done: int


@tasks.task(payload=Steps, result=StepsResult, max_attempts=1)
async def steps(ctx: JobContext, p: Steps) -> dict[str, int]:
    redis = ctx.state["redis"]
    for i in range(1, p.steps + 1):
        while p.gated and int(await redis.get(f"test:gate:{ctx.job_id}") or 0) < i:  # noqa: ASYNC110
            await asyncio.sleep(0.02)  # a gate the test raises in Redis: polled
        await ctx.log([{"type": "step", "n": i}])
        await ctx.progress({"step": i})
    return {"done": p.steps}
