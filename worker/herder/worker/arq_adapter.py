"""The bridge to arq: what Herder registers as arq functions, so arq's registry lists Herder's
tasks and a plain arq Worker can run them too (payload as keyword arguments). Herder's own path
calls `task.fn` directly."""

from __future__ import annotations

from typing import Any

from arq.worker import Function, func

from herder.settings import HerderSettings
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
            max_attempts=task.attempts_limit,
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


def ctx_client(settings: HerderSettings, redis: Any, queue: str, tasks: TaskSet) -> Any:
    """ctx['redis'] for tasks written for arq: an ArqRedis on the worker's connection pool whose
    enqueue_job writes Herder jobs onto this queue (arq's own client writes to `arq:queue`,
    where no Herder worker looks). This worker's tasks take keyword arguments as payload."""
    from herder.arq.connections import ArqRedis, ClusterArqRedis, OpenTaskSet
    from herder.client import HerderClient
    from herder.connection import is_cluster

    if is_cluster(redis):  # no connection pool to share: a cluster client has one per node
        return ClusterArqRedis(redis, HerderClient(settings, OpenTaskSet(tasks), redis=redis), queue, tasks)
    return ArqRedis(
        connection_pool=redis.connection_pool,
        default_queue_name=queue,
        herder_settings=settings,
        native_tasks=tasks,
        herder_client=HerderClient(settings, OpenTaskSet(tasks), redis=redis),
    )


async def failed_results(client: Any, queue: str, since: float) -> list[Any]:
    """arq JobResults of the jobs of `queue` that died since `since` (for run_check)."""
    from arq.jobs import JobResult

    from herder.arq.jobs import job_def

    dead = await client.dlq_list(queue, limit=1000)
    return [
        r for j in dead if (j.finished_at or 0) >= since and isinstance(r := job_def(j, queue), JobResult)
    ]
