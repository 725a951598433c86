"""`herder pause|resume|retry|remove|cancel|drain`: change queues, jobs and workers."""

from __future__ import annotations

from typing import Annotated

import typer

from herder.cli.app import app
from herder.cli.common import AppOpt, QueueOpt, RedisUrl, run
from herder.client import HerderClient


@app.command()
def pause(queue: str, redis_url: RedisUrl = None) -> None:
    """Stop claiming new jobs from QUEUE (running jobs finish)."""
    run(redis_url, lambda c: c.pause(queue))
    typer.echo(f"paused {queue}")


@app.command()
def resume(queue: str, redis_url: RedisUrl = None) -> None:
    """Resume a paused queue."""
    run(redis_url, lambda c: c.resume(queue))
    typer.echo(f"resumed {queue}")


@app.command()
def retry(job_id: str, queue: QueueOpt = None, redis_url: RedisUrl = None, app_spec: AppOpt = None) -> None:
    """Retry a dead (or cancelled) job."""
    state = run(redis_url, lambda c: c.retry(job_id, queue), app_spec)
    typer.echo(f"{job_id} {state}")


@app.command()
def remove(job_id: str, queue: QueueOpt = None, redis_url: RedisUrl = None) -> None:
    """Remove a job that is not running."""
    run(redis_url, lambda c: c.remove(job_id, queue))
    typer.echo(f"removed {job_id}")


@app.command()
def cancel(job_id: str, queue: QueueOpt = None, redis_url: RedisUrl = None) -> None:
    """Cancel a pending job, or ask the worker to stop a running one."""
    state = run(redis_url, lambda c: c.cancel(job_id, queue))
    typer.echo(f"{job_id} {state}")


@app.command()
def drain(
    worker_id: str,
    queue: QueueOpt = None,
    no_exit: Annotated[bool, typer.Option("--no-exit", help="Stay up (idle) once drained")] = False,
    undo: Annotated[bool, typer.Option("--undo", help="Cancel a drain")] = False,
    redis_url: RedisUrl = None,
) -> None:
    """Tell a worker to stop claiming, finish its jobs, and exit."""

    async def body(c: HerderClient) -> None:
        q = queue or await c.find_worker_queue(worker_id)
        if undo:
            await c.undrain_worker(q, worker_id)
        else:
            await c.drain_worker(q, worker_id, exit=not no_exit)

    run(redis_url, body)
    typer.echo(f"{'undrained' if undo else 'draining'} {worker_id}")
