"""`herder enqueue`, `herder enqueue-many`."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Annotated, Any

import typer

from herder.cli.app import app
from herder.cli.common import AppOpt, AsJson, RedisUrl, fail, run
from herder.cli.render import out
from herder.client import JobRequest

MAX_FILE_BYTES = 256 << 20  # a batch is at most MAX_BATCH jobs of at most 1 MiB payload each


def _parse_at(value: str) -> datetime:
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fail(2, f"--at: not an ISO 8601 time: {value!r}")
    if at.tzinfo is None:
        fail(2, "--at needs a timezone, e.g. 2026-01-01T12:00:00Z")
    return at


@app.command()
def enqueue(
    queue: str,
    task: str,
    payload: Annotated[str | None, typer.Option(help="JSON payload")] = None,
    priority: Annotated[int, typer.Option(help="Higher runs first (-1000..1000)")] = 0,
    delay: Annotated[float | None, typer.Option(help="Seconds from now")] = None,
    at: Annotated[str | None, typer.Option(help="ISO 8601 time with timezone")] = None,
    after: Annotated[list[str] | None, typer.Option("--after", help="Parent job id (repeatable)")] = None,
    run_regardless: Annotated[bool, typer.Option(help="Run even if a parent fails")] = False,
    id: Annotated[str | None, typer.Option("--id", help="Job id (idempotency key)")] = None,
    max_attempts: Annotated[int | None, typer.Option(help="Attempts before the DLQ")] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds per attempt")] = None,
    capability: Annotated[
        list[str] | None, typer.Option("--capability", help="Required (repeatable)")
    ] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="key=value (repeatable)")] = None,
    as_json: AsJson = False,
    redis_url: RedisUrl = None,
    app_spec: AppOpt = None,
) -> None:
    """Validate and enqueue a job; prints its id."""
    if delay is not None and at is not None:
        fail(2, "give either --delay or --at, not both")
    try:
        data = json.loads(payload) if payload is not None else None
    except json.JSONDecodeError as exc:
        fail(2, f"--payload is not valid JSON: {exc}")
    except RecursionError:
        fail(2, "--payload is nested too deeply")
    labels: dict[str, str] = {}
    for item in label or []:
        k, sep, v = item.partition("=")
        if not sep or not k:
            fail(2, f"--label must be key=value, got {item!r}")
        labels[k] = v
    options: dict[str, Any] = {
        "priority": priority,
        "delay": delay,
        "at": _parse_at(at) if at else None,
        "after": after or [],
        "run_regardless": run_regardless,
        "id": id,
        "max_attempts": max_attempts,
        "timeout": timeout,
        "capabilities": capability or [],
        "labels": labels,
    }
    result = run(redis_url, lambda c: c.enqueue(queue, task, data, **options), app_spec)
    if as_json:
        out.print_json(data=result.model_dump(mode="json"))
    else:
        typer.echo(result.id)


@app.command("enqueue-many")
def enqueue_many(
    queue: str,
    file: Annotated[
        str, typer.Option("--file", "-f", help="JSON lines of {task, payload, ...}; - for stdin")
    ],
    redis_url: RedisUrl = None,
    app_spec: AppOpt = None,
) -> None:
    """Enqueue many jobs in one atomic round trip; prints one id per line."""
    try:  # every way a file can be bad is one line and exit 2, before anything is written
        if file == "-":
            text = sys.stdin.buffer.read(MAX_FILE_BYTES + 1).decode("utf-8")
        else:
            with open(file, "rb") as fh:
                text = fh.read(MAX_FILE_BYTES + 1).decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(2, f"--file {file!r} is not UTF-8 text: {exc.reason} at byte {exc.start}")
    except OSError as exc:
        fail(2, f"cannot read --file {file!r}: {exc.strerror or exc}")
    if len(text) > MAX_FILE_BYTES:
        fail(2, f"--file {file!r} is larger than {MAX_FILE_BYTES} bytes: split it")
    reqs = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                reqs.append(JobRequest.model_validate_json(line))
            except (ValueError, RecursionError) as exc:
                fail(2, f"line {n}: {str(exc)[:500]}".replace("\n", " "))
    results = run(redis_url, lambda c: c.enqueue_many(queue, reqs), app_spec)
    for r in results:
        typer.echo(r.id)
