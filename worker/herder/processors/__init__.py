"""Processors: reusable, self-contained task types.

A processor is an object with three things:

- ``name``: the task name it registers under (e.g. ``"claude_code"``);
- ``Payload``: a pydantic model. Clients validate payloads against it at enqueue time, so a
  worker never receives input the processor would reject (design principle 8);
- ``async run(ctx, payload) -> dict``: does the work. It gets the validated ``Payload``
  instance, reports through ``ctx.progress`` / ``ctx.log``, and steers the retry policy by
  raising ``herder.errors.PermanentError`` (dead-letter now) or ``RetryableError`` (retry
  with backoff). When the worker cancels it (timeout, cancel, drain deadline) it must stop
  everything it started before re-raising ``asyncio.CancelledError``.

``register(taskset, processor, **task_options)`` turns it into a ``herder.tasks.Task``::

    from herder.processors import register
    from herder.processors.claude_code import claude_code

    register(tasks, claude_code, max_attempts=3, timeout=3600)
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel

from herder.tasks import JobContext, Task, TaskSet

__all__ = ["Processor", "register"]

PayloadT = TypeVar("PayloadT", bound=BaseModel)


@runtime_checkable
class Processor(Protocol[PayloadT]):
    """The interface every built-in or third-party task type implements."""

    name: str
    Payload: type[PayloadT]

    async def run(self, ctx: JobContext, payload: PayloadT) -> dict[str, Any]:
        """Do the work; return a JSON-ready result, or raise PermanentError/RetryableError."""
        ...


def register(
    taskset: TaskSet, processor: Processor[Any], *, name: str | None = None, **task_options: Any
) -> Task:
    """Add `processor` to `taskset` as a Task; `task_options` are `Task` fields (max_attempts,
    backoff, timeout, capabilities, ...). Returns the Task."""

    async def run(ctx: JobContext, payload: Any) -> dict[str, Any]:
        return await processor.run(ctx, payload)

    run.__name__ = run.__qualname__ = f"{processor.name}_task"
    # A processor may declare defaults for its Task (e.g. a slower backoff); callers override.
    for key, value in getattr(processor, "task_defaults", {}).items():
        task_options.setdefault(key, value)
    # A processor may declare `Result` (a pydantic model) to publish its result's schema.
    task_options.setdefault("result_model", getattr(processor, "Result", None))
    return taskset.add(
        Task(name=name or processor.name, fn=run, payload_model=processor.Payload, **task_options)
    )
