"""Built-in demo tasks, available to every worker unless --app replaces them."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from herder.backoff import Backoff
from herder.tasks import JobContext, TaskSet

tasks = TaskSet()


@tasks.task()
async def echo(ctx: JobContext, payload: Any) -> Any:
    """Returns its payload."""
    return payload


class SleepPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(default=1.0, ge=0, le=86_400)


@tasks.task(payload=SleepPayload)
async def sleep(ctx: JobContext, payload: SleepPayload) -> dict[str, float]:
    await asyncio.sleep(payload.seconds)
    return {"slept": payload.seconds}


class FailPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str = Field(default="demo failure", max_length=1000)


@tasks.task(payload=FailPayload, backoff=Backoff(base_seconds=0.05, max_seconds=1))
async def fail(ctx: JobContext, payload: FailPayload) -> None:
    """Always raises."""
    raise RuntimeError(payload.message)


class FlakyPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    failures: int = Field(default=1, ge=0, le=100)


@tasks.task(payload=FlakyPayload, max_attempts=5, backoff=Backoff(base_seconds=0.05, max_seconds=1))
async def flaky(ctx: JobContext, payload: FlakyPayload) -> dict[str, int]:
    """Fails the first `failures` attempts, then succeeds."""
    if ctx.attempt <= payload.failures:
        raise RuntimeError(f"flaky failure {ctx.attempt}/{payload.failures}")
    return {"attempts": ctx.attempt}
