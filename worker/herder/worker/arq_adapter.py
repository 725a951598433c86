"""The bridge to arq: what Herder registers as arq functions, so arq's registry lists Herder's
tasks and a plain arq Worker can run them too (payload as keyword arguments). Herder's own path
calls `task.fn` directly."""

from __future__ import annotations

from typing import Any

from arq.worker import Function, func

from herder.tasks import JobContext, Task, TaskSet


def arq_entry(task: Task | None) -> Any:
    async def entry(ctx: dict[str, Any], **payload: Any) -> Any:
        if task is None:
            return None

        async def discard(_: Any) -> None:
            return None

        jctx = JobContext(
            job_id=str(ctx.get("job_id", "")),
            queue="arq",
            task=task.name,
            attempt=int(ctx.get("job_try", 1)),
            max_attempts=task.max_attempts,
            worker_id="arq",
            state=ctx,
            _progress=discard,
            _log=discard,
        )
        return await task.fn(jctx, task.parse_payload(payload))

    return entry


def arq_functions(tasks: TaskSet) -> list[Function]:
    """arq refuses a worker with no functions: an empty task set registers a no-op."""
    return [func(arq_entry(t), name=t.name) for t in tasks] or [func(arq_entry(None), name="noop")]
