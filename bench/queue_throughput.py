"""Queue throughput: Herder vs stock arq 0.28, side by side, on one private redis-server.

    python bench/queue_throughput.py                 # defaults below, ~3 min on 2 cores
    python bench/queue_throughput.py --repeat 1 --jobs 2000   # quick smoke run

(a) enqueue latency: single enqueues from one client, one after another (Herder
    `client.enqueue("bench", "echo", {"i": i})` vs arq `ArqRedis.enqueue_job("noop", i=i)`),
    p50/p99 per call; Herder `enqueue_many` of 1,000 jobs (one round trip), time per job.
(b) no-op throughput: one worker process at concurrency 10 and 100 drains a pre-filled queue
    (Herder: `herder worker bench --concurrency N --burst` running the demo `echo` task; arq: a
    `Worker(max_jobs=N, burst=True)` with default settings running a no-op coroutine).
    jobs/s = jobs / (last job finished - first job started), from the start/finish times each
    system stores per job; "wall" also counts process start-up (spawn -> exit).
(c) Redis work per job, enqueue to success (see docs/benchmarks.md for what is counted):
    "backlog": every job enqueued singly, then the drain of (b) at concurrency 100;
    "live": the worker runs idle first, then jobs are enqueued one at a time while it runs.

Each measurement runs --repeat times (Herder and arq interleaved); tables show medians.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.jobs import deserialize_result

from benchlib import (
    Counters,
    RedisServer,
    command_stats,
    fmt,
    install_counters,
    machine,
    median,
    percentile,
    progress,
    read_counts,
    spawn_arq,
    spawn_herder,
    stop,
    table,
)
from herder.client import HerderClient, JobRequest
from herder.settings import HerderSettings

QUEUE = "bench"  # Herder queue
ARQ_QUEUE = "arq:queue"  # arq's default queue name
WORKER_TIMEOUT_S = 180.0


# ---- helpers ------------------------------------------------------------------------------


async def gather_limited(n: int, make: Callable[[int], Awaitable[Any]], limit: int = 50) -> None:
    for start in range(0, n, limit):
        await asyncio.gather(*(make(i) for i in range(start, min(n, start + limit))))


def run_until_exit(proc: subprocess.Popen[bytes], what: str, cap: float) -> bool:
    """Wait for a burst worker to exit; after `cap` seconds stop it (SIGTERM). True if capped."""
    try:
        proc.wait(cap)
    except subprocess.TimeoutExpired:
        stop(proc)
        return True
    if proc.returncode != 0:
        raise SystemExit(f"{what} exited with {proc.returncode}")
    return False


async def herder_window(client: HerderClient) -> tuple[float, int]:
    """(last finished - first started) in seconds over the queue's succeeded jobs, and how many."""
    keys = client.keys(QUEUE)
    ids = [k.rsplit(":", 1)[1] async for k in client.redis.scan_iter(f"{keys.base}:job:*", count=1000)]
    async with client.redis.pipeline(transaction=False) as pipe:
        for i in ids:
            pipe.hmget(keys.job(i), "state", "started_at", "finished_at")
        rows = await pipe.execute()
    done = [r for r in rows if r[0] == "succeeded"]
    first = min(int(r[1]) for r in done)
    last = max(int(r[2]) for r in done)
    return (last - first) / 1000, len(done)


async def arq_window(pool: ArqRedis) -> tuple[float, int]:
    keys = [k async for k in pool.scan_iter("arq:result:*", count=1000)]
    values = []
    for start in range(0, len(keys), 1000):
        values += await pool.mget(keys[start : start + 1000])
    results = [deserialize_result(v) for v in values if v is not None]
    ok = [r for r in results if r.success]
    first = min(r.start_time for r in ok)
    last = max(r.finish_time for r in ok)
    return (last - first).total_seconds(), len(ok)


# ---- (a) enqueue latency ------------------------------------------------------------------


async def enqueue_latency(url: str, n: int, warmup: int = 100) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    async with HerderClient(HerderSettings(redis_url=url)) as client:
        await client.redis.flushall()
        for i in range(warmup):
            await client.enqueue(QUEUE, "echo", {"i": i})
        lat = []
        for i in range(n):
            t0 = time.perf_counter()
            await client.enqueue(QUEUE, "echo", {"i": i})
            lat.append((time.perf_counter() - t0) * 1000)
        out["herder"] = lat
        bulk = []
        for _ in range(5):
            reqs = [JobRequest(task="echo", payload={"i": i}) for i in range(1000)]
            t0 = time.perf_counter()
            await client.enqueue_many(QUEUE, reqs)
            bulk.append((time.perf_counter() - t0) * 1000 / 1000)
        out["herder_bulk"] = bulk
        await client.redis.flushall()
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
    return out


# ---- (b) throughput, with (c) "backlog" counts --------------------------------------------


async def drain_run(
    url: str, system: str, jobs: int, concurrency: int, tmp: Path, cap: float
) -> dict[str, float]:
    """Fill the queue (single enqueues), then time one burst worker draining it (at most `cap`
    seconds; a capped run is stopped and measured over the jobs it finished)."""
    count_file = tmp / f"{system}-{concurrency}-{time.monotonic_ns()}.json"
    log = tmp / f"{system}-worker.log"
    admin = _sync(url)
    if system == "herder":
        async with HerderClient(HerderSettings(redis_url=url)) as client:
            await client.redis.flushall()
            await client.enqueue(QUEUE, "echo", {"i": -1})  # load scripts, register the queue
            await client.redis.flushall()
            admin.config_resetstat()
            before = Counters.snapshot()
            await gather_limited(jobs, lambda i: client.enqueue(QUEUE, "echo", {"i": i}))
            enq = Counters.snapshot()
            t0 = time.monotonic()
            proc = spawn_herder(url, QUEUE, concurrency, burst=True, count_file=count_file, log=log)
            stopped = run_until_exit(proc, "herder worker", cap)
            wall = time.monotonic() - t0
            stats = command_stats(admin)
            window, n = await herder_window(client)
            await client.redis.flushall()
    else:
        pool = await create_pool(RedisSettings.from_dsn(url))
        try:
            await pool.flushall()
            admin.config_resetstat()
            before = Counters.snapshot()
            await gather_limited(jobs, lambda i: pool.enqueue_job("noop", i=i))
            enq = Counters.snapshot()
            t0 = time.monotonic()
            proc = spawn_arq(url, ARQ_QUEUE, concurrency, burst=True, count_file=count_file, log=log)
            stopped = run_until_exit(proc, "arq worker", cap)
            wall = time.monotonic() - t0
            stats = command_stats(admin)
            window, n = await arq_window(pool)
            await pool.flushall()
        finally:
            await pool.aclose()
    worker = read_counts(count_file)
    capped = stopped and n < jobs
    # Per job: the enqueue side over every job enqueued, the worker side over the jobs it ran
    # (they differ only in a capped run; so does Redis's total, which is then only indicative).
    enq_cmds, enq_rt = enq["commands"] - before["commands"], enq["round_trips"] - before["round_trips"]
    return {
        "jobs_per_s": n / window if window > 0 else float("nan"),
        "done": n,
        "capped": float(capped),
        "wall_s": wall,
        "server_cmds": float("nan") if capped else sum(stats.values()) / n,
        "client_cmds": enq_cmds / jobs + worker["commands"] / n,
        "round_trips": enq_rt / jobs + worker["round_trips"] / n,
        "enqueue_rt": enq_rt / jobs,
        "worker_rt": worker["round_trips"] / n,
    }


def _sync(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, decode_responses=True)


# ---- (c) "live" counts ----------------------------------------------------------------------


async def live_run(
    url: str, system: str, jobs: int, concurrency: int, tmp: Path
) -> tuple[dict[str, float], dict[str, int]]:
    """Worker idle first; then `jobs` single enqueues while it runs; counts until all succeeded."""
    count_file = tmp / f"live-{system}-{time.monotonic_ns()}.json"
    log = tmp / f"{system}-worker.log"
    poll = _sync(url)
    poll.flushall()
    polls = 0
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

        async def enqueue(i: int) -> Any:
            return await client.enqueue(QUEUE, "echo", {"i": i})

    else:
        pool = await create_pool(RedisSettings.from_dsn(url))
        proc = spawn_arq(url, ARQ_QUEUE, concurrency, count_file=count_file, log=log)
        poll_cmd = "zcard"
        await pool.enqueue_job("noop", i=-1)  # warm-up job: the worker is up once it is done
        while not poll.keys("arq:result:*"):  # noqa: ASYNC110
            await asyncio.sleep(0.05)

        def done() -> bool:
            return int(poll.zcard(ARQ_QUEUE)) == 0

        async def enqueue(i: int) -> Any:
            return await pool.enqueue_job("noop", i=i)

    try:
        w0 = read_counts(count_file, proc)
        poll.config_resetstat()
        before = Counters.snapshot()
        for i in range(jobs):
            await enqueue(i)
        enq = Counters.snapshot()
        deadline = time.monotonic() + 180
        while True:
            polls += 1
            if done():
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"live {system}: jobs not all done within 180 s")
            await asyncio.sleep(0.1)
        stats = command_stats(poll)
        w1 = read_counts(count_file, proc)
    finally:
        stop(proc)
        if system == "herder":
            await client.close()
        else:
            await pool.aclose()
    stats[poll_cmd] -= polls  # the bench's own completion polls
    total = sum(stats.values())
    c_cmds = enq["commands"] - before["commands"] + w1["commands"] - w0["commands"]
    c_rt = enq["round_trips"] - before["round_trips"] + w1["round_trips"] - w0["round_trips"]
    return {
        "server_cmds": total / jobs,
        "client_cmds": c_cmds / jobs,
        "round_trips": c_rt / jobs,
        "enqueue_rt": (enq["round_trips"] - before["round_trips"]) / jobs,
        "worker_rt": (w1["round_trips"] - w0["round_trips"]) / jobs,
    }, stats


# ---- main ---------------------------------------------------------------------------------


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--enqueues", type=int, default=5000, help="single enqueues per latency run")
    ap.add_argument("--jobs", type=int, default=10_000, help="jobs per drain run")
    ap.add_argument("--live-jobs", type=int, default=10_000, help="jobs for the live count run")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--cap", type=float, default=12.0, help="seconds a drain run may take before it is stopped"
    )
    args = ap.parse_args()
    install_counters()
    started = time.monotonic()
    with RedisServer() as server, tempfile.TemporaryDirectory(prefix="herder-bench-") as tmpdir:
        tmp = Path(tmpdir)
        url = server.url
        print(f"machine: {machine()}; redis-server {server.version()} (--save '' --appendonly no)")

        progress("(a) enqueue latency")
        lat: dict[str, list[list[float]]] = {"herder": [], "arq": [], "herder_bulk": []}
        for _ in range(args.repeat):
            one = await enqueue_latency(url, args.enqueues)
            for k, v in one.items():
                lat[k].append(v)

        drains: dict[tuple[str, int], list[dict[str, float]]] = {}
        for c in args.concurrency:
            for rep in range(args.repeat):
                for system in ("herder", "arq"):
                    progress(f"(b) drain {system} c={c} run {rep + 1}")
                    drains.setdefault((system, c), []).append(
                        await drain_run(url, system, args.jobs, c, tmp, args.cap)
                    )

        live: dict[str, dict[str, float]] = {}
        live_stats: dict[str, dict[str, int]] = {}
        for system in ("herder", "arq"):
            progress(f"(c) live {system}")
            live[system], live_stats[system] = await live_run(url, system, args.live_jobs, 100, tmp)

    def m(system: str, c: int, key: str) -> float:
        return median([r[key] for r in drains[(system, c)]])

    print()
    print(f"(a) enqueue latency, {args.enqueues} single enqueues per run, median of {args.repeat} runs (ms)")
    rows = []
    for system, label in (("herder", "Herder enqueue"), ("arq", "arq enqueue_job")):
        rows.append(
            [
                label,
                fmt(median([percentile(x, 50) for x in lat[system]]), 3),
                fmt(median([percentile(x, 99) for x in lat[system]]), 3),
                "",
            ]
        )
    bulk = median([median(x) for x in lat["herder_bulk"]])
    rows.append(["Herder enqueue_many(1000)", "", "", fmt(bulk, 4)])
    print(table(["", "p50 ms", "p99 ms", "ms per job (bulk)"], rows))

    print()
    print(f"(b) no-op jobs/s, one worker process, {args.jobs} pre-filled jobs, median of {args.repeat} runs")
    rows = []
    notes = []
    for c in args.concurrency:
        for system in ("herder", "arq"):
            for r in drains[(system, c)]:
                if r["capped"]:
                    notes.append(
                        f"{system} c={c}: a run hit the {args.cap:g} s cap with {r['done']:.0f} jobs done"
                    )
        h, a = m("herder", c, "jobs_per_s"), m("arq", c, "jobs_per_s")
        rows.append(
            [
                c,
                fmt(h, 0),
                fmt(a, 0),
                " / ".join(fmt(r["jobs_per_s"], 0) for r in drains[("herder", c)]),
                " / ".join(fmt(r["jobs_per_s"], 0) for r in drains[("arq", c)]),
                f"{h / a:.1f}x",
                fmt(m("herder", c, "wall_s"), 1),
                fmt(m("arq", c, "wall_s"), 1),
            ]
        )
    print(
        table(
            [
                "concurrency",
                "Herder jobs/s",
                "arq jobs/s",
                "Herder runs",
                "arq runs",
                "ratio",
                "Herder wall s",
                "arq wall s",
            ],
            rows,
        )
    )
    for note in notes:
        print(f"  note: {note} (jobs/s measured over the jobs it finished)")

    print()
    print("(c) Redis work per job, enqueue -> success (per job; see docs/benchmarks.md)")
    rows = []
    cmax = max(args.concurrency)
    for system in ("herder", "arq"):
        runs = {
            f"backlog c={cmax}": {k: m(system, cmax, k) for k in drains[(system, cmax)][0]},
            "live c=100": live[system],
        }
        for scen, r in runs.items():
            rows.append(
                [
                    system,
                    scen,
                    fmt(r["server_cmds"]),
                    fmt(r["client_cmds"]),
                    fmt(r["round_trips"]),
                    fmt(r["enqueue_rt"]),
                    fmt(r["worker_rt"]),
                ]
            )
    print(
        table(
            [
                "system",
                "scenario",
                "commands executed",
                "commands sent",
                "round trips",
                "of which enqueue",
                "of which worker",
            ],
            rows,
        )
    )
    for system in ("herder", "arq"):
        top = sorted(live_stats[system].items(), key=lambda kv: -kv[1])[:10]
        per_job = ", ".join(f"{k} {v / args.live_jobs:.2f}" for k, v in top)
        print(f"live {system}, commands executed per job by name: {per_job}")
    print(f"\ntotal bench time {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    asyncio.run(main())
