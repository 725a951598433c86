"""Sentinel failover, proven against real processes: a master, two replicas and three
redis-sentinel processes (tests/sentinel_proc.py), `herder worker` processes and a producer that
know only HERDER_REDIS_SENTINELS and the master's name. The master is killed with SIGKILL while
work runs; the sentinels promote a replica; workers and producer resume on it; every
acknowledged job ends succeeded or dead, or is counted as lost to asynchronous replication."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.exceptions import RedisError

from helpers import assert_consistent, running_worker, wait_for, wait_state
from herder.client import HerderClient
from herder.errors import NotFound
from herder.settings import HerderSettings
from herder.tasks import JobContext, TaskSet
from procs import WorkerProc
from redis_proc import RedisProc, free_port
from sentinel_proc import MASTER_NAME, SentinelGroup

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(420)]

LEASE = 2.0


def _apps_tasks() -> TaskSet:
    sys.path.insert(0, str(Path(__file__).parent / "apps"))
    from chaos_app import tasks

    return tasks


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    g = SentinelGroup(tmp_path / "sentinel").start()
    try:
        yield g
    finally:
        g.stop()


def sentinel_env(g: SentinelGroup) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERDER_")}
    env["HERDER_REDIS_SENTINELS"] = g.env_value
    env["HERDER_REDIS_SENTINEL_MASTER"] = MASTER_NAME
    # A port nobody listens on: a process that ignored the Sentinel settings would fail loudly
    # (the default URL would reach the machine's own Redis instead).
    env["HERDER_REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    env["HERDER_LEASE_SECONDS"] = str(LEASE)
    return env


def sentinel_settings(g: SentinelGroup) -> HerderSettings:
    return HerderSettings(
        redis_sentinels=g.env_value,
        redis_sentinel_master=MASTER_NAME,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        lease_seconds=LEASE,
    )


# ---- the master killed while work runs ---------------------------------------------------------


async def _produce(c: HerderClient, acked: list[tuple[str, float]], stop: asyncio.Event) -> None:
    """Enqueue until stopped, recording every acknowledged id; errors (the outage) are retried
    with a new id: an enqueue whose reply was lost may exist or not, and is not counted."""
    i = 0
    while not stop.is_set():
        i += 1
        jid = f"p{i}"
        # mostly short jobs; every 20th runs 2 s, so jobs are in flight whenever the master dies
        payload = {"seconds": 2.0 if i % 20 == 0 else 0.05}
        try:
            await c.enqueue("default", "work", payload, id=jid)
        except (RedisError, OSError):
            await asyncio.sleep(0.05)
            continue
        acked.append((jid, time.monotonic()))
        await asyncio.sleep(0.01)


def _client_calls(port: int) -> dict[str, int]:
    """Commands clients ran on a node (the replication stream carries no EVALSHA or BLPOP)."""
    stats = redis.Redis(port=port, decode_responses=True).info("commandstats")
    names = ("cmdstat_evalsha", "cmdstat_evalsha_ro", "cmdstat_eval", "cmdstat_blpop", "cmdstat_hgetall")
    return {n: int(stats[n]["calls"]) for n in names if n in stats}


async def test_master_sigkill_failover_workers_and_producer_resume(
    group: SentinelGroup, tmp_path: Path
) -> None:
    env = sentinel_env(group)
    logs = tmp_path / "workers.log"
    workers = [WorkerProc(env, f"s{i}", concurrency=8, log=logs) for i in range(2)]
    old = group.nodes[0].port
    try:
        async with HerderClient(sentinel_settings(group), _apps_tasks()) as c:
            await wait_for(lambda: c.status("default"), lambda s: len(s.workers) == 2, timeout=60, every=0.2)
            acked: list[tuple[str, float]] = []
            stop = asyncio.Event()
            producer = asyncio.create_task(_produce(c, acked, stop))
            # Kill once work flows: enqueues acknowledged, jobs finished, and long ones running.
            await wait_for(
                lambda: c.status("default"),
                lambda s: len(acked) >= 100 and s.counters.get("succeeded", 0) >= 20 and s.active >= 1,
                timeout=60,
                every=0.1,
            )
            group.nodes[0].kill()  # SIGKILL, by PID
            killed = time.monotonic()
            new = await asyncio.to_thread(group.wait_failover, old)
            failover_s = time.monotonic() - killed
            assert new != old

            # Work resumed: a job acknowledged after the kill succeeds, and it is on the new master.
            first_after = (
                await wait_for(
                    lambda: asyncio.sleep(0, [j for j, t in acked if t > killed]),
                    bool,
                    timeout=60,
                    every=0.05,
                )
            )[0]
            await wait_state(c, first_after, "succeeded", timeout=60)
            resumed_s = time.monotonic() - killed
            assert redis.Redis(port=new).exists(c.keys("default").job(first_after))
            assert c.redis.connection_pool.master_address == ("127.0.0.1", new)
            # both workers heartbeat on the new master
            await wait_for(
                lambda: c.status("default"),
                lambda s: {w.id for w in s.workers} == {"s0", "s1"},
                timeout=60,
                every=0.2,
            )

            # Phase 2: the old master returns with its stale AOF, as a master. The sentinels turn
            # it into a replica of the new one; meanwhile no client may write to it or read it.
            group.nodes[0].start()
            try:
                current = await asyncio.to_thread(group.wait_settled_elsewhere, old, 180)
            except TimeoutError as exc:
                raise AssertionError(f"{exc}: {group.describe()}") from None
            if current != new:  # a second failover (a starved master looked down): still valid
                print(f"\nsentinels failed over once more under load: {new} -> {current}")
            role = redis.Redis(port=old, decode_responses=True).info("replication")
            assert role["role"] == "slave" and int(role["master_port"]) == current
            n_before = len(acked)
            await wait_for(lambda: asyncio.sleep(0, len(acked)), lambda n: n >= n_before + 50, timeout=60)
            stop.set()
            await asyncio.wait_for(producer, 30)
            assert _client_calls(old) == {}, "a client talked to the demoted old master"

            # Every acknowledged job ends succeeded or dead, or never reached the new master.
            st = await wait_for(
                lambda: c.status("default"),
                lambda s: s.ready + s.scheduled + s.active + s.waiting == 0,
                timeout=180,
                every=0.5,
            )
            lost, dead, stuck = [], [], []
            for jid, _ in acked:
                try:
                    j = await c.get_job(jid, "default")
                except NotFound:
                    lost.append(jid)
                    continue
                if j.state == "dead":
                    dead.append(jid)
                elif j.state != "succeeded":
                    stuck.append((jid, j.state))
            assert stuck == []
            assert all(w.proc.poll() is None for w in workers), "a worker died in the failover"
            text = logs.read_text()
            assert "redis unreachable" in text and "redis reachable again" in text
            await assert_consistent(c)
            print(
                f"\nsentinel failover: {old} -> {new} seen by the sentinels after {failover_s:.2f}s; "
                f"first job enqueued after the kill succeeded {resumed_s:.2f}s after it; "
                f"acked {len(acked)}, lost (async replication) {len(lost)}, dead {len(dead)}, "
                f"lease expiries {st.counters.get('lease_expired', 0)}, "
                f"stale finishes {st.counters.get('stale_finish', 0)}"
            )
    finally:
        for w in workers:
            w.stop()


# ---- a claim lost to asynchronous replication --------------------------------------------------


async def test_claim_lost_in_failover_reruns_once_without_clobbering_the_new_claim(
    redis_server: RedisProc,
) -> None:
    """The new master may lack the last claims of the old one: a job this worker runs is ready
    there, and the worker's next claim call both reports it lost and hands it out again, to the
    same worker, with the same lease token (the attempt number). The old copy must stop without
    writing anything, and the new copy must run to the end as the one the worker tracks."""
    tasks = TaskSet()
    release = asyncio.Event()
    runs: list[int] = []
    stopped: list[int] = []

    @tasks.task(max_attempts=5)
    async def hold(ctx: JobContext, payload: Any) -> str:
        runs.append(ctx.attempt)
        try:
            await release.wait()
        except asyncio.CancelledError:
            stopped.append(ctx.attempt)
            raise
        return "done"

    settings = HerderSettings(redis_url=redis_server.url, lease_seconds=LEASE)
    async with HerderClient(settings, tasks) as c:
        j = await c.enqueue("default", "hold", None)
        keys = c.keys("default")
        # What the new master would hold: the job as it was before this claim replicated.
        before = await c.redis.dump(keys.job(j.id))
        score = await c.redis.zscore(keys.ready, j.id)
        async with running_worker(settings, tasks=tasks, concurrency=2) as w:
            await wait_for(lambda: asyncio.sleep(0, runs), lambda r: r == [1])
            async with c.redis.pipeline(transaction=True) as pipe:
                pipe.restore(keys.job(j.id), 0, before, replace=True)
                pipe.zrem(keys.active, j.id)
                pipe.zadd(keys.ready, {j.id: score})
                pipe.rpush(keys.wake, "1")
                await pipe.execute()
            await wait_for(lambda: asyncio.sleep(0, runs), lambda r: len(r) >= 2)
            # The old copy is gone; the worker tracks the new one, which runs on.
            await wait_for(lambda: asyncio.sleep(0, stopped), lambda s: s == [1])
            second = w.running[j.id].task
            assert list(w.running) == [j.id] and not second.done()
            release.set()
            done = await wait_state(c, j.id, "succeeded", "dead", "ready", "scheduled")
            await wait_for(lambda: asyncio.sleep(0, dict(w.running)), lambda r: r == {})
        assert done.state == "succeeded" and done.result == "done", done
        assert done.attempts == 1 and done.errors == [], done.errors
        assert runs == [1, 1]
        st = await c.status("default")
        assert st.counters.get("stale_finish", 0) == 0
        await assert_consistent(c)


# ---- a sentinel that does not answer -----------------------------------------------------------


async def test_a_hung_sentinel_is_skipped(group: SentinelGroup) -> None:
    """The first sentinel of the list accepts connections but never replies (SIGSTOP): clients
    and workers must ask the next one instead of waiting for ever."""
    hung = group.sentinels[0]
    assert hung.proc is not None
    os.kill(hung.proc.pid, signal.SIGSTOP)
    try:
        s = sentinel_settings(group)
        async with HerderClient(s) as c, running_worker(s):
            r = await asyncio.wait_for(c.enqueue("default", "echo", {"via": "second sentinel"}), 30)
            assert (await wait_state(c, r.id, "succeeded")).result == {"via": "second sentinel"}
    finally:
        os.kill(hung.proc.pid, signal.SIGCONT)


# ---- a master that refuses writes for a while ---------------------------------------------------


def _error_count(port: int, code: str) -> int:
    stats = redis.Redis(port=port, decode_responses=True).info("errorstats")
    return int(stats.get(f"errorstat_{code}", {}).get("count", 0))


async def test_worker_rides_out_noreplicas_and_stores_the_outcome_later(redis_server: RedisProc) -> None:
    """`min-replicas-to-write` (the advice that bounds the failover loss window) makes a master
    without enough replicas answer NOREPLICAS to every write. That is an outage, not a bug: the
    worker must keep retrying (not crash) and store a finished job's outcome once writes are
    accepted again (not drop it and leave the job to its lease)."""
    tasks = TaskSet()
    release = asyncio.Event()

    @tasks.task(max_attempts=5)
    async def hold(ctx: JobContext, payload: Any) -> str:
        await release.wait()
        return "done"

    admin = redis.Redis(port=redis_server.port)
    settings = HerderSettings(redis_url=redis_server.url, lease_seconds=LEASE)
    async with HerderClient(settings, tasks) as c:
        j = await c.enqueue("default", "hold", None)
        async with running_worker(settings, tasks=tasks) as w:
            await wait_state(c, j.id, "active")
            admin.config_set("min-replicas-to-write", 1)
            release.set()
            # refused several times: the finish write and the claim loop keep retrying
            await wait_for(
                lambda: asyncio.sleep(0, _error_count(redis_server.port, "NOREPLICAS")), lambda n: n >= 4
            )
            admin.config_set("min-replicas-to-write", 0)
            done = await wait_state(c, j.id, "succeeded", "dead", "ready", "scheduled")
            assert done.state == "succeeded" and done.attempts == 1, done
            later = await c.enqueue("default", "hold", None)
            assert (await wait_state(c, later.id, "succeeded")).result == "done"
            assert w.exit_code == 0
        assert (await c.status("default")).counters.get("lease_expired", 0) == 0


async def test_worker_rides_out_a_demoted_master_on_a_plain_url(
    redis_server: RedisProc, tmp_path: Path
) -> None:
    """Without Sentinel (a URL whose name moves to the new master), the worker's connections
    may still reach the demoted master: its BLPOP is cut with UNBLOCKED and every write gets
    READONLY. The worker must wait it out, not crash, and resume when writes are accepted."""
    other = RedisProc(tmp_path / "other").start()
    admin = redis.Redis(port=redis_server.port)
    settings = HerderSettings(redis_url=redis_server.url, lease_seconds=LEASE)
    try:
        async with HerderClient(settings) as c, running_worker(settings, concurrency=2) as w:
            first = await c.enqueue("default", "echo", {"n": 1})
            await wait_state(c, first.id, "succeeded")
            admin.replicaof("127.0.0.1", other.port)
            await wait_for(
                lambda: asyncio.sleep(0, _error_count(redis_server.port, "READONLY")), lambda n: n >= 3
            )
            assert _error_count(redis_server.port, "UNBLOCKED") >= 1  # the idle worker was in BLPOP
            admin.replicaof("NO", "ONE")
            later = await c.enqueue("default", "echo", {"n": 2})
            assert (await wait_state(c, later.id, "succeeded")).result == {"n": 2}
            assert w.exit_code == 0
    finally:
        other.stop()


# ---- a failover that leaves the old master up ----------------------------------------------------


async def test_graceful_failover_clients_and_workers_move_before_the_old_master_is_demoted(
    group: SentinelGroup,
) -> None:
    """SENTINEL FAILOVER (maintenance) or a partition leaves the old master up and writable
    until the sentinels demote it, about 10 s later (they wait to see it in INFO); everything
    written there meanwhile is discarded when it resyncs. redis-py asks the sentinels only when
    it opens a connection, so a busy client kept writing to the old master for that whole
    time. Clients and workers must follow the new master while the old one is still up."""
    settings = sentinel_settings(group)
    old = group.nodes[0].port
    async with HerderClient(settings) as c, running_worker(settings, name="follower"):
        first = await c.enqueue("default", "echo", {"n": 0})
        await wait_state(c, first.id, "succeeded")
        group.sentinels[0].client().execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
        new = await asyncio.to_thread(group.wait_failover, old)
        on_new = redis.Redis(port=new, decode_responses=True)

        async def probe() -> tuple[str, bool]:
            job = await c.enqueue("default", "echo", {"n": 1})
            await asyncio.sleep(0.2)  # pacing only; the condition below decides
            state = on_new.hget(c.keys("default").job(job.id), "state")
            return redis.Redis(port=old).info("replication")["role"], state == "succeeded"

        role, done_on_new = await wait_for(probe, lambda v: v[1] or v[0] != "master", timeout=60)
        assert done_on_new and role == "master", "clients kept writing to the old master until it was demoted"
