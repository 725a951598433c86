"""Autoscaling benchmark: replay a bursty arrival trace through the local pool (real redis-server,
real `herder worker` processes) under several controllers, side by side:

(a) herder     - Herder's policy and drain-aware reconciler (herder_operator.reconciler)
(b) keda       - a KEDA-style baseline with defaults: HPA average-per-replica target on the list
                 length (ready jobs), 30 s polling, 300 s cooldown before scale to zero, HPA's
                 300 s scale-down stabilization, and no choice of which pod dies (newest first,
                 SIGTERM with the default 30 s grace period; a task still running then is handed
                 back).
(c) keda-tuned - what a careful KEDA user configures: 5 s polling, a metric of ready + active
                 jobs (KEDA's Prometheus scaler on herder_queue_jobs), terminationGracePeriodSeconds
                 as long as the longest task (600 s: a SIGTERMed worker finishes its tasks), HPA's
                 default 300 s scale-down stabilization, 300 s cooldown to zero.
(d) scaledjob  - KEDA's ScaledJob shape: one pod per task, polled every 5 s, each pod a worker
                 with concurrency 1 that takes one task and exits; each pod pays a start-up cost
                 (POD_START_S scheduling/container start, plus the real process start).

    python bench/autoscale.py                 # standard trace, 5x compression (~2.5 min per controller)
    python bench/autoscale.py --trace quick   # short trace (~75 s per controller)
    python bench/autoscale.py --speed 1       # real time (~12 min per controller)

All durations (trace, tasks, both controllers' windows and grace periods) are divided by
--speed; reported times are multiplied back, so the table is in trace seconds. Worker-internal
timings (leases, heartbeats) are not compressed, which slightly favours neither side.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import subprocess
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
POD_START_S = 5.0  # scheduling + container start of a Job pod (trace seconds), before the process
CONTROLLERS = ("herder", "keda", "keda-tuned", "scaledjob")


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
    """HPA on `ready / target` (target = concurrency), KEDA activation and cooldown to zero.

    tuned: 5 s polling and ready + active as the metric (the grace period is set on the pool)."""

    def __init__(self, pool: LocalPool, client: HerderClient, speed: float, tuned: bool = False) -> None:
        self.pool, self.client = pool, client
        self.tuned = tuned
        self.poll = (5 if tuned else 30) / speed
        self.cooldown = 300 / speed
        self.stabilization = 300 / speed
        self.recs: list[tuple[float, int]] = []
        self.last_active = time.monotonic()

    async def step(self, now: float) -> tuple[int, int]:
        replicas = await self.pool.replicas()
        st = await self.client.status(QUEUE)
        # KEDA's redis scaler: LLEN of the list = waiting items only; tuned: ready + active.
        pending = st.ready + (st.active if self.tuned else 0)
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


class ScaledJobBaseline:
    """One Job pod per pending task (KEDA ScaledJob, default accurate strategy), at most
    MAX_REPLICAS x CONCURRENCY pods at once: a pod starts after POD_START_S, claims one task
    (concurrency 1) and is told to stop right after, so it exits when that task is done."""

    def __init__(self, pool: LocalPool, client: HerderClient, speed: float) -> None:
        self.pool, self.client, self.speed = pool, client, speed
        self.poll = 5 / speed
        self.pods: dict[
            str, tuple[float, subprocess.Popen[bytes] | None, bool]
        ] = {}  # id -> start, proc, told
        self.seq = 0
        self.next_poll = 0.0

    def alive(self) -> int:
        return sum(1 for _, p, _ in self.pods.values() if p is None or p.poll() is None)

    def _spawn(self, wid: str) -> subprocess.Popen[bytes]:
        env = self.pool.environment()
        return subprocess.Popen(
            self.pool.command(wid), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    async def step(self, now: float) -> tuple[int, int]:
        """Housekeeping on every call (pods start on time); new pods only every poll interval."""
        st = await self.client.status(QUEUE)
        busy = {w.id for w in st.workers if w.in_flight > 0}
        for wid, (start, proc, told) in list(self.pods.items()):
            if proc is None and now >= start:  # the pod's container starts now
                self.pods[wid] = (start, self._spawn(wid), told)
            elif proc is not None and not told and wid in busy:
                proc.send_signal(signal.SIGTERM)  # took its one task: finish it, then exit
                self.pods[wid] = (start, proc, True)
            elif proc is not None and proc.poll() is not None:
                del self.pods[wid]
        before = self.alive()
        if now < self.next_poll:
            return before, before
        self.next_poll = now + self.poll
        waiting = sum(1 for _, p, told in self.pods.values() if not told)  # pods not yet holding a task
        new = max(0, min(st.ready - waiting, MAX_REPLICAS * CONCURRENCY - len(self.pods)))
        for _ in range(new):
            self.seq += 1
            self.pods[f"job-{self.seq}"] = (now + POD_START_S / self.speed, None, False)
        return before, before + new

    def close(self) -> None:
        for _, proc, _ in self.pods.values():
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for _, proc, _ in self.pods.values():
            if proc is not None:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


async def run_one(name: str, trace: list[tuple[float, int, float]], horizon: float, speed: float) -> Result:
    res = Result(name)
    spec = herder_spec(speed)
    if name == "keda":
        spec = spec.model_copy(update={"drain_timeout_seconds": max(1, round(30 / speed))})
    if name == "scaledjob":
        worker = spec.worker.model_copy(update={"concurrency": 1})
        spec = spec.model_copy(update={"worker": worker})
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

            rec = Reconciler(spec, pool, client)
            keda = KedaBaseline(pool, client, speed, tuned=name == "keda-tuned")
            jobs = ScaledJobBaseline(pool, client, speed)

            async def control() -> None:
                period = {"herder": spec.poll_interval_seconds, "scaledjob": 0.2}.get(name, keda.poll)
                while not stop.is_set():
                    now = time.monotonic()
                    if name == "herder":
                        report = await rec.step(time.time())
                        before, after = report.replicas, report.new_replicas
                        if report.decision.direction == "up":
                            ups.append(now)
                    elif name == "scaledjob":
                        before, after = await jobs.step(now)
                        if after > before:
                            ups.append(now)
                    else:
                        before, after = await keda.step(now)
                        if after > before:
                            ups.append(now)
                    if after != before and name != "scaledjob":  # pods come and go per task there
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
                    alive += jobs.alive()  # pods of the ScaledJob baseline, start-up included
                    res.worker_seconds += alive * (now - last) * speed
                    last = now

            tasks = [asyncio.create_task(c()) for c in (control, sample)]
            await arrivals()
            await asyncio.sleep(max(0.0, start + horizon / speed - time.monotonic()))
            stop.set()
            await asyncio.gather(*tasks)
            jobs.close()
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
        changes = "per task" if r.name == "scaledjob" else str(r.replica_changes)
        rows.append(
            (
                r.name,
                f"{p95(r.waits):.1f}",
                f"{r.worker_seconds:.0f}",
                str(r.interrupted),
                changes,
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
    # One after the other: the ScaledJob baseline starts dozens of processes at once, and on a
    # shared machine their start-up would slow the others' workers (each gets the same trace).
    return [await run_one(n, trace, horizon, args.speed) for n in args.only or CONTROLLERS]


def main() -> None:
    parser = argparse.ArgumentParser(description="Herder vs KEDA-style baselines on a bursty trace")
    parser.add_argument("--only", nargs="+", choices=CONTROLLERS, help="run only these controllers")
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
