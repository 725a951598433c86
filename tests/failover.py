"""A master failover while work runs, with explicit accounting: shared by the Redis Cluster
failover test (tests/test_cluster_failover.py, which asserts on conditions) and its benchmark
(bench/cluster_failover.py, which measures resume times and loss over several runs).

The producer enqueues jobs with ids it chose, round-robin over the queues, and records which
enqueues Redis acknowledged. After the failover and the drain, every id is looked up: an
acknowledged job that exists nowhere was lost (an acknowledged write the dead master had not yet
replicated: Redis replication is asynchronous); every job that exists must have ended succeeded
or dead-lettered."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster_proc import NODE_TIMEOUT_MS, RedisClusterProc
from herder.client import HerderClient
from herder.keys import QueueKeys
from herder.settings import HerderSettings
from procs import WorkerProc, chaos_tasks

FINAL = ("succeeded", "dead")


def one_queue_per_master(cluster: RedisClusterProc, prefix: str = "herder", n: int = 60) -> list[str]:
    """Queue names whose slots are served by different masters, one per master."""
    picked: dict[int, str] = {}
    for i in range(n):
        q = f"q{i}"
        picked.setdefault(cluster.node_for_key(QueueKeys(prefix, q).ready).port, q)
    if len(picked) != len(cluster.masters()):
        raise RuntimeError(f"no queue name found for every master: {picked}")
    return list(picked.values())


def worker_env(cluster: RedisClusterProc, lease_seconds: float) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HERDER_REDIS_URL=cluster.url, HERDER_REDIS_CLUSTER="true", HERDER_LEASE_SECONDS=str(lease_seconds)
    )
    env.pop("HERDER_APP", None)
    return env


@dataclass
class Producer:
    """Enqueues `work` jobs round-robin over `queues` until stopped; records, per id, when Redis
    acknowledged it (client clock) or that the call failed (no acknowledgement)."""

    client: HerderClient
    queues: list[str]
    seconds: float = 0.02  # how long each job runs
    pause: float = 0.004  # between enqueues: a steady stream, not a flood
    sent: dict[str, float] = field(default_factory=dict)  # id -> when its enqueue was sent
    acked: dict[str, float] = field(default_factory=dict)  # id -> time of the ack
    failed: dict[str, str] = field(default_factory=dict)  # ids whose enqueue raised -> the error
    queue_of: dict[str, str] = field(default_factory=dict)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, loops: int = 1) -> None:
        """`loops` concurrent enqueue loops (each waits for its ack before the next)."""
        counter = iter(range(1 << 62))

        async def loop() -> None:
            while not self._stop.is_set():
                i = next(counter)
                q = self.queues[i % len(self.queues)]
                jid = f"{q}-{i}"
                self.queue_of[jid] = q
                self.sent[jid] = time.time()
                try:
                    await self.client.enqueue(q, "work", {"seconds": self.seconds}, id=jid)
                    self.acked[jid] = time.time()
                except Exception as exc:  # any failure during the failover: not acknowledged
                    self.failed[jid] = f"{type(exc).__name__}: {str(exc)[:80]}"
                    await asyncio.sleep(0.05)
                await asyncio.sleep(self.pause)

        await asyncio.gather(*(loop() for _ in range(loops)))

    def stop(self) -> None:
        self._stop.set()

    def acked_on(self, queue: str, sent_after: float = 0.0) -> list[str]:
        """Acknowledged ids of `queue` whose enqueue was sent after `sent_after`."""
        return [j for j in self.acked if self.queue_of[j] == queue and self.sent[j] > sent_after]


@dataclass
class Report:
    queues: list[str]
    failed_queue: str
    killed_at: float
    promoted_after: float  # kill -> the replica serves the slot and the cluster is ok
    acked_ids: set[str]  # acknowledged enqueues, all queues
    acked_before_kill_failed_queue: int
    unacked: dict[str, int]  # per queue: enqueues that raised (never acknowledged)
    errors: dict[str, int]  # what those enqueues raised (error type and message head -> count)
    found: dict[str, str | None]  # id -> final state (None: exists nowhere)
    lost_acked: list[str]  # acknowledged, exists nowhere
    lost_ack_ages: list[float]  # for each lost job: kill time - its ack time (s)
    kill_returned_after: float  # kill -> the SIGKILLed process reaped (acks before this may be lost)
    not_final: dict[str, str]  # exists, but not succeeded/dead (must be empty)
    client_resumed_after: float | None  # kill -> first ack on the failed queue of an enqueue sent after it
    worker_resumed_after: float | None  # kill -> first job of the failed queue finished after it

    def row(self) -> dict[str, Any]:
        return {
            "promoted_s": round(self.promoted_after, 2),
            "client_resume_s": None
            if self.client_resumed_after is None
            else round(self.client_resumed_after, 2),
            "worker_resume_s": None
            if self.worker_resumed_after is None
            else round(self.worker_resumed_after, 2),
            "acked": len(self.acked_ids),
            "acked_lost": len(self.lost_acked),
            "lost_window_ms": round(max(self.lost_ack_ages) * 1000, 1) if self.lost_ack_ages else 0,
            "unacked_failed_queue": self.unacked[self.failed_queue],
            "unacked_other_queues": sum(n for q, n in self.unacked.items() if q != self.failed_queue),
            "not_final": len(self.not_final),
        }


async def wait_until(probe: Any, what: str, timeout: float, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = last = await probe()
        except Exception as exc:  # the cluster may be failing over: try again
            value, last = None, exc
        if value is True:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s; last: {last!r}")
        await asyncio.sleep(every)


async def failover_run(
    directory: Path,
    *,
    lease_seconds: float = 2.0,
    concurrency: int = 10,
    full_coverage: bool = False,
    producers: int = 4,
    pause: float = 0.002,
    node_timeout_ms: int = NODE_TIMEOUT_MS,
) -> Report:
    """Start a 3-master cluster with a replica each (cluster-require-full-coverage as given: the
    recommended "no" by default) and one `herder worker` process per master's queue; produce
    (`producers` concurrent enqueue loops, `pause` s between a loop's enqueues); SIGKILL the
    master of the first queue; keep producing until that queue's enqueues are acknowledged
    again; stop producing, wait for every queue to drain; account."""
    cluster = RedisClusterProc(
        directory / "cluster",
        masters=3,
        replicas=1,
        full_coverage=full_coverage,
        node_timeout_ms=node_timeout_ms,
    ).start()
    workers: list[WorkerProc] = []
    try:
        queues = one_queue_per_master(cluster)
        failed_queue = queues[0]
        victim = cluster.node_for_key(QueueKeys("herder", failed_queue).ready)
        env = worker_env(cluster, lease_seconds)
        workers = [
            WorkerProc(env, f"w-{q}", queue=q, concurrency=concurrency, log=directory / f"worker-{q}.log")
            for q in queues
        ]
        settings = HerderSettings(redis_url=cluster.url, redis_cluster=True, lease_seconds=lease_seconds)
        # A separate client for the final accounting: the producer's saw the failover.
        async with HerderClient(settings, chaos_tasks()) as client, HerderClient(settings) as reader:
            producer = Producer(client, queues, pause=pause)
            task = asyncio.create_task(producer.run(producers))

            async def working_everywhere() -> bool | list[Any]:
                done = [(await reader.status(q)).counters.get("succeeded", 0) for q in queues]
                return all(n >= 20 for n in done) or done

            await wait_until(working_everywhere, "work running on every queue before the kill", 60)
            killed_at = time.time()
            acked_before = len(producer.acked_on(failed_queue))
            cluster.kill(victim)
            kill_done = time.time()
            kill_returned_after = kill_done - killed_at

            def promoted() -> bool:
                node = cluster.node_for_key(QueueKeys("herder", failed_queue).ready)
                return node is not victim and cluster.healthy()

            await wait_until(lambda: asyncio.to_thread(promoted), "replica promoted", 60)
            promoted_after = time.time() - killed_at

            async def acked_again() -> bool | dict[str, int]:
                return len(producer.acked_on(failed_queue, kill_done)) >= 20 or dict(
                    Counter(list(producer.failed.values())[-20:])
                )

            await wait_until(acked_again, "enqueues acknowledged on the promoted master", 60)
            producer.stop()
            await task

            async def drained() -> bool | list[Any]:
                left = [await reader.status(q) for q in queues]
                return not any(s.ready or s.scheduled or s.active or s.waiting for s in left) or left

            await wait_until(drained, "every queue drained", 120, every=0.2)
            found: dict[str, str | None] = {}
            finished_after: list[float] = []
            for jid, q in producer.queue_of.items():
                raw = await reader.redis.hmget(reader.keys(q).job(jid), ["state", "finished_at"])
                found[jid] = raw[0]
                finished = float(raw[1]) / 1000 if raw[1] is not None else 0.0  # stored in ms
                if (
                    q == failed_queue and finished > kill_done
                ):  # only the promoted replica: the old master is gone
                    finished_after.append(finished)
            lost = [j for j in producer.acked if found[j] is None]
            # Enqueues sent once the old master was gone: their acks come from the promoted one.
            after_kill = [producer.acked[j] for j in producer.acked_on(failed_queue, kill_done)]
            return Report(
                queues=queues,
                failed_queue=failed_queue,
                killed_at=killed_at,
                promoted_after=promoted_after,
                acked_ids=set(producer.acked),
                acked_before_kill_failed_queue=acked_before,
                unacked={q: sum(1 for j in producer.failed if producer.queue_of[j] == q) for q in queues},
                found=found,
                errors=dict(Counter(producer.failed.values())),
                lost_acked=sorted(lost),
                lost_ack_ages=sorted(killed_at - producer.acked[j] for j in lost),
                kill_returned_after=kill_returned_after,
                not_final={j: s for j, s in found.items() if s is not None and s not in FINAL},
                client_resumed_after=min(after_kill) - killed_at if after_kill else None,
                worker_resumed_after=min(finished_after) - killed_at if finished_after else None,
            )
    finally:
        for w in workers:
            w.stop()
        cluster.stop()
