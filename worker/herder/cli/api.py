"""`herder api`, `herder token` and `herder schema`: the HTTP API, its tokens, its contract."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from redis.exceptions import RedisError

from herder.api.tokens import (
    FileTokenStore,
    RedisTokenStore,
    TokenRecord,
    append_token_file,
    new_token,
    parse_verbs,
    read_token_file,
)
from herder.cli.app import app
from herder.cli.common import AppOpt, RedisUrl, fail, settings_for
from herder.connection import redis_client
from herder.errors import InvalidInput
from herder.settings import HerderSettings
from herder.tasks import load_taskset

TokensFile = Annotated[
    Path | None,
    typer.Option(
        "--tokens-file",
        envvar="HERDER_API_TOKENS_FILE",
        help="JSON token file (e.g. a mounted Secret) instead of Redis",
    ),
]

token_app = typer.Typer(no_args_is_help=True, help="API tokens: create, list, revoke.")


app.add_typer(token_app, name="token")


async def _redis_tokens(settings: HerderSettings, fn: Any) -> Any:
    """Run `fn(store)` on the Redis token store, closing the connection after."""
    redis = redis_client(settings)
    try:
        return await fn(RedisTokenStore(redis, settings.key_prefix))
    finally:
        await redis.aclose()


@token_app.command("create")
def token_create(
    queue: Annotated[list[str], typer.Option("--queue", "-q", help="Queue (repeatable; '*' = all)")],
    can: Annotated[str, typer.Option("--can", help="Verbs: submit,read,operate")],
    name: Annotated[str, typer.Option(help="A note saying whose token it is")] = "",
    tokens_file: TokensFile = None,
    redis_url: RedisUrl = None,
) -> None:
    """Create a token; prints it once (only its hash is stored)."""
    try:
        token, record = new_token(queue, parse_verbs(can), name)
        if tokens_file is not None:
            append_token_file(tokens_file, record)
        else:
            settings = settings_for(redis_url)
            asyncio.run(_redis_tokens(settings, lambda s: s.add(record)))
    except InvalidInput as exc:
        fail(2, str(exc))
    except (OSError, RedisError) as exc:
        fail(1, f"cannot store the token: {exc}")
    typer.echo(token)
    typer.echo(f"token {record.id}: {','.join(record.verbs)} on {','.join(record.queues)}", err=True)


@token_app.command("list")
def token_list(tokens_file: TokensFile = None, redis_url: RedisUrl = None) -> None:
    """List tokens (ids, scopes; never secrets) as JSON lines."""
    records: list[TokenRecord]
    try:
        if tokens_file is not None:
            records = read_token_file(tokens_file)
        else:
            records = asyncio.run(_redis_tokens(settings_for(redis_url), lambda s: s.list()))
    except InvalidInput as exc:
        fail(2, str(exc))
    except (OSError, RedisError) as exc:
        fail(1, f"cannot read tokens: {exc}")
    for r in records:
        typer.echo(json.dumps(r.public()))


@token_app.command("revoke")
def token_revoke(token_id: str, redis_url: RedisUrl = None) -> None:
    """Revoke a token stored in Redis (effective at once). For a token file, edit the file."""
    try:
        gone = asyncio.run(_redis_tokens(settings_for(redis_url), lambda s: s.revoke(token_id)))
    except (OSError, RedisError) as exc:
        fail(1, f"cannot reach Redis: {exc}")
    if not gone:
        fail(1, f"no token {token_id!r}")


@app.command("schema")
def schema(
    app_spec: AppOpt = None,
    openapi: Annotated[bool, typer.Option("--openapi", help="Print the whole OpenAPI document")] = False,
) -> None:
    """Print the JSON Schema of every task's payload and result (or the OpenAPI document)."""
    from herder.api.app import create_app
    from herder.api.contract import task_schemas

    try:
        tasks = load_taskset(app_spec)
    except InvalidInput as exc:
        fail(2, str(exc))
    if openapi:
        doc = create_app(HerderSettings(), tasks).openapi()
    else:
        doc = task_schemas(tasks)
    typer.echo(json.dumps(doc, indent=2))


@app.command("api")
def api(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8090,
    tokens_file: TokensFile = None,
    rate: Annotated[float, typer.Option(min=0.001, help="Requests/s per token")] = 50.0,
    burst: Annotated[float, typer.Option(min=1, help="Burst per token")] = 100.0,
    max_body_bytes: Annotated[int, typer.Option(min=1024, help="Request body cap")] = 2 << 20,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option("--allowed-host", help="Host name clients use (repeatable; '*' for any)"),
    ] = None,
    redis_url: RedisUrl = None,
    app_spec: AppOpt = None,
) -> None:
    """Serve the HTTP API (every request needs a token; see `herder token create`)."""
    import uvicorn

    from herder.api.app import ApiLimits, create_app
    from herder.logs import configure
    from herder.web.security import default_allowed_hosts, is_loopback

    configure()
    settings = settings_for(redis_url)
    try:
        tasks = load_taskset(app_spec)
        store = FileTokenStore(tokens_file) if tokens_file is not None else None
        if store is not None:
            records = read_token_file(store.path) if store.path.exists() else []
        else:
            records = asyncio.run(_redis_tokens(settings, lambda s: s.list()))
    except InvalidInput as exc:
        fail(2, str(exc))
    except (OSError, RedisError) as exc:
        fail(1, f"cannot read tokens: {exc}")
    if not records and not is_loopback(host):
        fail(2, f"refusing to listen on {host} with no API tokens: create one with `herder token create`")
    limits = ApiLimits(rate=rate, burst=burst, max_body_bytes=max_body_bytes)
    try:
        uvicorn.run(
            create_app(
                settings,
                tasks,
                store=store,
                limits=limits,
                allowed_hosts=default_allowed_hosts(host, allowed_host or ()),
            ),
            host=host,
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=5,  # SSE streams would otherwise hold a shutdown open
        )
    except (OSError, RedisError) as exc:
        fail(1, f"cannot listen on {host}:{port}: {exc}")
