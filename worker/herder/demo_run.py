"""`scripts/demo.sh`: a private Redis, a burst of jobs (priorities, retries, a DLQ entry, a
dependency chain), two worker processes, and a live table until the queue is empty."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from herder.client import HerderClient, JobRequest
from herder.localredis import LocalRedis
from herder.models import QueueStatus
from herder.settings import HerderSettings

QUEUE = "demo"


def table(st: QueueStatus, elapsed: float) -> Table:
    t = Table(title=f"queue {st.queue}  t={elapsed:4.1f}s")
    for col in ("ready", "scheduled", "waiting", "active", "succeeded", "dead", "workers"):
        t.add_column(col, justify="right")
    t.add_row(
        str(st.ready),
        str(st.scheduled),
        str(st.waiting),
        str(st.active),
        str(st.counters.get("succeeded", 0)),
        str(st.dead),
        str(len(st.workers)),
    )
    return t


def start_workers(url: str, n: int = 2) -> list[subprocess.Popen[bytes]]:
    env = dict(os.environ, HERDER_REDIS_URL=url, HERDER_LOG_LEVEL="WARNING")
    cmd = [sys.executable, "-m", "herder.cli", "worker", QUEUE, "--concurrency", "6"]
    return [subprocess.Popen([*cmd, "--name", f"demo-worker-{i}"], env=env) for i in range(n)]


async def run(url: str) -> int:
    console = Console()
    async with HerderClient(HerderSettings(redis_url=url)) as c:
        reqs = [JobRequest(task="sleep", payload={"seconds": 0.5}, priority=i % 3) for i in range(24)]
        reqs += [JobRequest(task="flaky", payload={"failures": 2}, id="flaky-1")]
        reqs += [JobRequest(task="fail", payload={"message": "boom"}, id="doomed", max_attempts=2)]
        reqs += [
            JobRequest(task="echo", payload={"step": 1}, id="step-1"),
            JobRequest(task="echo", payload={"step": 2}, id="step-2", after=["step-1"]),
        ]
        await c.enqueue_many(QUEUE, reqs)
        workers = start_workers(url)
        t0 = time.monotonic()
        try:
            with Live(console=console, refresh_per_second=4) as live:
                while time.monotonic() - t0 < 60:
                    st = await c.status(QUEUE)
                    live.update(table(st, time.monotonic() - t0))
                    if st.ready + st.scheduled + st.waiting + st.active == 0:
                        break
                    await asyncio.sleep(0.25)
        finally:
            for w in workers:
                w.send_signal(signal.SIGTERM)
            for w in workers:
                w.wait(30)
        flaky = await c.get_job("flaky-1", QUEUE)
        doomed = await c.get_job("doomed", QUEUE)
        step2 = await c.get_job("step-2", QUEUE)
        console.print(f"flaky-1: {flaky.state} after {flaky.attempts} attempts")
        console.print(f"doomed: {doomed.state} ({doomed.dead_reason})")
        console.print(f"step-2 (after step-1): {step2.state}, result {step2.result}")
        ok = flaky.state == "succeeded" and doomed.state == "dead" and step2.state == "succeeded"
        return 0 if ok else 1


def main() -> int:
    with LocalRedis() as r:
        return asyncio.run(run(r.url))


if __name__ == "__main__":
    raise SystemExit(main())
