"""Long-running processes: `herder worker`, `herder metrics`, `herder dashboard`, `herder up`,
and `herder version`. Heavy imports (the worker, uvicorn, the operator) happen inside each
command, so the other commands start fast."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from herder import __version__
from herder.cli.app import app
from herder.cli.common import AppOpt, RedisUrl, fail, settings_for
from herder.errors import InvalidInput
from herder.logs import configure
from herder.tasks import load_taskset


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
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Report how this worker would run its tasks (sandbox, limits), then exit"
        ),
    ] = False,
) -> None:
    """Run a worker for QUEUE."""
    from herder.arq.worker import create_worker, find_worker_settings
    from herder.client import check_queue
    from herder.worker import HerderWorker, run_worker

    configure()
    settings = settings_for(redis_url)
    arq_settings = find_worker_settings(app_spec)
    try:
        check_queue(queue)
        tasks = load_taskset(None if arq_settings is not None else app_spec)
    except InvalidInput as exc:
        fail(2, str(exc))
    if check:
        raise typer.Exit(_check(tasks.names()))
    w: HerderWorker
    if arq_settings is not None:
        # An arq app (herder.arq WorkerSettings): arq's semantics on this queue. The command
        # line's capacity, name and drain timeout win: the autoscaler counts on them.
        w = create_worker(
            arq_settings,
            queue_name=queue,
            max_jobs=concurrency,
            name=name,
            capabilities=tuple(capability or ()),
            drain_timeout=drain_timeout,
            job_completion_wait=0,
            burst=burst,
            herder_settings=settings,
        )
    else:
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


def _check(task_names: list[str]) -> int:
    """`herder worker --check`: what runs on this worker would get; 1 if it would refuse them."""
    ok = True
    if "claude_code" in task_names:
        from herder.processors.claude_code import ClaudeCodeSettings
        from herder.processors.claude_code.check import check

        report = check(ClaudeCodeSettings())
        for line in report.lines:
            typer.echo(line)
        ok = report.ok
    typer.echo("ok" if ok else "NOT OK")
    return 0 if ok else 1
