"""Queue throughput: Herder vs stock arq 0.28 vs BullMQ 6.7, side by side, on one private
redis-server, in one run (every ratio comes from the same run).

    python bench/queue_throughput.py            # defaults below, ~5 min on 2 shared cores
    python bench/queue_throughput.py --quick    # smoke run: 1 repeat, 2,000 jobs

(a) enqueue latency: single enqueues from one client, one after another (Herder
    `client.enqueue("bench", "echo", {"i": i})`, arq `ArqRedis.enqueue_job("noop", i=i)`, BullMQ
    `queue.add("noop", {i})` from Node), p50/p99 per call; Herder `enqueue_many` of 1,000 jobs
    (one round trip), time per job.
(b) no-op throughput: one worker process at concurrency 10 and 100 drains a pre-filled queue
    (Herder: `herder worker bench --concurrency N --burst` running the demo `echo` task; arq: a
    `Worker(max_jobs=N, burst=True)` with default settings running a no-op coroutine; BullMQ: one
    `Worker` with `{concurrency: N}`, otherwise default, an async processor returning `job.data.i`).
    jobs/s = jobs / (last job finished - first job started), from the start/finish times each
    system stores per job; "wall" also counts process start-up (spawn -> exit). CPU per job:
    the worker process's CPU time from the first job's start (sampled from /proc every 20 ms, so
    start-up is excluded) and the redis-server's (INFO cpu, spawn -> exit), over the jobs run.
(c) Redis work per job, enqueue to success (see docs/benchmarks.md for what is counted):
    "backlog": every job enqueued singly, then the drain of (b) at concurrency 100;
    "live": the worker runs idle first, then jobs are enqueued one at a time while it runs.
(d) Redis memory per queued job: `used_memory` after N jobs are enqueued (no worker) minus before.

Each measurement runs --repeat times (Herder, arq and BullMQ interleaved); tables show medians.
BullMQ runs with its defaults: `removeOnComplete` off (completed jobs are kept, as Herder and arq
keep theirs), the events stream on (capped at ~10,000 entries).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.jobs import deserialize_result

import bullmqlib
from benchlib import (
    Counters,
    RedisServer,
    command_stats,
    cpu_seconds,
    install_counters,
    machine,
    progress,
    read_counts,
    redis_cpu_seconds,
    spawn_arq,
    spawn_herder,
    stop,
)
from bullmqlib import BullMQ
from herder.client import HerderClient, JobRequest
from herder.settings import HerderSettings
from throughput_report import report

QUEUE = "bench"  # Herder's and BullMQ's queue name
ARQ_QUEUE = "arq:queue"  # arq's default queue name
SYSTEMS = ("herder", "arq", "bullmq")


# ---- helpers ------------------------------------------------------------------------------


async def gather_limited(n: int, make: Callable[[int], Awaitable[Any]], limit: int = 50) -> None:
    for start in range(0, n, limit):
        await asyncio.gather(*(make(i) for i in range(start, min(n, start + limit))))


def run_until_exit(
    proc: subprocess.Popen[bytes], what: str, cap: float
) -> tuple[bool, list[tuple[float, float]]]:
    """Wait for a burst worker to exit; after `cap` seconds stop it (SIGTERM). Returns whether
    it was capped, and (wall-clock time, its CPU seconds) sampled every 20 ms meanwhile, so that
    its CPU over the drain can be told from its start-up (Python imports, Node boot)."""
    deadline = time.monotonic() + cap
    samples: list[tuple[float, float]] = []
    while True:
        try:  # read before poll(): a zombie's /proc entry still holds its final CPU time
            samples.append((time.time(), cpu_seconds(proc.pid)))
        except (FileNotFoundError, ProcessLookupError):
            pass
        if proc.poll() is not None:
            break
        if time.monotonic() > deadline:
            stop(proc)
            return True, samples
        time.sleep(0.02)
    if proc.returncode != 0:
        raise SystemExit(f"{what} exited with {proc.returncode}")
    return False, samples


def cpu_since(samples: list[tuple[float, float]], start: float) -> float:
    """CPU seconds the sampled process used from `start` (wall clock) until its last sample."""
    before = [cpu for t, cpu in samples if t <= start]
    return samples[-1][1] - (before[-1] if before else samples[0][1])


def sync(url: str) -> Any:
    """A plain client for the bench's own reads (typed Any: redis-py's sync/async unions)."""
    return redis.Redis.from_url(url, decode_responses=True)


async def herder_window(client: HerderClient) -> tuple[float, float, int]:
    """(first started, last finished) as epoch seconds over the queue's succeeded jobs, and how
    many."""
    keys = client.keys(QUEUE)
    ids = [k.rsplit(":", 1)[1] async for k in client.redis.scan_iter(f"{keys.base}:job:*", count=1000)]
    async with client.redis.pipeline(transaction=False) as pipe:
        for i in ids:
            pipe.hmget(keys.job(i), "state", "started_at", "finished_at")
        rows = await pipe.execute()
    done = [r for r in rows if r[0] == "succeeded"]
    return min(int(r[1]) for r in done) / 1000, max(int(r[2]) for r in done) / 1000, len(done)


async def arq_window(pool: ArqRedis) -> tuple[float, float, int]:
    keys = [k async for k in pool.scan_iter("arq:result:*", count=1000)]
    values = []
    for start in range(0, len(keys), 1000):
        values += await pool.mget(keys[start : start + 1000])
    results = [deserialize_result(v) for v in values if v is not None]
    ok = [r for r in results if r.success]
    first = min(r.start_time for r in ok).timestamp()
    return first, max(r.finish_time for r in ok).timestamp(), len(ok)


# ---- (a) enqueue latency ------------------------------------------------------------------


async def enqueue_latency(url: str, bq: BullMQ, n: int, warmup: int = 100) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    sync(url).flushall()
    out["herder"] = await herder_latencies(url, n, warmup)
    async with HerderClient(HerderSettings(redis_url=url)) as client:
        bulk = []
        for _ in range(5):
            reqs = [JobRequest(task="echo", payload={"i": i}) for i in range(1000)]
            t0 = time.perf_counter()
            await client.enqueue_many(QUEUE, reqs)
            bulk.append((time.perf_counter() - t0) * 1000 / 1000)
        out["herder_bulk"] = bulk
        await client.redis.flushall()
    out["herder_uvloop"] = herder_latency_on_uvloop(url, n, warmup)
    pool = await create_pool(RedisSettings.from_dsn(url))
    try:
        for i in range(warmup):
            await pool.enqueue_job("noop", i=i)
        lat = []
        for i in range(n):
            t0 = time.perf_counter()
            await pool.enqueue_job("noop", i=i)
            lat.append((time.perf_counter() - t0) * 1000)
        out["arq"] = lat
        await pool.flushall()
    finally:
        await pool.aclose()
    out["bullmq"] = bq.add(n, warmup=warmup)["latencies"]
    sync(url).flushall()
    return out


async def herder_latencies(url: str, n: int, warmup: int) -> list[float]:
    """`n` single enqueues one after another (after `warmup`), ms each; flushes the server after."""
    async with HerderClient(HerderSettings(redis_url=url)) as client:
        for i in range(warmup):
            await client.enqueue(QUEUE, "echo", {"i": i})
        lat = []
        for i in range(n):
            t0 = time.perf_counter()
            await client.enqueue(QUEUE, "echo", {"i": i})
            lat.append((time.perf_counter() - t0) * 1000)
        await client.redis.flushall()
        return lat


def herder_latency_on_uvloop(url: str, n: int, warmup: int) -> list[float]:
    """The same single enqueues from a process running uvloop (libuv, the loop Node runs on;
    uvicorn's standard install, and so Herder's API server, uses it): a fresh process, since an
    event loop policy is per process."""
    out = subprocess.run(
        [sys.executable, __file__, "--uvloop-latency", url, str(n), str(warmup)],
        check=True,
        capture_output=True,
        text=True,
    )
    return list(json.loads(out.stdout))


# ---- (b) throughput, with (c) "backlog" counts --------------------------------------------


async def drain_run(
    url: str, bq: BullMQ, system: str, jobs: int, concurrency: int, tmp: Path, cap: float
) -> dict[str, float]:
    """Fill the queue (single enqueues), then time one burst worker draining it (at most `cap`
    seconds; a capped run is stopped and measured over the jobs it finished)."""
    count_file = tmp / f"{system}-{concurrency}-{time.monotonic_ns()}.json"
    log = tmp / f"{system}-worker.log"
    admin = sync(url)
    admin.flushall()
    if system == "herder":
        async with HerderClient(HerderSettings(redis_url=url)) as client:
            await client.enqueue(QUEUE, "echo", {"i": -1})  # load scripts, register the queue
            await client.redis.flushall()
            admin.config_resetstat()
            before = Counters.snapshot()
            await gather_limited(jobs, lambda i: client.enqueue(QUEUE, "echo", {"i": i}))
            enq = {k: v - before[k] for k, v in Counters.snapshot().items()}
            filled = sum(command_stats(admin).values())
            t0, cpu0 = time.monotonic(), redis_cpu_seconds(admin)
            proc = spawn_herder(url, QUEUE, concurrency, burst=True, count_file=count_file, log=log)
            stopped, samples = run_until_exit(proc, "herder worker", cap)
            wall, cpu1 = time.monotonic() - t0, redis_cpu_seconds(admin)
            stats = command_stats(admin)
            first, last, n = await herder_window(client)
    elif system == "arq":
        pool = await create_pool(RedisSettings.from_dsn(url))
        try:
            admin.config_resetstat()
            before = Counters.snapshot()
            await gather_limited(jobs, lambda i: pool.enqueue_job("noop", i=i))
            enq = {k: v - before[k] for k, v in Counters.snapshot().items()}
            filled = sum(command_stats(admin).values())
            t0, cpu0 = time.monotonic(), redis_cpu_seconds(admin)
            proc = spawn_arq(url, ARQ_QUEUE, concurrency, burst=True, count_file=count_file, log=log)
            stopped, samples = run_until_exit(proc, "arq worker", cap)
            wall, cpu1 = time.monotonic() - t0, redis_cpu_seconds(admin)
            stats = command_stats(admin)
            first, last, n = await arq_window(pool)
        finally:
            await pool.aclose()
    else:
        admin.config_resetstat()
        enq = bq.add(jobs, parallel=50)["counts"]  # 50 adds in flight, like gather_limited
        filled = sum(command_stats(admin).values())
        t0, cpu0 = time.monotonic(), redis_cpu_seconds(admin)
        proc = bq.spawn_worker(concurrency, expect=jobs, count_file=count_file, log=log)
        stopped, samples = run_until_exit(proc, "bullmq worker", cap)
        wall, cpu1 = time.monotonic() - t0, redis_cpu_seconds(admin)
        stats = command_stats(admin)
        first, last, n = bq.window(admin)
    admin.flushall()
    worker = read_counts(count_file)
    capped = stopped and n < jobs
    # Per job: the enqueue side over every job enqueued, the worker side over the jobs it ran
    # (they differ only in a capped run, where the jobs in flight when it stopped add a little).
    return {
        "jobs_per_s": n / (last - first) if last > first else float("nan"),
        "done": n,
        "capped": float(capped),
        "wall_s": wall,
        "worker_us": cpu_since(samples, first) / n * 1e6,
        "redis_us": (cpu1 - cpu0) / n * 1e6,
        "server_cmds": filled / jobs + (sum(stats.values()) - filled) / n,
        "client_cmds": enq["commands"] / jobs + worker["commands"] / n,
        "round_trips": enq["round_trips"] / jobs + worker["round_trips"] / n,
        "enqueue_rt": enq["round_trips"] / jobs,
        "worker_rt": worker["round_trips"] / n,
    }


# ---- (c) "live" counts ----------------------------------------------------------------------


async def live_run(
    url: str, bq: BullMQ, system: str, jobs: int, concurrency: int, tmp: Path
) -> tuple[dict[str, float], dict[str, int]]:
    """Worker idle first; then `jobs` single enqueues while it runs; counts until all succeeded."""
    count_file = tmp / f"live-{system}-{time.monotonic_ns()}.json"
    log = tmp / f"{system}-worker.log"
    poll = sync(url)
    poll.flushall()
    polls = 0
    sig = signal.SIGUSR1
    client: HerderClient | None = None
    pool: ArqRedis | None = None
    if system == "herder":
        client = HerderClient(HerderSettings(redis_url=url))
        proc = spawn_herder(url, QUEUE, concurrency, name="live", count_file=count_file, log=log)
        stats_key = f"{client.keys(QUEUE).base}:stats"
        poll_cmd = "hget"
        await client.enqueue(QUEUE, "echo", {"i": -1})  # warm-up job: scripts loaded, worker up
        while poll.hget(stats_key, "succeeded") != "1":  # noqa: ASYNC110
            await asyncio.sleep(0.05)

        def done() -> bool:
            return int(poll.hget(stats_key, "succeeded") or 0) >= jobs + 1

        async def enqueue_all() -> dict[str, int]:
            assert client is not None
            before = Counters.snapshot()
            for i in range(jobs):
                await client.enqueue(QUEUE, "echo", {"i": i})
            return {k: v - before[k] for k, v in Counters.snapshot().items()}

    elif system == "arq":
        pool = await create_pool(RedisSettings.from_dsn(url))
        proc = spawn_arq(url, ARQ_QUEUE, concurrency, count_file=count_file, log=log)
        poll_cmd = "zcard"
        await pool.enqueue_job("noop", i=-1)  # warm-up job: the worker is up once it is done
        while not poll.keys("arq:result:*"):  # noqa: ASYNC110
            await asyncio.sleep(0.05)

        def done() -> bool:
            return int(poll.zcard(ARQ_QUEUE)) == 0

        async def enqueue_all() -> dict[str, int]:
            assert pool is not None
            before = Counters.snapshot()
            for i in range(jobs):
                await pool.enqueue_job("noop", i=i)
            return {k: v - before[k] for k, v in Counters.snapshot().items()}

    else:
        sig = signal.SIGUSR2
        proc = bq.spawn_worker(concurrency, count_file=count_file, log=log)
        poll_cmd = "zcard"
        bq.add(1)  # warm-up job: the worker is up once it is done
        while poll.zcard(bq.completed_key()) < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

        def done() -> bool:
            return int(poll.zcard(bq.completed_key())) >= jobs + 1

        async def enqueue_all() -> dict[str, int]:
            counts: dict[str, int] = bq.add(jobs)["counts"]  # one Node process, one add after another
            return counts

    try:
        w0 = read_counts(count_file, proc, sig)
        poll.config_resetstat()
        enq = await enqueue_all()
        deadline = time.monotonic() + 180
        while True:
            polls += 1
            if done():
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"live {system}: jobs not all done within 180 s")
            await asyncio.sleep(0.1)
        stats = command_stats(poll)
        w1 = read_counts(count_file, proc, sig)
    finally:
        stop(proc)
        if client is not None:
            await client.close()
        if pool is not None:
            await pool.aclose()
    stats[poll_cmd] -= polls  # the bench's own completion polls
    total = sum(stats.values())
    w_cmds, w_rt = w1["commands"] - w0["commands"], w1["round_trips"] - w0["round_trips"]
    return {
        "server_cmds": total / jobs,
        "client_cmds": (enq["commands"] + w_cmds) / jobs,
        "round_trips": (enq["round_trips"] + w_rt) / jobs,
        "enqueue_rt": enq["round_trips"] / jobs,
        "worker_rt": w_rt / jobs,
    }, stats


# ---- (d) memory per queued job ------------------------------------------------------------


async def memory_run(url: str, bq: BullMQ, system: str, jobs: int) -> dict[str, float]:
    """Bytes of `used_memory` per queued job: N jobs enqueued (payload {"i": i}, no worker);
    measured with the enqueuing client gone, scripts already loaded."""
    admin = sync(url)
    admin.flushall()
    if system == "herder":
        async with HerderClient(HerderSettings(redis_url=url)) as client:
            await client.enqueue(QUEUE, "echo", {"i": -1})
            await client.redis.flushall()
        before = int(admin.info("memory")["used_memory"])
        async with HerderClient(HerderSettings(redis_url=url)) as client:
            for start in range(0, jobs, 1000):  # the same job hashes as single enqueues, faster
                reqs = [
                    JobRequest(task="echo", payload={"i": i}) for i in range(start, min(jobs, start + 1000))
                ]
                await client.enqueue_many(QUEUE, reqs)
    elif system == "arq":
        pool = await create_pool(RedisSettings.from_dsn(url))
        await pool.aclose()
        before = int(admin.info("memory")["used_memory"])
        pool = await create_pool(RedisSettings.from_dsn(url))
        try:
            await gather_limited(jobs, lambda i: pool.enqueue_job("noop", i=i))
        finally:
            await pool.aclose()
    else:
        bq.add(1)
        admin.flushall()
        before = int(admin.info("memory")["used_memory"])
        bq.add(jobs, parallel=50)
    after = int(admin.info("memory")["used_memory"])
    keys = int(admin.dbsize())
    events = admin.memory_usage(f"bull:{bq.queue}:events") if system == "bullmq" else None
    admin.flushall()
    return {
        "bytes_per_job": (after - before) / jobs,
        "keys_per_job": keys / jobs,
        "events_bytes_per_job": (events or 0) / jobs,
    }


# ---- main ---------------------------------------------------------------------------------


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--enqueues", type=int, default=5000, help="single enqueues per latency run")
    ap.add_argument("--jobs", type=int, default=10_000, help="jobs per drain run")
    ap.add_argument("--live-jobs", type=int, default=10_000, help="jobs for the live count run")
    ap.add_argument("--memory-jobs", type=int, default=10_000, help="queued jobs for the memory run")
    ap.add_argument(
        "--memory-repeat",
        type=int,
        default=1,
        help="memory runs (bytes per job varied by <= 3%% between runs here)",
    )
    ap.add_argument("--concurrency", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--cap", type=float, default=10.0, help="seconds a drain run may take before it is stopped"
    )
    ap.add_argument("--bullmq-prefix", type=Path, default=None, help="npm folder (default: a temp dir)")
    ap.add_argument("--quick", action="store_true", help="1 repeat, 2,000 jobs: a smoke run")
    ap.add_argument("--uvloop-latency", nargs=3, metavar=("URL", "N", "WARMUP"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.uvloop_latency:  # the child of herder_latency_on_uvloop (already on uvloop)
        url, n, warmup = args.uvloop_latency
        print(json.dumps(await herder_latencies(url, int(n), int(warmup))))
        return
    if args.quick:
        args.repeat, args.enqueues, args.cap = 1, 1000, 6.0
        args.jobs = args.live_jobs = args.memory_jobs = 2000
    install_counters()
    prefix = bullmqlib.install(args.bullmq_prefix)
    started = time.monotonic()
    load0 = os.getloadavg()
    with RedisServer() as server, tempfile.TemporaryDirectory(prefix="herder-bench-") as tmpdir:
        tmp = Path(tmpdir)
        url = server.url
        bq = BullMQ(prefix, url, QUEUE)
        header = (
            f"machine: {machine()}; redis-server {server.version()} (--save '' --appendonly no); "
            f"BullMQ {bullmqlib.BULLMQ_VERSION} (ioredis {bullmqlib.IOREDIS_VERSION}, "
            f"node {bullmqlib.node_version()})"
        )

        lat: dict[str, list[list[float]]] = {s: [] for s in (*SYSTEMS, "herder_bulk", "herder_uvloop")}
        drains: dict[tuple[str, int], list[dict[str, float]]] = {}
        memory: dict[str, list[dict[str, float]]] = {s: [] for s in SYSTEMS}
        for rep in range(args.repeat):
            progress(f"(a) enqueue latency run {rep + 1}")
            for k, v in (await enqueue_latency(url, bq, args.enqueues)).items():
                lat[k].append(v)
            for c in args.concurrency:
                for system in SYSTEMS:
                    progress(f"(b) drain {system} c={c} run {rep + 1}")
                    drains.setdefault((system, c), []).append(
                        await drain_run(url, bq, system, args.jobs, c, tmp, args.cap)
                    )
            for system in SYSTEMS if rep < args.memory_repeat else ():
                progress(f"(d) memory {system} run {rep + 1}")
                memory[system].append(await memory_run(url, bq, system, args.memory_jobs))

        live: dict[str, dict[str, float]] = {}
        live_stats: dict[str, dict[str, int]] = {}
        for system in SYSTEMS:
            progress(f"(c) live {system}")
            live[system], live_stats[system] = await live_run(url, bq, system, args.live_jobs, 100, tmp)

    load1 = os.getloadavg()
    header += f"; load average {load0[0]:.1f} at start, {load1[0]:.1f} at end"
    print(report(args, header, lat, drains, live, live_stats, memory))
    print(f"\ntotal bench time {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    if "--uvloop-latency" in sys.argv:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
