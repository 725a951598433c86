"""Worker runtime: Herder vs stock arq 0.28, side by side, in one run.

    python bench/worker_runtime.py                   # ~3 min on 2 cores
    python bench/worker_runtime.py --repeat 1 --samples 50 --idle-seconds 5 --arq-cap 5  # smoke

(a) crash re-dispatch: a long `sleep` job runs on worker A; A is killed with SIGKILL at a random
    moment of its heartbeat cycle; time from the kill until the job is active again on worker B.
    Herder: HERDER_LEASE_SECONDS default (10 s), B idle on the same queue for a full lease before
    the kill (a worker reaps leases only after one lease of healthy contact with Redis).
    arq: both workers job_timeout=60 s; arq re-runs the job only once its in-progress key
    expires (job_timeout + 10 s after the start); "active again" = arq's retry counter reaching
    2; the wait is capped at --arq-cap seconds. Runs in the background while the rest goes on.
(b) idle pickup latency: one idle worker (concurrency 10), one `echo`/no-op job at a time,
    50-150 ms apart for Herder, 50-550 ms for arq (random; spans its 0.5 s poll period),
    --samples samples; arq's runs in the background during (a), Herder's alone afterwards.
    latency = start - enqueue as each system records them (Herder: started_at - enqueued_at
    in the job hash, both Redis TIME, 1 ms resolution; arq: JobResult.start_time -
    enqueue_time, 1 ms resolution). Also: Redis round trips per job in this one-at-a-time
    mode (enqueue + everything the worker sent meanwhile, divided by the samples).
(c) idle Redis load of one idle worker (concurrency 100) over --idle-seconds: commands Redis
    executed (INFO commandstats delta, including commands run inside Lua scripts) and requests
    the worker sent (client-side counters, see benchlib.Counters), per second. Measured on a
    second private redis-server that serves nothing else, so the counts are that worker's alone.
(d) worker RSS (VmRSS): the idle worker of (c), then the same worker with 100 in-flight
    `sleep` jobs of 30 s (concurrency 100).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from arq.connections import RedisSettings, create_pool

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
    rss_mb,
    spawn_arq,
    spawn_herder,
    stop,
    table,
)
from herder.client import HerderClient
from herder.errors import HerderError
from herder.settings import HerderSettings


async def wait_for(pred: Any, timeout: float, what: str, step: float = 0.02) -> None:
    """Poll an async predicate until it is true."""
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(step)


async def herder_registered(client: HerderClient, queue: str, name: str) -> bool:
    return any(w.id == name for w in (await client.status(queue)).workers)


# ---- (a) crash re-dispatch ----------------------------------------------------------------


async def herder_crash(url: str, reps: int, tmp: Path) -> list[float]:
    settings = HerderSettings(redis_url=url)
    queue = "crash"
    lease = settings.lease_seconds
    out: list[float] = []
    async with HerderClient(settings) as client:
        b = spawn_herder(url, queue, 10, name="B", log=tmp / "herder-crash.log")
        procs = [b]
        try:
            await wait_for(lambda: herder_registered(client, queue, "B"), 30, "worker B")
            b_up = time.monotonic()
            for rep in range(reps):
                a_name = f"A{rep}"
                await client.drain_worker(queue, "B", exit=False)  # so that the job lands on A
                a = spawn_herder(url, queue, 1, name=a_name, log=tmp / "herder-crash.log")
                procs.append(a)
                await wait_for(lambda n=a_name: herder_registered(client, queue, n), 30, "worker A")
                job = await client.enqueue(queue, "sleep", {"seconds": 600})

                async def on(worker: str, jid: str = job.id) -> bool:
                    j = await client.get_job(jid, queue)
                    return j.state == "active" and j.worker == worker

                await wait_for(lambda n=a_name: on(n), 30, "job active on A")
                await client.undrain_worker(queue, "B")
                # B must have been in contact for a whole lease before it may reap (see docstring).
                await asyncio.sleep(max(0.0, b_up + lease + 0.5 - time.monotonic()))
                await asyncio.sleep(random.uniform(0, lease / 3))  # random phase of A's heartbeat
                t0 = time.monotonic()
                a.kill()
                a.wait()
                await wait_for(lambda: on("B"), lease * 3, "job active on B", step=0.01)
                out.append(time.monotonic() - t0)
                progress(f"(a) herder re-dispatch run {rep + 1}: {out[-1]:.2f} s")
                try:
                    await client.cancel(job.id, queue)
                except HerderError:
                    pass
        finally:
            for p in procs:
                stop(p, timeout=2)
    return out


async def arq_crash(url: str, cap: float, tmp: Path) -> float | None:
    """Seconds from kill to re-run on B, or None if it did not happen within `cap`."""
    queue = "arq:crash"
    pool = await create_pool(RedisSettings.from_dsn(url), default_queue_name=queue)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        a = spawn_arq(url, queue, 1, job_timeout=60, log=tmp / "arq-crash.log")
        procs.append(a)
        job = await pool.enqueue_job("sleep", seconds=600)
        assert job is not None
        retry_key = f"arq:retry:{job.job_id}"

        async def tries(n: int) -> bool:
            v = await pool.get(retry_key)
            return v is not None and int(v) >= n

        await wait_for(lambda: tries(1), 30, "arq job started on A")
        b = spawn_arq(url, queue, 1, job_timeout=60, log=tmp / "arq-crash.log")
        procs.append(b)
        await asyncio.sleep(2.0)  # B up and polling
        await asyncio.sleep(random.uniform(0, 0.5))
        t0 = time.monotonic()
        a.kill()
        a.wait()
        deadline = t0 + cap
        while time.monotonic() < deadline:
            if await tries(2):
                dt = time.monotonic() - t0
                progress(f"(a) arq re-dispatch: {dt:.2f} s")
                return dt
            await asyncio.sleep(0.05)
        progress(f"(a) arq re-dispatch: not within the {cap:g} s cap")
        return None
    finally:
        for p in procs:
            stop(p, timeout=2)
        await pool.aclose()


# ---- (b) idle pickup latency --------------------------------------------------------------


async def herder_pickup(url: str, samples: int, tmp: Path) -> tuple[list[float], float]:
    """Latencies (ms), and Redis round trips per job (enqueue + worker) in this one-at-a-time mode."""
    settings = HerderSettings(redis_url=url)
    queue = "pickup"
    out: list[float] = []
    count_file = tmp / "pickup-herder.json"
    enqueue_rt = 0
    async with HerderClient(settings) as client:
        w = spawn_herder(url, queue, 10, name="P", count_file=count_file, log=tmp / "herder-pickup.log")
        try:
            await wait_for(lambda: herder_registered(client, queue, "P"), 30, "worker P")
            key = client.keys(queue).job
            for i in range(samples + 5):  # the first 5 are warm-up
                await asyncio.sleep(random.uniform(0.05, 0.15))
                if i == 5:
                    w0 = read_counts(count_file, w)
                rt = Counters.round_trips
                job = await client.enqueue(queue, "echo", {"i": i})
                if i >= 5:
                    enqueue_rt += Counters.round_trips - rt
                while True:
                    state, enq, started = await client.redis.hmget(
                        key(job.id), "state", "enqueued_at", "started_at"
                    )
                    if state == "succeeded":
                        break
                    await asyncio.sleep(0.005)
                if i >= 5:
                    out.append(float(int(started) - int(enq)))
            await asyncio.sleep(0.2)  # the last finish and the worker's next claim are done
            w1 = read_counts(count_file, w)
        finally:
            stop(w, timeout=5)
    return out, (enqueue_rt + w1["round_trips"] - w0["round_trips"]) / samples


async def arq_pickup(url: str, samples: int, tmp: Path) -> tuple[list[float], float]:
    """As herder_pickup. The gap between samples spans arq's whole 0.5 s poll period, so that
    the enqueue lands at a uniformly random point of the worker's poll cycle."""
    queue = "arq:pickup"
    pool = await create_pool(RedisSettings.from_dsn(url), default_queue_name=queue)
    out: list[float] = []
    count_file = tmp / "pickup-arq.json"
    enqueue_rt = 0
    w = spawn_arq(url, queue, 10, count_file=count_file, log=tmp / "arq-pickup.log")
    try:
        for i in range(samples + 5):
            await asyncio.sleep(random.uniform(0.05, 0.55))
            if i == 5:
                w0 = read_counts(count_file, w)
            rt = Counters.round_trips
            job = await pool.enqueue_job("noop", i=i)
            if i >= 5:
                enqueue_rt += Counters.round_trips - rt
            assert job is not None
            deadline = time.monotonic() + 30
            while (info := await job.result_info()) is None:
                if time.monotonic() > deadline:
                    raise SystemExit("arq pickup: job not done within 30 s")
                await asyncio.sleep(0.01)
            if i >= 5:
                out.append((info.start_time - info.enqueue_time).total_seconds() * 1000)
        w1 = read_counts(count_file, w)
    finally:
        stop(w, timeout=5)
        await pool.aclose()
    return out, (enqueue_rt + w1["round_trips"] - w0["round_trips"]) / samples


# ---- (c) idle load and (d) RSS ----------------------------------------------------------------


async def idle_and_rss(url: str, system: str, seconds: float, tmp: Path) -> dict[str, Any]:
    admin = RedisServer.sync_for(url)
    count_file = tmp / f"idle-{system}.json"
    if system == "herder":
        queue = "idle"
        client = HerderClient(HerderSettings(redis_url=url))
        proc = spawn_herder(url, queue, 100, name="I", count_file=count_file, log=tmp / "herder-idle.log")
        await wait_for(lambda: herder_registered(client, queue, "I"), 30, "worker I")
    else:
        queue = "arq:idle"
        pool = await create_pool(RedisSettings.from_dsn(url), default_queue_name=queue)
        proc = spawn_arq(url, queue, 100, count_file=count_file, log=tmp / "arq-idle.log")

        async def arq_up() -> bool:
            return bool(await pool.exists(f"{queue}:health-check"))

        await wait_for(arq_up, 30, "arq worker up")
    try:
        await asyncio.sleep(2.0)  # settle: start-up commands done
        c0 = read_counts(count_file, proc)
        admin.config_resetstat()
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        stats = command_stats(admin)
        elapsed = time.monotonic() - t0
        c1 = read_counts(count_file, proc)
        idle_rss = rss_mb(proc.pid)
        # (d) 100 in-flight sleep jobs of 30 s
        if system == "herder":
            for _ in range(100):
                await client.enqueue(queue, "sleep", {"seconds": 30})

            async def all_active() -> bool:
                return (await client.status(queue)).active == 100

        else:
            for _ in range(100):
                await pool.enqueue_job("sleep", seconds=30)

            async def all_active() -> bool:
                return len([k async for k in pool.scan_iter("arq:in-progress:*", count=1000)]) == 100

        await wait_for(all_active, 30, "100 in-flight jobs", step=0.1)
        loaded = []
        for _ in range(5):
            await asyncio.sleep(0.5)
            loaded.append(rss_mb(proc.pid))
    finally:
        stop(proc, timeout=2)
        if system == "herder":
            await client.close()
        else:
            await pool.aclose()
    return {
        "executed_per_s": sum(stats.values()) / elapsed,
        "sent_per_s": (c1["commands"] - c0["commands"]) / elapsed,
        "round_trips_per_s": (c1["round_trips"] - c0["round_trips"]) / elapsed,
        "rss_idle": idle_rss,
        "rss_loaded": max(loaded),
        "breakdown": " ".join(f"{k}={v}" for k, v in sorted(stats.items(), key=lambda kv: -kv[1])),
    }


# ---- main ---------------------------------------------------------------------------------


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="Herder crash re-dispatch runs")
    ap.add_argument("--samples", type=int, default=200, help="pickup latency samples per system")
    ap.add_argument("--idle-seconds", type=float, default=20.0)
    ap.add_argument("--arq-cap", type=float, default=90.0, help="longest wait for arq's re-dispatch")
    args = ap.parse_args()
    install_counters()
    started = time.monotonic()
    with (
        RedisServer() as server,
        RedisServer() as quiet,
        tempfile.TemporaryDirectory(prefix="herder-bench-") as tmpdir,
    ):
        tmp = Path(tmpdir)
        print(f"machine: {machine()}; redis-server {server.version()} (--save '' --appendonly no)")
        progress("(a) arq crash re-dispatch started in the background")
        arq_crash_task = asyncio.create_task(arq_crash(server.url, args.arq_cap, tmp))

        async def idle_both() -> dict[str, dict[str, Any]]:
            out = {}
            for system in ("herder", "arq"):
                progress(f"(c)+(d) idle load and RSS: {system}")
                out[system] = await idle_and_rss(quiet.url, system, args.idle_seconds, tmp)
            return out

        # arq's pickup latency (hundreds of ms, set by its 0.5 s poll) is not disturbed by the
        # light work running beside it; Herder's (ms) is measured afterwards, alone.
        progress("(b) arq pickup latency started in the background")
        arq_pickup_task = asyncio.create_task(arq_pickup(server.url, args.samples, tmp))
        progress("(a) herder crash re-dispatch")
        herder_redispatch, idle = await asyncio.gather(
            herder_crash(server.url, args.repeat, tmp), idle_both()
        )
        arq_redispatch = await arq_crash_task
        a_pick, a_rt = await arq_pickup_task
        progress("(b) herder pickup latency")
        h_pick, h_rt = await herder_pickup(server.url, args.samples, tmp)

    print()
    print("(a) crash re-dispatch: SIGKILL of the worker running the job -> job active on another worker (s)")
    h = herder_redispatch
    print(
        table(
            ["system", "setting", "median s", "min s", "max s", "runs"],
            [
                ["Herder", "lease 10 s", fmt(median(h)), fmt(min(h)), fmt(max(h)), len(h)],
                [
                    "arq",
                    "job_timeout 60 s",
                    fmt(arq_redispatch) if arq_redispatch is not None else f"> {args.arq_cap:g}",
                    "",
                    "",
                    1,
                ],
            ],
        )
    )
    print()
    print(f"(b) idle pickup latency, {args.samples} jobs one at a time (ms, enqueue -> start)")
    rows = []
    for name, xs, rt in (("Herder", h_pick, h_rt), ("arq", a_pick, a_rt)):
        rows.append([name, fmt(percentile(xs, 50), 1), fmt(percentile(xs, 99), 1), fmt(max(xs), 1), fmt(rt)])
    print(table(["system", "p50 ms", "p99 ms", "max ms", "round trips per job"], rows))
    print()
    print(f"(c) one idle worker (concurrency 100) over {args.idle_seconds:g} s, per second")
    rows = []
    for name, key in (("Herder", "herder"), ("arq", "arq")):
        r = idle[key]
        rows.append([name, fmt(r["executed_per_s"]), fmt(r["sent_per_s"]), fmt(r["round_trips_per_s"])])
    print(table(["system", "commands executed/s", "commands sent/s", "round trips/s"], rows))
    for key in ("herder", "arq"):
        print(f"  {key} idle, commands executed by name: {idle[key]['breakdown']}")
    print()
    print("(d) worker RSS (VmRSS, MB)")
    rows = [
        [n, fmt(idle[k]["rss_idle"], 1), fmt(idle[k]["rss_loaded"], 1)]
        for n, k in (("Herder", "herder"), ("arq", "arq"))
    ]
    print(table(["system", "idle", "100 in-flight sleep jobs"], rows))
    print(f"\ntotal bench time {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    asyncio.run(main())
