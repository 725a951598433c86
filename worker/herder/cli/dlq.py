"""`herder dlq list|replay|purge`: the dead-letter queue."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from herder.cli.app import app
from herder.cli.common import AppOpt, AsJson, RedisUrl, fail, run
from herder.cli.render import job_dict, print_dead
from herder.client import HerderClient

dlq_app = typer.Typer(no_args_is_help=True, help="The dead-letter queue: list, replay, purge.")
app.add_typer(dlq_app, name="dlq")


@dlq_app.command("list")
def dlq_list(
    queue: str,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    as_json: AsJson = False,
    redis_url: RedisUrl = None,
) -> None:
    """Dead jobs with their failure history."""
    jobs = run(redis_url, lambda c: c.dlq_list(queue, limit))
    if as_json:
        typer.echo(json.dumps([job_dict(j) for j in jobs]))
        return
    print_dead(jobs)


@dlq_app.command("replay")
def dlq_replay(
    queue: str,
    ids: Annotated[
        list[str] | None, typer.Argument(help="Job ids (default: with --all, every dead job)")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every dead job")] = False,
    redis_url: RedisUrl = None,
    app_spec: AppOpt = None,
) -> None:
    """Move dead jobs back to ready."""
    if not ids and not all_:
        fail(2, "give job ids or --all")

    async def body(c: HerderClient) -> dict[str, str]:
        return await c.replay(queue, ids if ids else await c.dlq_ids(queue))

    results = run(redis_url, body, app_spec)
    bad = 0
    for jid, state in results.items():
        typer.echo(f"{jid} {state}")
        bad += state not in ("ready", "waiting")
    if bad:
        raise typer.Exit(1)


@dlq_app.command("purge")
def dlq_purge(queue: str, redis_url: RedisUrl = None) -> None:
    """Delete every dead job of QUEUE."""
    n = run(redis_url, lambda c: c.dlq_purge(queue))
    typer.echo(f"purged {n}")
