"""`herder up -f taskqueue.yaml`: the operator's reconciler with local worker processes.

Without --redis-url it starts a private redis-server (the embedded default). spec.redis is not
used here: it names the cluster's Redis, which a laptop usually cannot reach; so it may be left
out of the file, and when it is there `herder up` says that it is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections import deque
from pathlib import Path

import yaml
from pydantic import ValidationError
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from herder.client import HerderClient
from herder.localredis import LocalRedis
from herder.settings import HerderSettings, redact_url
from herder_operator.pools.local import LocalPool
from herder_operator.reconciler import Reconciler, StepReport
from herder_operator.spec import KIND, TaskQueue, spec_errors

# Stands in for a missing spec.redis, which `herder up` does not use (see the module docstring).
_UNUSED_REDIS = {"url": "redis://unused.invalid:6379/0"}


def load_local(path: Path) -> tuple[TaskQueue, bool]:
    """The first TaskQueue of a file, spec.redis optional. Returns it and whether spec.redis was set."""
    for doc in yaml.safe_load_all(path.read_text()):
        if isinstance(doc, dict) and doc.get("kind") == KIND:
            spec = doc.get("spec")
            has_redis = isinstance(spec, dict) and "redis" in spec
            if isinstance(spec, dict) and not has_redis:
                doc = {**doc, "spec": {**spec, "redis": _UNUSED_REDIS}}
            return TaskQueue.model_validate(doc), has_redis
    raise ValueError(f"{path}: no document of kind {KIND}")


def render(tq: TaskQueue, report: StepReport, events: deque[str], redis_url: str) -> Group:
    st = report.status
    table = Table(
        title=f"TaskQueue {tq.name}  queue={tq.spec.queue}  redis={redact_url(redis_url)}", expand=False
    )
    for col in ("ready", "scheduled", "active", "dead", "workers", "draining", "replicas", "desired"):
        table.add_column(col, justify="right")
    table.add_row(
        *(str(x) for x in ((st.ready, st.scheduled, st.active, st.dead) if st else ("?",) * 4)),
        str(report.workers_ready),
        str(report.workers_draining),
        str(report.new_replicas),
        str(report.decision.desired),
    )
    workers = Table(show_header=True, expand=False)
    for col in ("worker", "in flight", "capacity", "state"):
        workers.add_column(col)
    for w in st.workers if st else []:
        state = "drained" if w.drained else "draining" if w.draining else "serving"
        workers.add_row(w.id, str(w.in_flight), str(w.capacity), state)
    reason = Text(f"decision: {report.decision.reason}", style="bold")
    if report.error:
        reason = Text(f"Redis unreachable: {report.error}", style="bold red")
    return Group(table, workers, reason, Text("\n".join(events), style="dim"))


async def _loop(tq: TaskQueue, redis_url: str, stop: asyncio.Event, console: Console) -> None:
    spec = tq.spec
    pool = LocalPool(tq.name, spec, redis_url)
    events: deque[str] = deque(maxlen=8)
    live_mode = console.is_terminal
    try:
        async with HerderClient(HerderSettings(redis_url=redis_url)) as client:
            rec = Reconciler(spec, pool, client)
            live = Live(console=console, auto_refresh=False) if live_mode else None
            with live if live is not None else contextlib.nullcontext():
                while not stop.is_set():
                    report = await rec.step()
                    for e in report.events:
                        line = f"{time.strftime('%H:%M:%S')} {e.reason}: {e.message}"
                        events.append(line)
                        if live is None:
                            console.print(line, highlight=False)
                    if live is not None:
                        live.update(render(tq, report, events, redis_url), refresh=True)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), spec.poll_interval_seconds)
    finally:
        console.print("stopping workers (drain)...", highlight=False)
        await asyncio.to_thread(pool.close)


def run_up(path: str, redis_url: str | None) -> int:
    """Run until SIGINT/SIGTERM. Returns the process exit code."""
    console = Console(stderr=False)
    try:
        tq, has_redis = load_local(Path(path))
    except ValidationError as exc:
        console.print(f"herder up: invalid TaskQueue in {path}: {spec_errors(exc)}", highlight=False)
        return 2
    except (OSError, ValueError) as exc:
        console.print(f"herder up: {exc}", highlight=False)
        return 2
    if has_redis:
        console.print(
            "herder up: spec.redis is ignored (it names the cluster's Redis); "
            + ("using --redis-url" if redis_url else "starting a private redis-server"),
            highlight=False,
        )
    local: LocalRedis | None = None
    if redis_url is None:
        try:
            local = LocalRedis().start()
        except RuntimeError as exc:
            console.print(f"herder up: {exc}; or pass --redis-url", highlight=False)
            return 1
        redis_url = local.url
        console.print(f"started redis-server at {redis_url}", highlight=False)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await _loop(tq, redis_url, stop, console)

    try:
        asyncio.run(main())
    finally:
        if local is not None:
            local.stop()
    sys.stdout.flush()
    return 0
