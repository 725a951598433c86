"""`scripts/demo.sh`: the main job on the embedded default. A private redis-server, `herder up`
with the example TaskQueue (the operator's autoscaler with local worker processes), a burst of
jobs (priorities, a retried job, a dead-lettered one, a dependency chain); the workers scale up,
drain the queue, and scale back to zero. Then a summary."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from rich.console import Console

from herder.client import HerderClient, JobRequest
from herder.localredis import LocalRedis
from herder.settings import HerderSettings

QUEUE = "default"
TIMEOUT_S = 150


def start_up(taskqueue: str, url: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, HERDER_LOG_LEVEL="WARNING")
    return subprocess.Popen(
        [sys.executable, "-m", "herder.cli", "up", "-f", taskqueue, "--redis-url", url], env=env
    )


async def run(url: str, taskqueue: str) -> int:
    console = Console()
    up = start_up(taskqueue, url)
    peak = 0
    try:
        async with HerderClient(HerderSettings(redis_url=url)) as c:
            reqs = [JobRequest(task="sleep", payload={"seconds": 3}, priority=i % 3) for i in range(40)]
            reqs += [
                JobRequest(task="flaky", payload={"failures": 2}, id="flaky-1"),
                JobRequest(task="fail", payload={"message": "boom"}, id="doomed", max_attempts=2),
                JobRequest(task="echo", payload={"step": 1}, id="step-1"),
                JobRequest(task="echo", payload={"step": 2}, id="step-2", after=["step-1"]),
            ]
            await c.enqueue_many(QUEUE, reqs)
            t0 = time.monotonic()
            drained = False
            while time.monotonic() - t0 < TIMEOUT_S:
                st = await c.status(QUEUE)
                peak = max(peak, len(st.workers))
                if st.ready + st.scheduled + st.waiting + st.active == 0:
                    drained = True
                    if not st.workers:  # scaled back to zero after the cooldown
                        break
                await asyncio.sleep(0.5)
            flaky = await c.get_job("flaky-1", QUEUE)
            doomed = await c.get_job("doomed", QUEUE)
            step2 = await c.get_job("step-2", QUEUE)
            st = await c.status(QUEUE)
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait(10)
    console.rule("summary")
    console.print(
        f"jobs succeeded: {st.counters.get('succeeded', 0)}, dead: {st.dead}, workers at peak: {peak}"
    )
    console.print(f"flaky-1: {flaky.state} after {flaky.attempts} attempts")
    console.print(f"doomed: {doomed.state} ({doomed.dead_reason})")
    console.print(f"step-2 (after step-1): {step2.state}, result {step2.result}")
    console.print(f"scaled back to zero: {'yes' if not st.workers else 'no'}")
    ok = drained and flaky.state == "succeeded" and doomed.state == "dead" and step2.state == "succeeded"
    return 0 if ok else 1


def main() -> int:
    taskqueue = sys.argv[1] if len(sys.argv) > 1 else "examples/taskqueue.yaml"
    with LocalRedis() as r:
        return asyncio.run(run(r.url, taskqueue))


if __name__ == "__main__":
    raise SystemExit(main())
