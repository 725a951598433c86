"""Scaling: no-op jobs/s and Redis CPU as Herder worker processes are added, on one
redis-server (1, 2, 4, 8 processes, concurrency 100 each, one queue) and on a Redis Cluster of
1 vs 3 shards (3 queues whose slots sit on different shards, one worker per queue).

    python bench/scaling.py                  # ~4 min on 2 shared cores
    python bench/scaling.py --quick          # 1 repeat, fewer jobs, 1/2/4 workers
    python bench/scaling.py --no-cluster     # the single-redis curve only

Each point starts its workers once, with the queues paused, and waits until every worker is
registered; then it runs --repeat drains: fill the paused queues (enqueue_many, 1,000 per call),
resume them, wait until every job has succeeded, delete the job hashes. jobs/s = jobs / (last
finished - first started), from the job hashes. CPU is measured over the drain (resume -> all
succeeded), in cores (1.00 = one core busy the whole time): each redis-server from INFO cpu
(used_cpu_sys + used_cpu_user), the workers from /proc/PID/stat, the machine from /proc/stat;
"bench" = this process (enqueuing is done before the drain, so it is the completion polls every
20 ms); "others" = machine - Redis - workers - bench: whatever else the machine runs.
"Redis µs/job" = Redis CPU time per job (all shards); "1-core ceiling" = jobs/s / CPU of the
busiest redis-server: the rate at which it would use a whole core, i.e. where one Redis (or one
shard) saturates once the workers have the CPU to drive it (a machine with 2 shared cores
cannot show that directly).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from math import nan
from pathlib import Path
from typing import Any

from benchlib import (
    RedisClusterServer,
    RedisServer,
    cpu_seconds,
    fmt,
    machine,
    machine_busy_seconds,
    median,
    progress,
    redis_cpu_seconds,
    shard_of,
    spawn_herder,
    table,
)
from herder.client import HerderClient, JobRequest
from herder.settings import HerderSettings

CONCURRENCY = 100
REGISTER_TIMEOUT_S = 180.0  # 8 Python workers starting on 2 busy cores take a while
DRAIN_TIMEOUT_S = 300.0


@dataclass
class Target:
    url: str
    nodes: list[Any]  # one client per redis-server (per master in a cluster)
    cluster: bool


def settings(t: Target) -> HerderSettings:
    return HerderSettings(redis_url=t.url, redis_cluster=t.cluster)


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every worker we started (by PID) at once, then wait; SIGKILL a straggler."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


async def fill(client: HerderClient, queues: list[str], share: int) -> dict[str, list[str]]:
    """Pause the queues and enqueue `share` no-op jobs into each; their ids by queue."""
    ids: dict[str, list[str]] = {}
    for q in queues:
        await client.pause(q)
        ids[q] = []
        for start in range(0, share, 1000):
            reqs = [JobRequest(task="echo", payload={"i": i}) for i in range(start, min(share, start + 1000))]
            ids[q] += [r.id for r in await client.enqueue_many(q, reqs)]
    return ids


async def window_and_delete(client: HerderClient, ids: dict[str, list[str]]) -> tuple[float, int]:
    """(last finished - first started) over the succeeded jobs, and how many; then the job
    hashes are deleted so that the next drain starts from the same memory."""
    first, last, n = float("inf"), 0, 0
    for q, qids in ids.items():
        keys = client.keys(q)
        for start in range(0, len(qids), 1000):
            chunk = [keys.job(i) for i in qids[start : start + 1000]]
            async with client.redis.pipeline(transaction=False) as pipe:
                for k in chunk:
                    pipe.hmget(k, "state", "started_at", "finished_at")
                rows = await pipe.execute()
            for state, started, finished in rows:
                if state == "succeeded":
                    first, last, n = min(first, int(started)), max(last, int(finished)), n + 1
            await client.redis.delete(*chunk)
    return (last - first) / 1000 if n else float("nan"), n


async def drain(
    t: Target, client: HerderClient, procs: list[subprocess.Popen[bytes]], queues: list[str], jobs: int
) -> dict[str, Any]:
    """Fill the paused queues, resume them, and measure until every job has succeeded."""
    share = jobs // len(queues)
    stats = [client.keys(q).stats for q in queues]

    async def succeeded() -> int:
        return sum([int(await client.redis.hget(k, "succeeded") or 0) for k in stats])

    target = await succeeded() + share * len(queues)
    ids = await fill(client, queues, share)
    cpu0 = [redis_cpu_seconds(r) for r in t.nodes]
    w0, m0, t0 = sum(cpu_seconds(p.pid) for p in procs), machine_busy_seconds(), time.monotonic()
    b0 = cpu_seconds(os.getpid())
    for q in queues:
        await client.resume(q)
    while (done := await succeeded()) < target:
        if time.monotonic() - t0 > DRAIN_TIMEOUT_S:
            raise SystemExit(f"drain not done within {DRAIN_TIMEOUT_S:g} s ({done} of {target} jobs)")
        await asyncio.sleep(0.02)
    elapsed = time.monotonic() - t0
    redis_cores = [(redis_cpu_seconds(r) - c) / elapsed for r, c in zip(t.nodes, cpu0, strict=True)]
    worker_cores = (sum(cpu_seconds(p.pid) for p in procs) - w0) / elapsed
    machine_cores = (machine_busy_seconds() - m0) / elapsed
    bench_cores = (cpu_seconds(os.getpid()) - b0) / elapsed
    seconds, n = await window_and_delete(client, ids)
    return {
        "jobs_per_s": n / seconds if seconds > 0 else nan,
        "redis": redis_cores,
        "workers": worker_cores,
        "machine": machine_cores,
        "bench": bench_cores,
        "others": machine_cores - sum(redis_cores) - worker_cores - bench_cores,
    }


async def point(
    t: Target, queues: list[str], per_queue: int, jobs: int, repeat: int, log: Path
) -> list[dict[str, Any]]:
    """Start `per_queue` workers per queue, wait until all are registered, then `repeat` drains
    (start-up is paid once per point: 8 Python workers take a while to start on 2 busy cores)."""
    for r in t.nodes:
        r.flushall()
    env = {"HERDER_REDIS_CLUSTER": "true"} if t.cluster else None
    async with HerderClient(settings(t)) as client:
        for q in queues:
            await client.pause(q)
        procs = [
            spawn_herder(t.url, q, CONCURRENCY, name=f"{q}-{w}", log=log, extra_env=env)
            for q in queues
            for w in range(per_queue)
        ]
        try:
            deadline = time.monotonic() + REGISTER_TIMEOUT_S
            for q in queues:
                while len((await client.status(q)).workers) < per_queue:
                    if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                        raise SystemExit(f"workers of {q} did not register (see {log})")
                    await asyncio.sleep(0.1)
            return [await drain(t, client, procs, queues, jobs) for _ in range(repeat)]
        finally:
            stop_all(procs)


def spread_queues(count: int) -> list[str]:
    """`count` queue names whose hash slots fall on `count` different shards of a cluster of
    `count` masters (the slot is a function of the hash tag alone)."""
    names: list[str] = []
    i = 0
    while len(names) < count:
        q = f"q{i}"
        if shard_of(f"{{{q}}}", count) == len(names):
            names.append(q)
        i += 1
    return names


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "jobs_per_s": median([r["jobs_per_s"] for r in runs]),
        "runs": " / ".join(fmt(r["jobs_per_s"], 0) for r in runs),
        "redis": [median([r["redis"][i] for r in runs]) for i in range(len(runs[0]["redis"]))],
        **{k: median([r[k] for r in runs]) for k in ("workers", "bench", "machine", "others")},
        # CPU per job, and the rate at which the busiest redis-server would use one full core
        "redis_us": median([sum(r["redis"]) / r["jobs_per_s"] * 1e6 for r in runs]),
        "worker_us": median([r["workers"] / r["jobs_per_s"] * 1e6 for r in runs]),
        "ceiling": median([r["jobs_per_s"] / max(r["redis"]) if max(r["redis"]) > 0 else nan for r in runs]),
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--jobs", type=int, default=20_000, help="jobs per drain (split over the queues)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--shards", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--no-cluster", action="store_true")
    ap.add_argument("--quick", action="store_true", help="1 repeat, 10,000 jobs, 1/2/4 workers")
    args = ap.parse_args()
    if args.quick:
        args.repeat, args.jobs = 1, 10_000
        args.workers = [1, 2, 4] if args.workers == [1, 2, 4, 8] else args.workers
    started, load0 = time.monotonic(), os.getloadavg()
    curve: dict[int, list[dict[str, Any]]] = {}
    shards: dict[int, list[dict[str, Any]]] = {}
    queues = spread_queues(max(args.shards))  # the same queues on every cluster
    with tempfile.TemporaryDirectory(prefix="herder-bench-") as tmpdir:
        log = Path(tmpdir) / "workers.log"
        with RedisServer() as server:
            version = server.version()
            t = Target(server.url, [server.sync()], cluster=False)
            for k in args.workers:
                progress(f"single redis: {k} workers, {args.repeat} drains")
                curve[k] = await point(t, ["bench"], k, args.jobs, args.repeat, log)
        for n in [] if args.no_cluster else args.shards:
            with RedisClusterServer(n) as cl:
                progress(f"cluster: {n} shards, {len(queues)} queues, {args.repeat} drains")
                t = Target(cl.url, cl.clients(), cluster=True)
                shards[n] = await point(t, queues, 1, args.jobs, args.repeat, log)
    load1 = os.getloadavg()

    print(
        f"machine: {machine()}; redis-server {version} (--save '' --appendonly no); "
        f"load average {load0[0]:.1f} at start, {load1[0]:.1f} at end"
    )
    print()
    print(
        f"single redis-server: {args.jobs} no-op jobs, one queue, N worker processes at concurrency "
        f"{CONCURRENCY}; median of {args.repeat} runs; CPU in cores over the drain"
    )
    rows = []
    for k, runs in curve.items():
        s = summary(runs)
        rows.append(
            [k, fmt(s["jobs_per_s"], 0), fmt(s["jobs_per_s"] / k, 0), s["runs"], fmt(s["redis"][0]),
             fmt(s["workers"]), fmt(s["bench"]), fmt(s["others"]), fmt(s["machine"]),
             fmt(s["redis_us"], 1), fmt(s["worker_us"], 1), fmt(s["ceiling"], 0)]
        )  # fmt: skip
    heads = [
        "workers",
        "jobs/s",
        "jobs/s per worker",
        "runs",
        "Redis CPU",
        "workers CPU",
        "bench CPU",
        "others CPU",
    ]
    heads += [
        f"machine CPU (of {os.cpu_count()})",
        "Redis µs/job",
        "worker µs/job",
        "Redis 1-core ceiling jobs/s",
    ]
    print(table(heads, rows))
    if shards:
        print()
        print(
            f"Redis Cluster: {args.jobs} no-op jobs over {len(queues)} queues ({', '.join(queues)}), "
            f"one worker per queue at concurrency {CONCURRENCY}; median of {args.repeat} runs"
        )
        rows = []
        for n, runs in shards.items():
            s = summary(runs)
            rows.append(
                [n, fmt(s["jobs_per_s"], 0), s["runs"], " / ".join(fmt(c) for c in s["redis"]),
                 fmt(sum(s["redis"])), fmt(s["workers"]), fmt(s["bench"]), fmt(s["others"]), fmt(s["machine"]),
                 fmt(s["redis_us"], 1), fmt(s["ceiling"], 0)]
            )  # fmt: skip
        heads = ["shards", "jobs/s", "runs", "Redis CPU per shard", "Redis CPU total", "workers CPU"]
        heads += ["bench CPU", "others CPU", f"machine CPU (of {os.cpu_count()})", "Redis µs/job"]
        print(table([*heads, "busiest shard 1-core ceiling jobs/s"], rows))
    print(f"\ntotal bench time {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    asyncio.run(main())
