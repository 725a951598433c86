"""What every command shares: the common options, settings, exit codes, and running one client
operation with errors mapped to exit codes (0 ok, 2 bad usage or invalid input — nothing was
written —, 1 anything else)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Annotated, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from redis.exceptions import RedisError

from herder.client import HerderClient
from herder.errors import Conflict, HerderError, InvalidInput, NotFound
from herder.settings import PASSWORD_IN_URL_WARNING, HerderSettings, url_has_password
from herder.tasks import TaskSet, load_taskset

T = TypeVar("T")

RedisUrl = Annotated[
    str | None, typer.Option("--redis-url", envvar="HERDER_REDIS_URL", help="Redis URL (default: settings)")
]
AppOpt = Annotated[
    str | None, typer.Option("--app", envvar="HERDER_APP", help="Task module (module or module:attr)")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON")]
QueueOpt = Annotated[str | None, typer.Option("--queue", "-q", help="Queue of the job (default: look it up)")]


def fail(code: int, message: str) -> NoReturn:
    # One line, whatever the message quotes (a name with a newline, a multi-line Redis error).
    one_line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
    typer.echo(f"herder: {one_line[:2000]}", err=True)
    raise typer.Exit(code)


def settings_for(redis_url: str | None) -> HerderSettings:
    if redis_url and url_has_password(redis_url) and os.environ.get("HERDER_REDIS_URL") != redis_url:
        typer.echo(f"herder: warning: {PASSWORD_IN_URL_WARNING}", err=True)
    try:
        return HerderSettings(redis_url=redis_url) if redis_url else HerderSettings()
    except ValidationError as exc:  # the messages only: pydantic's text would echo the URL
        fail(
            2,
            "invalid settings: "
            + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()),
        )
    except ValueError as exc:
        fail(2, f"invalid settings: {exc}")


def run(
    redis_url: str | None, body: Callable[[HerderClient], Awaitable[T]], app_spec: str | None = None
) -> T:
    """Run one client operation, mapping errors to the CLI's exit codes."""
    settings = settings_for(redis_url)
    try:
        tasks: TaskSet = load_taskset(app_spec)
    except InvalidInput as exc:
        fail(2, str(exc))

    async def main() -> T:
        async with HerderClient(settings, tasks) as client:
            return await body(client)

    try:
        return asyncio.run(main())
    except InvalidInput as exc:
        fail(2, str(exc))
    except (NotFound, Conflict, HerderError) as exc:
        fail(1, str(exc))
    except RedisError as exc:
        fail(1, f"Redis error: {exc}")
    except OSError as exc:
        fail(1, f"cannot reach Redis: {exc}")
