"""The two hot paths of issue 11's performance step, measured in this process (no subprocess
start-up, no bench instrumentation), on a private redis-server:

  python bench/hot_paths.py drain [--jobs N] [--concurrency C] [--uvloop] [--profile]
      one HerderWorker drains N pre-filled no-op `echo` jobs: jobs/s and the process's CPU
      (user + sys) per job; --profile prints cProfile's top functions instead of timing.
  python bench/hot_paths.py enqueue [--n N] [--uvloop]
      where a single enqueue's time goes: the client's CPU (user / sys, getrusage) per
      round trip of a fast-lane PING, of redis-py's PING and of an enqueue; Herder's own
      Python per enqueue with Redis taken out; Redis' time in the enqueue script (INFO
      commandstats).

Compare two checkouts by running the same command with PYTHONPATH=<checkout>/worker,
alternating, a few times each: single runs on a shared machine move by +-15%.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import resource
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from herder.client import HerderClient
from herder.demo import tasks
from herder.localredis import LocalRedis
from herder.logs import configure
from herder.request import JobRequest
from herder.settings import HerderSettings
from herder.worker import HerderWorker

QUEUE = "bench"


def cpu() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


async def drain(url: str, jobs: int, concurrency: int, profile: bool) -> None:
    settings = HerderSettings(redis_url=url)
    async with HerderClient(settings, tasks) as client:
        for start in range(0, jobs, 1000):
            batch = [JobRequest(task="echo", payload={"i": i}) for i in range(start, min(jobs, start + 1000))]
            await client.enqueue_many(QUEUE, batch)
    worker = HerderWorker(QUEUE, tasks, settings, concurrency=concurrency, burst=True, handle_signals=False)
    t0, (u0, s0) = time.perf_counter(), cpu()
    if profile:
        prof = cProfile.Profile()
        prof.enable()
        await worker.main()
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(40)
    else:
        await worker.main()
    wall, (u1, s1) = time.perf_counter() - t0, cpu()
    await worker.close()
    done = worker.jobs_complete
    print(
        f"drain: {done} jobs at concurrency {concurrency}: {done / wall:,.0f} jobs/s, "
        f"CPU {(u1 - u0 + s1 - s0) / done * 1e6:.1f} us per job"
    )


async def per_call(name: str, n: int, call: Callable[[], Awaitable[Any]]) -> None:
    (u0, s0), t0 = cpu(), time.perf_counter()
    for _ in range(n):
        await call()
    (u1, s1), wall = cpu(), time.perf_counter() - t0
    print(
        f"{name:34s} {wall / n * 1e6:7.1f} us wall, CPU user {(u1 - u0) / n * 1e6:5.1f} sys {(s1 - s0) / n * 1e6:5.1f}"
    )


async def enqueue(url: str, n: int) -> None:
    async with HerderClient(HerderSettings(redis_url=url), tasks) as client:
        await client.enqueue(QUEUE, "echo", {"i": -1})  # scripts loaded, queue registered
        lane = client._fast
        assert lane is not None, "the fast lane needs a plain redis:// URL"
        await client.redis.config_resetstat()
        await per_call("fast-lane PING", n, lambda: lane.call("PING"))
        await per_call("redis-py PING", n, client.redis.ping)
        await per_call("enqueue", n, lambda: client.enqueue(QUEUE, "echo", {"i": 1}))
        stats = await client.redis.info("commandstats")
        print(
            f"{'Redis: enqueue script (EVALSHA)':34s} {stats['cmdstat_evalsha']['usec_per_call']:7.1f} us per call"
        )

        async def no_io(script: Any, qk: Any, specs: str) -> list[list[Any]]:
            return [["x", "ready", 1]]

        lane.script = no_io  # type: ignore[method-assign]
        await per_call("enqueue, Redis taken out", n, lambda: client.enqueue(QUEUE, "echo", {"i": 1}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    d = sub.add_parser("drain")
    d.add_argument("--jobs", type=int, default=20_000)
    d.add_argument("--concurrency", type=int, default=100)
    d.add_argument("--profile", action="store_true")
    e = sub.add_parser("enqueue")
    e.add_argument("--n", type=int, default=20_000)
    for p in (d, e):
        p.add_argument("--uvloop", action="store_true", help="run on uvloop instead of asyncio's loop")
    args = ap.parse_args()
    configure()
    with LocalRedis(appendonly=False) as server:
        if args.what == "drain":
            coro: Coroutine[Any, Any, None] = drain(server.url, args.jobs, args.concurrency, args.profile)
        else:
            coro = enqueue(server.url, args.n)
        if args.uvloop:
            import uvloop

            uvloop.run(coro)
        else:
            asyncio.run(coro)


if __name__ == "__main__":
    main()
