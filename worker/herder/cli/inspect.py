"""`herder job`, `herder status`, `herder queues`: read-only views."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer

from herder.cli.app import app
from herder.cli.common import AsJson, QueueOpt, RedisUrl, run
from herder.cli.render import job_dict, print_job, print_job_update, print_status
from herder.client import HerderClient
from herder.models import FINAL_STATES, Job


@app.command()
def job(
    job_id: str,
    as_json: AsJson = False,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Follow progress until it finishes")] = False,
    queue: QueueOpt = None,
    redis_url: RedisUrl = None,
) -> None:
    """Show one job."""
    if not follow:
        j = run(redis_url, lambda c: c.get_job(job_id, queue))
        if as_json:
            typer.echo(json.dumps(job_dict(j)))
        else:
            print_job(j)
        return

    async def follow_job(c: HerderClient) -> Job:
        last: Any = None
        while True:
            j = await c.get_job(job_id, queue)
            snapshot = (j.state, j.attempts, j.progress)
            if snapshot != last:
                print_job_update(j, as_json)
                last = snapshot
            if j.state in FINAL_STATES:
                return j
            await asyncio.sleep(0.5)

    final = run(redis_url, follow_job)
    if as_json:
        typer.echo(json.dumps(job_dict(final)))
    else:
        print_job(final)


@app.command()
def status(queue: str, as_json: AsJson = False, redis_url: RedisUrl = None) -> None:
    """Queue depth by state, and the live workers."""
    st = run(redis_url, lambda c: c.status(queue))
    if as_json:
        typer.echo(st.model_dump_json())
    else:
        print_status(st)


@app.command()
def queues(redis_url: RedisUrl = None) -> None:
    """List known queues."""
    for q in run(redis_url, lambda c: c.queues()):
        typer.echo(q)
