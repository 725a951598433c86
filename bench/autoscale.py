"""Autoscaling benchmark: replay a bursty arrival trace through the local pool (real redis-server,
real `herder worker` processes) under two controllers, side by side:

(a) herder   - Herder's policy and drain-aware reconciler (herder_operator.reconciler)
(b) keda     - a KEDA-style baseline: HPA average-per-replica target on the list length (ready
               jobs), 30 s polling, 300 s cooldown before scale to zero, HPA's 300 s scale-down
               stabilization, and no choice of which pod dies (newest first, SIGTERM with the
               default 30 s grace period; a task still running then is handed back).

    python bench/autoscale.py                 # standard trace, 5x time compression (~2.5 min)
    python bench/autoscale.py --speed 1       # real time (~12 min)

All durations (trace, tasks, both controllers' windows and grace periods) are divided by
--speed; reported times are multiplied back, so the table is in trace seconds. Worker-internal
timings (leases, heartbeats) are not compressed, which slightly favours neither side.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any

from herder.client import HerderClient
from herder.localredis import LocalRedis
from herder.models import JobState
from herder.settings import HerderSettings
from herder_operator.pools.local import LocalPool
from herder_operator.reconciler import Reconciler
from herder_operator.spec import TaskQueueSpec

# (arrival time s, number of tasks, task duration s): agent-like tasks, longer than a 30 s grace.
# Arrivals fall between both controllers' polls (not on multiples of 5 s), so that the
# backlog-to-decision figure includes the wait for the next poll.
TRACES: dict[str, list[tuple[float, int, float]]] = {
    "standard": [(7, 30, 90), (153, 10, 90), (343, 25, 90), (422, 5, 30)],
    "quick": [(7, 20, 60), (123, 15, 60)],
}
HORIZON = {"standard": 720.0, "quick": 360.0}
CONCURRENCY = 5
MAX_REPLICAS = 6
QUEUE = "bench"


@dataclass
class Result:
    name: str
    waits: list[float] = field(default_factory=list)
    interrupted: int = 0
    failed: int = 0
    worker_seconds: float = 0.0
    replica_changes: int = 0
    decision_latency: list[float] = field(default_factory=list)
    unfinished: int = 0


def p95(xs: list[float]) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, math.ceil(0.95 * len(s)) - 1)]


def herder_spec(speed: float) -> TaskQueueSpec:
    def sec(x: float) -> int:
        return max(1, round(x / speed))

    return TaskQueueSpec.model_validate(
        {
            "queue": QUEUE,
            "redis": {"url": "redis://unused:6379/0"},
            "worker": {"image": "bench", "concurrency": CONCURRENCY},
            "minReplicas": 0,
            "maxReplicas": MAX_REPLICAS,
            "targetUtilization": 100,
            "scaleUp": {"stabilizationSeconds": 0},
            "scaleDown": {"stabilizationSeconds": sec(60), "cooldownSeconds": sec(120)},
            "pollIntervalSeconds": sec(5),
            "drainTimeoutSeconds": sec(600),
        }
    )


class KedaBaseline:
    """HPA on `ready / target` (target = concurrency), KEDA activation and cooldown to zero."""

    def __init__(self, pool: LocalPool, client: HerderClient, speed: float) -> None:
        self.pool, self.client = pool, client
        self.poll = 30 / speed
        self.cooldown = 300 / speed
        self.stabilization = 300 / speed
        self.recs: list[tuple[float, int]] = []
        self.last_active = time.monotonic()

    async def step(self, now: float) -> tuple[int, int]:
        replicas = await self.pool.replicas()
        st = await self.client.status(QUEUE)
        pending = st.ready  # KEDA's redis scaler: LLEN of the list = waiting items only
        if pending > 0:
            self.last_active = now
        rec = min(MAX_REPLICAS, max(1, math.ceil(pending / CONCURRENCY)))
        self.recs = [(t, r) for t, r in self.recs if t > now - self.stabilization] + [(now, rec)]
        if replicas == 0:
            desired = 1 if pending > 0 else 0  # KEDA activation
        elif now - self.last_active >= self.cooldown:
            desired = 0  # KEDA cooldownPeriod
        elif rec > replicas:
            desired = rec  # HPA scales up at once
        else:
            desired = max(r for _, r in self.recs)  # HPA scale-down stabilization: highest in window
        if desired != replicas:
            await self.pool.scale_to(desired)  # no `remove`: the ReplicaSet picks (newest first)
        return replicas, desired


async def run_one(name: str, trace: list[tuple[float, int, float]], horizon: float, speed: float) -> Result:
    res = Result(name)
    spec = herder_spec(speed)
    if name == "keda":
        spec = spec.model_copy(update={"drain_timeout_seconds": max(1, round(30 / speed))})
    with LocalRedis() as redis:
        pool = LocalPool(name, spec, redis.url, replicas=0)
        settings = HerderSettings(redis_url=redis.url)
        async with HerderClient(settings) as client:
            start = time.monotonic()
            bursts: list[float] = []
            ups: list[float] = []
            ids: list[str] = []
            stop = asyncio.Event()

            async def arrivals() -> None:
                for at, n, dur in trace:
                    await asyncio.sleep(max(0.0, start + at / speed - time.monotonic()))
                    arrived = time.monotonic()
                    for _ in range(n):
                        ids.append((await client.enqueue(QUEUE, "sleep", {"seconds": dur / speed})).id)
                    # A backlog: more work than the running replicas can take at once.
                    st = await client.status(QUEUE)
                    need = min(MAX_REPLICAS, math.ceil((st.ready + st.active) / CONCURRENCY))
                    if need > await pool.replicas():
                        bursts.append(arrived)

            async def control() -> None:
                rec = Reconciler(spec, pool, client)
                keda = KedaBaseline(pool, client, speed)
                period = spec.poll_interval_seconds if name == "herder" else keda.poll
                while not stop.is_set():
                    now = time.monotonic()
                    if name == "herder":
                        report = await rec.step(time.time())
                        before, after = report.replicas, report.new_replicas
                        if report.decision.direction == "up":
                            ups.append(now)
                    else:
                        before, after = await keda.step(now)
                        if after > before:
                            ups.append(now)
                    if after != before:
                        res.replica_changes += 1
                    try:
                        await asyncio.wait_for(stop.wait(), period)
                    except TimeoutError:
                        pass

            async def sample() -> None:
                last = time.monotonic()
                while not stop.is_set():
                    await asyncio.sleep(0.25)
                    now = time.monotonic()
                    alive = len(pool.procs) + sum(1 for p, _ in pool.stopping.values() if p.poll() is None)
                    res.worker_seconds += alive * (now - last) * speed
                    last = now

            tasks = [asyncio.create_task(c()) for c in (control, sample)]
            await arrivals()
            await asyncio.sleep(max(0.0, start + horizon / speed - time.monotonic()))
            stop.set()
            await asyncio.gather(*tasks)
            for b in bursts:
                later = [u for u in ups if u >= b - 1e-3]
                if later:
                    res.decision_latency.append((later[0] - b) * speed)
            for jid in ids:
                job = await client.get_job(jid, QUEUE)
                if job.state != JobState.succeeded:
                    res.unfinished += 1
                    continue
                if job.errors:
                    res.interrupted += 1
                assert job.started_at is not None and job.enqueued_at is not None
                res.waits.append((job.started_at - job.enqueued_at) * speed)
        await asyncio.to_thread(pool.close, 30)
    return res


def table(results: list[Result]) -> str:
    rows = [
        (
            "controller",
            "p95 wait s",
            "worker-s",
            "interrupted",
            "replica changes",
            "backlog->up s (max)",
            "unfinished",
        ),
    ]
    for r in results:
        lat = f"{max(r.decision_latency):.1f}" if r.decision_latency else "-"
        rows.append(
            (
                r.name,
                f"{p95(r.waits):.1f}",
                f"{r.worker_seconds:.0f}",
                str(r.interrupted),
                str(r.replica_changes),
                lat,
                str(r.unfinished),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


async def main_async(args: Any) -> list[Result]:
    trace = TRACES[args.trace]
    horizon = HORIZON[args.trace]
    return list(await asyncio.gather(*(run_one(n, trace, horizon, args.speed) for n in ("herder", "keda"))))


def main() -> None:
    parser = argparse.ArgumentParser(description="Herder vs a KEDA-style baseline on a bursty trace")
    parser.add_argument("--trace", choices=sorted(TRACES), default="standard")
    parser.add_argument("--speed", type=float, default=5.0, help="time compression factor")
    args = parser.parse_args()
    t0 = time.monotonic()
    results = asyncio.run(main_async(args))
    print(
        f"trace={args.trace} speed={args.speed} tasks={sum(n for _, n, _ in TRACES[args.trace])} "
        f"concurrency={CONCURRENCY} maxReplicas={MAX_REPLICAS} wall={time.monotonic() - t0:.0f}s"
    )
    print(table(results))


if __name__ == "__main__":
    main()
