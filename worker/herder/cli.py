"""The `herder` command line. Exit codes: 0 ok, 2 bad usage or invalid input (nothing was
written), 1 anything else."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table

from herder import __version__
from herder.client import HerderClient, JobRequest
from herder.errors import Conflict, HerderError, InvalidInput, NotFound
from herder.logs import configure
from herder.models import FINAL_STATES, Job, QueueStatus
from herder.settings import HerderSettings
from herder.tasks import TaskSet, load_taskset

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Herder: Redis-backed task queues.")
dlq_app = typer.Typer(no_args_is_help=True, help="The dead-letter queue: list, replay, purge.")
app.add_typer(dlq_app, name="dlq")
out = Console()

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
    typer.echo(f"herder: {message}", err=True)
    raise typer.Exit(code)


def settings_for(redis_url: str | None) -> HerderSettings:
    try:
        return HerderSettings(redis_url=redis_url) if redis_url else HerderSettings()
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


def job_dict(job: Job) -> dict[str, Any]:
    return job.model_dump(mode="json")


# ---- enqueue ---------------------------------------------------------------------------


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
    stream = sys.stdin if file == "-" else open(file)
    reqs = []
    with stream:
        for n, line in enumerate(stream, 1):
            if line.strip():
                try:
                    reqs.append(JobRequest.model_validate_json(line))
                except ValueError as exc:
                    fail(2, f"line {n}: {exc}".replace("\n", " "))
    results = run(redis_url, lambda c: c.enqueue_many(queue, reqs), app_spec)
    for r in results:
        typer.echo(r.id)


# ---- inspect ---------------------------------------------------------------------------


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
            _print_job(j)
        return

    async def follow_job(c: HerderClient) -> Job:
        last: Any = None
        while True:
            j = await c.get_job(job_id, queue)
            snapshot = (j.state, j.attempts, j.progress)
            if snapshot != last:
                if as_json:
                    typer.echo(json.dumps({"state": j.state, "attempts": j.attempts, "progress": j.progress}))
                else:
                    typer.echo(
                        f"{time.strftime('%H:%M:%S')} {j.state} attempt={j.attempts} {j.progress or ''}"
                    )
                last = snapshot
            if j.state in FINAL_STATES:
                return j
            await asyncio.sleep(0.5)

    final = run(redis_url, follow_job)
    if as_json:
        typer.echo(json.dumps(job_dict(final)))
    else:
        _print_job(final)


def _print_job(j: Job) -> None:
    t = Table(show_header=False, box=None)
    for k, v in job_dict(j).items():
        if v not in (None, [], {}):
            t.add_row(k, json.dumps(v) if isinstance(v, dict | list) else str(v))
    out.print(t)


@app.command()
def status(queue: str, as_json: AsJson = False, redis_url: RedisUrl = None) -> None:
    """Queue depth by state, and the live workers."""
    st = run(redis_url, lambda c: c.status(queue))
    if as_json:
        typer.echo(st.model_dump_json())
    else:
        print_status(st)


def print_status(st: QueueStatus) -> None:
    out.print(
        f"[bold]{st.queue}[/] ready={st.ready} scheduled={st.scheduled} waiting={st.waiting} "
        f"active={st.active} dead={st.dead}{' [yellow]PAUSED[/]' if st.paused else ''}"
    )
    t = Table("worker", "capacity", "in flight", "draining", "last seen (s ago)")
    for w in st.workers:
        ago = f"{st.now - w.last_seen:.1f}" if w.last_seen else "?"
        t.add_row(w.id, str(w.capacity), str(w.in_flight), "yes" if w.draining else "", ago)
    out.print(t)


@app.command()
def queues(redis_url: RedisUrl = None) -> None:
    """List known queues."""
    for q in run(redis_url, lambda c: c.queues()):
        typer.echo(q)


# ---- operate ---------------------------------------------------------------------------


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


# ---- dead-letter queue -----------------------------------------------------------------


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
    t = Table("id", "task", "attempts", "reason")
    for j in jobs:
        t.add_row(j.id, j.task, str(j.attempts), j.dead_reason or "")
    out.print(t)


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


# ---- processes -------------------------------------------------------------------------


@app.command()
def worker(
    queue: str,
    app_spec: AppOpt = None,
    concurrency: Annotated[int, typer.Option(min=1, max=10_000, help="Concurrent jobs")] = 10,
    name: Annotated[str | None, typer.Option(help="Worker id (default: pod name or host-pid)")] = None,
    capability: Annotated[list[str] | None, typer.Option("--capability", help="Offered (repeatable)")] = None,
    drain_timeout: Annotated[float, typer.Option(min=0, help="Seconds to finish jobs on SIGTERM")] = 30.0,
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus metrics on this port")] = None,
    burst: Annotated[bool, typer.Option(help="Exit when the queue is empty")] = False,
    redis_url: RedisUrl = None,
) -> None:
    """Run a worker for QUEUE."""
    from herder.client import check_queue
    from herder.worker import HerderWorker, run_worker

    configure()
    settings = settings_for(redis_url)
    try:
        check_queue(queue)
        tasks = load_taskset(app_spec)
    except InvalidInput as exc:
        fail(2, str(exc))
    w = HerderWorker(
        queue,
        tasks,
        settings,
        concurrency=concurrency,
        name=name,
        capabilities=tuple(capability or ()),
        drain_timeout=drain_timeout,
        burst=burst,
    )
    if metrics_port is not None:
        from herder.health import serve

        # /readyz fails while draining: see herder.health for why the operator needs that.
        serve(metrics_port, ready=lambda: not w.draining)
    raise typer.Exit(run_worker(w))


@app.command("metrics")
def metrics_cmd(
    queues: Annotated[
        list[str] | None, typer.Argument(help="Queues to export (default: every known queue)")
    ] = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to serve /metrics on")] = 9100,
    addr: Annotated[str, typer.Option(help="Address to listen on")] = "0.0.0.0",
    redis_url: RedisUrl = None,
) -> None:
    """Serve queue metrics (depth by state, workers, capacity, events) for Prometheus."""
    from herder.queue_metrics import serve

    configure()
    settings = settings_for(redis_url)
    try:
        serve(settings, queues or None, port, addr=addr)
    except InvalidInput as exc:
        fail(2, str(exc))
    except OSError as exc:
        fail(1, f"cannot listen on {addr}:{port}: {exc}")


@app.command()
def dashboard(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8080,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(help="Host name users reach the dashboard at (repeatable; '*' for any)"),
    ] = None,
    redis_url: RedisUrl = None,
    app_spec: AppOpt = None,
) -> None:
    """Serve the web dashboard. Operations need HERDER_DASHBOARD_TOKEN (reads too, once set);
    without one, a random token is made for this run on a loopback address, and any other
    address is refused."""
    import uvicorn

    from herder.dashboard import create_app
    from herder.web.security import BindRefused, check_bind, is_wildcard, new_token

    configure()
    settings = settings_for(redis_url)
    token = os.environ.get("HERDER_DASHBOARD_TOKEN") or None
    try:
        check_bind(host, token)
    except BindRefused as exc:
        fail(2, str(exc))
    hosts = allowed_host or [h for h in os.environ.get("HERDER_DASHBOARD_ALLOWED_HOSTS", "").split(",") if h]
    if is_wildcard(host) and not hosts:
        fail(2, f"listening on {host}: pass --allowed-host NAME (the name users reach it at), or '*' for any")
    try:
        tasks = load_taskset(app_spec)
    except InvalidInput as exc:
        fail(2, str(exc))
    shown = host if not is_wildcard(host) else "127.0.0.1"
    if token is None:
        # Jupyter-style: the token rides in the URL fragment, which browsers never send.
        token = new_token()
        typer.echo(f"dashboard: http://{shown}:{port}/#token={token}", err=True)
    else:
        typer.echo(f"dashboard: http://{shown}:{port}/ (token: HERDER_DASHBOARD_TOKEN)", err=True)
    uvicorn.run(
        create_app(settings, tasks, token=token, bind_host=host, allowed_hosts=hosts),
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=3,
    )


@app.command()
def up(
    file: Annotated[str, typer.Option("--file", "-f", help="TaskQueue YAML")],
    redis_url: Annotated[
        str | None, typer.Option("--redis-url", help="Redis URL (default: start one)")
    ] = None,
) -> None:
    """Run a TaskQueue locally: the operator's autoscaler with local worker processes."""
    try:
        from herder_operator.up import run_up  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        fail(1, f"the operator package is not installed: {exc}")
    configure()
    raise typer.Exit(run_up(file, redis_url))


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
