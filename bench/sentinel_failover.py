"""Sentinel failover under load, measured: each run starts a master, two replicas and three
redis-sentinel processes (tests/sentinel_proc.py: quorum 2, down-after 1000 ms), `herder worker`
processes and a producer that know only HERDER_REDIS_SENTINELS, kills the master with SIGKILL
while jobs run, and reports how long the failover and the resumption took and what became of
every acknowledged job.

    python bench/sentinel_failover.py --runs 3

Columns: `failover` = kill -> a majority of sentinels names a new master (polled every 20 ms);
`first ack` = kill -> the producer's first acknowledged enqueue; `first done` = kill -> the earliest
finish (finished_at, Redis' clock) of a job enqueued after the kill, as the surviving master has it; `lost` = acknowledged but
absent on the new master (asynchronous replication); `dead` = in the DLQ; `lease exp.` and
`stale` = the queue's lease_expired and stale_finish counters.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "apps"))

import redis
from chaos_app import tasks
from redis.exceptions import RedisError

from benchlib import fmt, machine, progress, table
from herder.client import HerderClient
from herder.errors import NotFound
from herder.localredis import free_port
from herder.settings import HerderSettings
from procs import WorkerProc
from sentinel_proc import DOWN_AFTER_MS, MASTER_NAME, SentinelGroup

T = TypeVar("T")


async def produce(
    c: HerderClient, acked: list[tuple[str, float]], stop: asyncio.Event, long_every: int
) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        payload = {"seconds": 2.0 if i % long_every == 0 else 0.05}
        try:
            await c.enqueue("default", "work", payload, id=f"p{i}")
        except (RedisError, OSError):
            await asyncio.sleep(0.02)
            continue
        acked.append((f"p{i}", time.time()))
        await asyncio.sleep(0.005)


async def poll(probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], every: float) -> T:
    while True:
        value = await probe()
        if ok(value):
            return value
        await asyncio.sleep(every)


async def one_run(args: argparse.Namespace, n: int) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="herder-sentinel-bench-") as tmp:
        extra = ["--min-replicas-to-write", str(args.min_replicas), "--min-replicas-max-lag", "10"]
        group = SentinelGroup(Path(tmp), extra=extra if args.min_replicas else None).start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERDER_")}
        env.update(
            HERDER_REDIS_SENTINELS=group.env_value,
            HERDER_REDIS_SENTINEL_MASTER=MASTER_NAME,
            HERDER_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",  # unused: Sentinel decides
            HERDER_LEASE_SECONDS=str(args.lease),
        )
        workers = [WorkerProc(env, f"b{n}-{i}", concurrency=args.concurrency) for i in range(args.workers)]
        settings = HerderSettings(
            redis_sentinels=group.env_value, redis_sentinel_master=MASTER_NAME, lease_seconds=args.lease
        )
        try:
            async with HerderClient(settings, tasks) as c:
                await poll(lambda: c.status("default"), lambda s: len(s.workers) >= args.workers, 0.2)
                acked: list[tuple[str, float]] = []
                stop = asyncio.Event()
                producer = asyncio.create_task(produce(c, acked, stop, args.long_every))
                await asyncio.sleep(args.warmup)
                old = group.nodes[0].port
                killed = time.time()
                if args.graceful:  # the old master stays up; the sentinels demote it later
                    if args.pause_ms:  # writes held on the old master until it is demoted
                        redis.Redis(port=old).execute_command("CLIENT", "PAUSE", args.pause_ms, "WRITE")
                    group.sentinels[0].client().execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
                else:
                    group.nodes[0].kill()
                progress(
                    f"run {n}: {'failover of' if args.graceful else 'killed'} master {old}, {len(acked)} acked"
                )
                new = await asyncio.to_thread(group.wait_failover, old, 120)
                failover_s = time.time() - killed
                after = await poll(lambda: asyncio.sleep(0, [a for a in acked if a[1] > killed]), bool, 0.01)
                first_t = after[0][1]
                await asyncio.sleep(args.after)
                stop.set()
                await producer
                st = await poll(
                    lambda: c.status("default"),
                    lambda s: s.ready + s.scheduled + s.active + s.waiting == 0,
                    0.5,
                )
                lost = dead = other = 0
                first_done = float("inf")
                for jid, t in acked:
                    try:
                        job = await c.get_job(jid, "default")
                    except NotFound:
                        lost += 1
                        continue
                    dead += job.state == "dead"
                    other += job.state not in ("dead", "succeeded")
                    if t > killed and job.state == "succeeded" and job.finished_at:
                        first_done = min(first_done, job.finished_at)
                first_done_s = first_done - killed
                progress(f"run {n}: new master {new}; {other} jobs in another state")
                return [
                    str(n),
                    fmt(failover_s),
                    fmt(first_t - killed),
                    fmt(first_done_s),
                    str(len(acked)),
                    str(lost),
                    str(dead),
                    str(st.counters.get("lease_expired", 0)),
                    str(st.counters.get("stale_finish", 0)),
                ]
        finally:
            for w in workers:
                w.stop()
            group.stop()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--lease", type=float, default=10.0, help="HERDER_LEASE_SECONDS (default 10, as shipped)")
    ap.add_argument("--long-every", type=int, default=20, help="every Nth job runs 2 s (the rest 0.05 s)")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds of load before the kill")
    ap.add_argument(
        "--graceful", action="store_true", help="SENTINEL FAILOVER instead of SIGKILL (the master stays up)"
    )
    ap.add_argument(
        "--pause-ms", type=int, default=0, help="with --graceful: CLIENT PAUSE <ms> WRITE on the master first"
    )
    ap.add_argument("--min-replicas", type=int, default=0, help="min-replicas-to-write on every node")
    ap.add_argument("--after", type=float, default=5.0, help="seconds of load after the first job done")
    args = ap.parse_args()
    rows = [await one_run(args, n) for n in range(1, args.runs + 1)]
    how = "SENTINEL FAILOVER" if args.graceful else "master SIGKILL"
    if args.graceful and args.pause_ms:
        how += f" after CLIENT PAUSE {args.pause_ms} WRITE"
    if args.min_replicas:
        how += f", min-replicas-to-write {args.min_replicas}"
    print(
        f"\nSentinel failover, {how} (3 sentinels, quorum 2, down-after {DOWN_AFTER_MS} ms; {args.workers} workers x "
        f"{args.concurrency}; lease {args.lease:g} s); {machine()}\n"
    )
    print(
        table(
            [
                "run",
                "failover s",
                "first ack s",
                "first done s",
                "acked",
                "lost",
                "dead",
                "lease exp.",
                "stale",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
