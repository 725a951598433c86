"""Chaos: workers killed with SIGKILL, redis-server killed and restarted on its AOF, Redis gone
for 20 s under load. Each test is bounded and stops everything it started."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest
from redis.exceptions import RedisError

from helpers import assert_consistent, wait_for, wait_state
from herder.client import HerderClient, JobRequest
from herder.settings import HerderSettings
from procs import WorkerProc
from redis_proc import RedisProc

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(480)]

LEASE = 2.0


def chaos_client(url: str) -> HerderClient:
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "apps"))
    from chaos_app import tasks

    return HerderClient(HerderSettings(redis_url=url, lease_seconds=LEASE), tasks)


async def test_killed_worker_job_is_taken_over_and_succeeds(
    worker_env: dict[str, str], redis_server: RedisProc
) -> None:
    a = WorkerProc(worker_env, "victim", concurrency=2)
    b = None
    async with chaos_client(redis_server.url) as c:
        try:
            # Still running on the victim whenever the kill comes (no race against a fixed sleep).
            long = await c.enqueue(
                "default", "work", {"seconds": 0.5, "first_attempt_seconds": 300}, timeout=600
            )
            others = [(await c.enqueue("default", "work", {"seconds": 0.1})).id for _ in range(20)]
            j = await wait_state(c, long.id, "active")
            assert j.worker == "victim"
            b = WorkerProc(worker_env, "rescuer", concurrency=4)
            await wait_for(lambda: c.status("default"), lambda s: any(w.id == "rescuer" for w in s.workers))
            a.kill()
            killed_at = time.time()
            # the job's own timeout is 600 s (stock arq: 610 s before a re-run); the lease brings it back
            j = await wait_for(
                lambda: c.get_job(long.id),
                lambda x: x.state == "active" and x.worker == "rescuer",
                timeout=LEASE * 4,
            )
            assert j.started_at is not None and j.started_at - killed_at < LEASE * 4
            j = await wait_state(c, long.id, "succeeded", timeout=20)
            assert j.attempts == 2 and j.errors[0].kind == "lease_expired" and j.errors[0].worker == "victim"
            for i in others:
                await wait_state(c, i, "succeeded", timeout=20)
            assert (await c.status("default")).counters["lease_expired"] >= 1
        finally:
            a.stop()
            if b:
                b.stop()
        await assert_consistent(c)


async def test_random_sigkills_lose_nothing(
    worker_env: dict[str, str], redis_server: RedisProc, tmp_path: Path
) -> None:
    n_jobs, n_workers = 2000, 4
    rng = random.Random(7)
    async with chaos_client(redis_server.url) as c:
        reqs = [
            JobRequest(task="work", payload={"seconds": rng.uniform(0.05, 0.4)}, id=f"j{i}")
            for i in range(n_jobs)
        ]
        await c.enqueue_many("default", reqs)
        workers = [WorkerProc(worker_env, f"w{i}", concurrency=8) for i in range(n_workers)]
        spawned = n_workers
        kills = 0
        deadline = time.monotonic() + 180
        try:
            while time.monotonic() < deadline:
                st = await c.status("default")
                if st.ready + st.scheduled + st.active == 0:
                    break
                await asyncio.sleep(2)
                victim = rng.randrange(len(workers))
                workers[victim].kill()
                kills += 1
                workers[victim] = WorkerProc(worker_env, f"w{spawned}", concurrency=8)
                spawned += 1
            st = await wait_for(
                lambda: c.status("default"),
                lambda s: s.ready + s.scheduled + s.active == 0,
                timeout=180,
                every=0.5,
            )
        finally:
            for w in workers:
                w.stop()
        assert kills >= 5
        jobs = [await c.get_job(f"j{i}") for i in range(n_jobs)]
        states = {j.state for j in jobs}
        assert states <= {"succeeded", "dead"}, states
        execs = await c.redis.mget([f"test:exec:j{i}" for i in range(n_jobs)])
        expiries = st.counters.get("lease_expired", 0)
        extra_claims = sum(j.attempts - 1 for j in jobs)
        double_execs = sum(int(e or 0) - 1 for e in execs if e)
        # every extra claim came from a lease expiry, and so did every double execution
        assert extra_claims == expiries
        assert double_execs <= expiries
        # a killed worker's job that had started ran again: doubles happen, and are all accounted for
        assert st.counters.get("succeeded", 0) == sum(j.state == "succeeded" for j in jobs)
        await assert_consistent(c)


async def _enqueue_until_killed(c: HerderClient, acked: list[tuple[str, float]], stop: asyncio.Event) -> None:
    i = 0
    while not stop.is_set():
        jid = f"e{i}"
        try:
            await c.enqueue("default", "work", {"seconds": 0.05}, id=jid)
        except (RedisError, OSError):
            return
        acked.append((jid, time.monotonic()))
        i += 1
        await asyncio.sleep(0.002)


@pytest.mark.parametrize("fsync", ["everysec", "always"])
async def test_redis_kill9_restart_keeps_acknowledged_enqueues(
    tmp_path: Path, worker_env: dict[str, str], fsync: str
) -> None:
    server = RedisProc(tmp_path / "aof", appendonly=True, appendfsync=fsync).start()
    env = dict(worker_env, HERDER_REDIS_URL=server.url)
    workers = [WorkerProc(env, f"aof-{i}", concurrency=5) for i in range(2)]
    try:
        async with chaos_client(server.url) as c:
            acked: list[tuple[str, float]] = []
            stop = asyncio.Event()
            producer = asyncio.create_task(_enqueue_until_killed(c, acked, stop))
            # Kill after at least 3 s of enqueues (so 'everysec' has acks older than 1 s to check)
            # and once more than 100 are acknowledged: a count, since a loaded machine acks fewer.
            started = time.monotonic()
            while not producer.done() and time.monotonic() - started < 60:
                if len(acked) > 100 and time.monotonic() - started >= 3:
                    break
                await asyncio.sleep(0.05)
            server.kill()  # SIGKILL: no shutdown save
            killed = time.monotonic()
            await asyncio.wait_for(producer, 20)
            assert len(acked) > 100
            server.start()
            must_exist = [jid for jid, t in acked if fsync == "always" or t < killed - 1.0]
            missing = []
            for jid in must_exist:
                try:
                    await c.get_job(jid, "default")
                except Exception:
                    missing.append(jid)
            assert missing == []
            # and the restarted system finishes all of them
            for jid in must_exist[-50:]:
                await wait_state(c, jid, "succeeded", timeout=60)
    finally:
        for w in workers:
            w.stop()
        server.stop()


async def test_redis_gone_for_20s_under_load(tmp_path: Path, worker_env: dict[str, str]) -> None:
    server = RedisProc(tmp_path / "outage", appendonly=True).start()
    env = dict(worker_env, HERDER_REDIS_URL=server.url)
    logs = tmp_path / "workers.log"
    workers = [WorkerProc(env, f"out-{i}", concurrency=10, log=logs) for i in range(2)]
    try:
        async with chaos_client(server.url) as c:
            reqs = [JobRequest(task="work", payload={"seconds": 0.5}, id=f"o{i}") for i in range(300)]
            await c.enqueue_many("default", reqs)
            await wait_for(lambda: c.status("default"), lambda s: s.active >= 10)
            server.stop()  # a clean stop: the AOF has everything
            await asyncio.sleep(20)
            assert all(w.proc.poll() is None for w in workers), "a worker died during the outage"
            server.start()
            back = time.monotonic()
            st = await wait_for(
                lambda: c.status("default"),
                lambda s: s.counters.get("succeeded", 0) > 0 and len(s.workers) == 2,
                timeout=30,
                every=0.2,
            )
            resumed_after = time.monotonic() - back
            st = await wait_for(
                lambda: c.status("default"),
                lambda s: s.ready + s.active + s.scheduled == 0,
                timeout=120,
                every=0.5,
            )
            jobs = [await c.get_job(f"o{i}") for i in range(300)]
            assert {j.state for j in jobs} == {"succeeded"}
            assert st.counters.get("stale_finish", 0) == 0  # nothing completed twice
            print(f"workers resumed {resumed_after:.2f}s after Redis returned")
            text = logs.read_text()
            assert "redis unreachable" in text and "redis reachable again" in text
            await assert_consistent(c)
    finally:
        for w in workers:
            w.stop()
        server.stop()
