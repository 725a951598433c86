"""Worker runtime: registry, drain (Redis and SIGTERM), hand-back, error boundaries, and the
persistence check. Workers run as real `herder worker` processes where signals matter."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

from helpers import assert_consistent, running_worker, wait_claim_round, wait_for, wait_state
from herder import metrics
from herder.client import HerderClient
from herder.settings import HerderSettings
from herder.tasks import JobContext, TaskSet, load_taskset
from procs import WorkerProc
from redis_proc import RedisProc


async def test_registry_shows_live_workers_and_forgets_dead_ones(
    worker_env: dict[str, str], client: HerderClient
) -> None:
    a = WorkerProc(worker_env, "reg-a", concurrency=3)
    b = WorkerProc(worker_env, "reg-b", concurrency=7)
    try:
        st = await wait_for(lambda: client.status("default"), lambda s: len(s.workers) == 2)
        by_id = {w.id: w for w in st.workers}
        assert by_id["reg-a"].capacity == 3 and by_id["reg-b"].capacity == 7
        for w in st.workers:
            assert w.pid > 0 and w.host and w.version and w.started_at and w.last_seen
            assert not w.draining and w.in_flight == 0
        r = await client.enqueue("default", "sleep", {"seconds": 30})
        st = await wait_for(
            lambda: client.status("default"), lambda s: sum(w.in_flight for w in s.workers) == 1
        )
        holder = next(w for w in st.workers if w.in_flight == 1)
        assert holder.jobs == [r.id]
        b.kill()
        a.kill()
        # gone within one lease (2 s here) of their last heartbeat
        await wait_for(lambda: client.status("default"), lambda s: not s.workers, timeout=6)
    finally:
        a.stop()
        b.stop()


async def test_drain_through_redis_finishes_work_then_exits(
    worker_env: dict[str, str], client: HerderClient
) -> None:
    w = WorkerProc(worker_env, "drainee", concurrency=2)
    try:
        await wait_for(lambda: client.status("default"), lambda s: len(s.workers) == 1)
        running = await client.enqueue("default", "sleep", {"seconds": 1.0})
        await wait_state(client, running.id, "active")
        await client.drain_worker("default", "drainee", exit=True)
        queued = await client.enqueue("default", "echo")
        st = await wait_for(lambda: client.status("default"), lambda s: any(x.draining for x in s.workers))
        assert st.workers[0].id == "drainee"
        assert await asyncio.to_thread(w.wait, 30) == 0
        assert (await client.get_job(running.id)).state == "succeeded"
        assert (await client.get_job(queued.id)).state == "ready"  # never claimed while draining
        assert (await client.status("default")).workers == []
    finally:
        w.stop()


async def test_drain_without_exit_reports_drained_and_can_be_undone(settings: HerderSettings) -> None:
    async with HerderClient(settings) as c, running_worker(settings, name="idle-drain") as w:
        await wait_for(lambda: c.status("default"), lambda s: len(s.workers) == 1)
        await c.drain_worker("default", "idle-drain", exit=False)
        st = await wait_for(lambda: c.status("default"), lambda s: s.workers and s.workers[0].drained)
        assert st.workers[0].draining
        job = await c.enqueue("default", "echo")
        await wait_claim_round(c)  # the drained worker has made a claim call since, and took nothing
        assert (await c.get_job(job.id)).state == "ready"
        await c.undrain_worker("default", "idle-drain")
        await wait_state(c, job.id, "succeeded")
        assert not w.draining


async def test_sigterm_lets_running_jobs_finish(worker_env: dict[str, str], client: HerderClient) -> None:
    w = WorkerProc(worker_env, "term", concurrency=4, drain_timeout=20)
    try:
        ids = [(await client.enqueue("default", "sleep", {"seconds": 1.0})).id for _ in range(4)]
        for i in ids:
            await wait_state(client, i, "active")
        w.signal(signal.SIGTERM)
        assert await asyncio.to_thread(w.wait, 30) == 0
        for i in ids:
            j = await client.get_job(i)
            assert j.state == "succeeded" and j.attempts == 1
    finally:
        w.stop()
    await assert_consistent(client)


async def test_drain_deadline_hands_jobs_back_at_once(
    worker_env: dict[str, str], client: HerderClient
) -> None:
    w = WorkerProc(worker_env, "short-drain", concurrency=2, drain_timeout=0.5)
    try:
        r = await client.enqueue("default", "sleep", {"seconds": 60})
        await wait_state(client, r.id, "active")
        w.signal(signal.SIGTERM)
        assert await asyncio.to_thread(w.wait, 30) == 0
        j = await client.get_job(r.id)
        # ready again now, not after a lease expiry, and the interruption spent no attempt
        assert j.state == "ready" and j.attempts == 0
        assert j.errors[-1].kind == "handed_back"
        assert (await client.status("default")).counters.get("lease_expired", 0) == 0
    finally:
        w.stop()


async def test_second_signal_stops_at_once_and_hands_back(
    worker_env: dict[str, str], client: HerderClient
) -> None:
    w = WorkerProc(worker_env, "impatient", concurrency=2, drain_timeout=600)
    try:
        r = await client.enqueue("default", "sleep", {"seconds": 60})
        await wait_state(client, r.id, "active")
        w.signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        w.signal(signal.SIGINT)
        assert await asyncio.to_thread(w.wait, 30) == 0
        j = await client.get_job(r.id)
        assert j.state == "ready" and j.attempts == 0
    finally:
        w.stop()


async def test_failures_timeouts_and_cancels_do_not_disturb_other_jobs(settings: HerderSettings) -> None:
    app = TaskSet(load_taskset(None))

    @app.task(timeout=0.2, max_attempts=1)
    async def too_slow(ctx: JobContext, p: Any) -> None:
        await asyncio.sleep(10)

    async with HerderClient(settings, app) as c, running_worker(settings, tasks=app, concurrency=10):
        good = [(await c.enqueue("default", "sleep", {"seconds": 0.5})).id for _ in range(4)]
        bad = await c.enqueue("default", "fail", max_attempts=1)
        slow = await c.enqueue("default", "too_slow")
        victim = await c.enqueue("default", "sleep", {"seconds": 30})
        await wait_state(c, victim.id, "active")
        await c.cancel(victim.id)
        assert (await wait_state(c, bad.id, "dead")).errors[0].type == "RuntimeError"
        js = await wait_state(c, slow.id, "dead")
        assert js.errors[0].kind == "timeout" and "timed out after 0.2" in (js.dead_reason or "")
        await wait_state(c, victim.id, "cancelled")
        for g in good:
            j = await wait_state(c, g, "succeeded")
            assert j.attempts == 1


async def test_blocking_task_is_reported(settings: HerderSettings, tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "apps"))
    from chaos_app import tasks as chaos_tasks

    before = metrics.LOOP_BLOCKED.labels("default")._value.get()
    async with HerderClient(settings, chaos_tasks) as c, running_worker(settings, tasks=chaos_tasks):
        r = await c.enqueue("default", "blocker", {"seconds": 1.6})
        ok = await c.enqueue("default", "work", {"seconds": 0.01})
        await wait_state(c, r.id, "succeeded")
        await wait_state(c, ok.id, "succeeded")

        async def blocked() -> float:
            return float(metrics.LOOP_BLOCKED.labels("default")._value.get())

        await wait_for(blocked, lambda n: n > before)


async def test_persistence_check_warns_when_off(settings: HerderSettings, tmp_path: Path) -> None:
    async with running_worker(settings) as w:
        await asyncio.sleep(0.1)
        assert w.persistence_warning and "persistence is off" in w.persistence_warning
    aof = RedisProc(tmp_path / "aof", appendonly=True).start()
    try:
        async with running_worker(HerderSettings(redis_url=aof.url)) as w:
            await asyncio.sleep(0.1)
            assert w.persistence_warning is None
    finally:
        aof.stop()


async def test_sigterm_after_a_redis_drain_counts_the_timeout_from_the_drain(
    worker_env: dict[str, str], client: HerderClient
) -> None:
    w = WorkerProc(worker_env, "pod-1", concurrency=1, drain_timeout=4)
    try:
        r = await client.enqueue("default", "sleep", {"seconds": 60})
        await wait_state(client, r.id, "active")
        await client.drain_worker("default", "pod-1", exit=False)  # the operator drains first...
        await wait_for(lambda: client.status("default"), lambda s: s.workers and s.workers[0].draining)
        await asyncio.sleep(4.5)  # ...the drain timeout passes...
        signalled = time.time()
        w.signal(signal.SIGTERM)  # ...then the pod is deleted: no second full timeout
        assert await asyncio.to_thread(w.wait, 30) == 0
        j = await client.get_job(r.id)
        assert j.state == "ready" and j.errors[-1].kind == "handed_back"
        handed_back_at = j.errors[-1].ended_at
        assert handed_back_at is not None and handed_back_at - signalled < 2.5  # a fresh timeout would be 4 s
    finally:
        w.stop()


async def test_drain_request_resets_a_stale_drained_flag(settings: HerderSettings) -> None:
    async with HerderClient(settings) as c, running_worker(settings, name="reused", concurrency=1):
        await wait_for(lambda: c.status("default"), lambda s: len(s.workers) == 1)
        await c.drain_worker("default", "reused", exit=False)
        await wait_for(lambda: c.status("default"), lambda s: s.workers[0].drained)
        await c.undrain_worker("default", "reused")
        r = await c.enqueue("default", "sleep", {"seconds": 30})
        await wait_state(c, r.id, "active")
        await c.drain_worker("default", "reused", exit=False)
        st = await c.status("default")
        assert st.workers[0].draining and not st.workers[0].drained  # busy: not removable
        await c.cancel(r.id)


async def test_shutdown_with_redis_gone_exits_instead_of_hanging(
    tmp_path: Path, worker_env: dict[str, str]
) -> None:
    server = RedisProc(tmp_path / "gone", appendonly=True).start()
    env = dict(worker_env, HERDER_REDIS_URL=server.url)
    w = WorkerProc(env, "stranded", concurrency=1, drain_timeout=0.5)
    try:
        async with HerderClient(HerderSettings(redis_url=server.url, lease_seconds=2)) as c:
            r = await c.enqueue("default", "sleep", {"seconds": 60})
            await wait_state(c, r.id, "active")
            server.stop()
            w.signal(signal.SIGTERM)
            # hand-back cannot be written; the worker gives up and exits 1 rather than hang
            assert await asyncio.to_thread(w.wait, 60) == 1
            server.start()
            j = await c.get_job(r.id)
            assert j.state == "active"  # still held in Redis: its lease expires and it runs again
    finally:
        w.stop()
        server.stop()
