"""Bugs of HerderWorker's arq inheritance (issue 13), each pinned by a test that failed before."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from arq.worker import FailedJobs

from helpers import wait_for
from herder.backoff import Backoff
from herder.client import HerderClient
from herder.errors import NotFound, PermanentError
from herder.models import JobState
from herder.settings import HerderSettings
from herder.tasks import JobContext, TaskSet
from herder.worker import HerderWorker
from redis_proc import RedisProc


def app() -> TaskSet:
    tasks = TaskSet()

    @tasks.task()
    async def ok(ctx: JobContext, payload: Any) -> int:
        return 1

    @tasks.task()
    async def bad(ctx: JobContext, payload: Any) -> None:
        raise PermanentError("broken on purpose")

    @tasks.task()
    async def spawn(ctx: JobContext, payload: Any) -> str:
        # An arq-style task enqueues follow-up work through ctx['redis'].
        job = await ctx.state["redis"].enqueue_job("ok", n=1)
        return str(job.job_id)

    return tasks


def worker(settings: HerderSettings, **kw: Any) -> HerderWorker:
    return HerderWorker("default", app(), settings, handle_signals=False, burst=True, **kw)


async def test_ctx_redis_enqueues_onto_herder_not_arq_queue(settings: HerderSettings) -> None:
    async with HerderClient(settings, app()) as c:
        parent = await c.enqueue("default", "spawn")
        w = worker(settings)
        await asyncio.wait_for(w.main(), 60)
        await w.close()
        job = await c.get_job(parent.id, "default")
        assert job.state == JobState.succeeded
        child = await c.get_job(job.result, "default")  # on Herder's queue, and it ran
        assert child.task == "ok" and child.payload == {"n": 1} and child.state == JobState.succeeded
        assert await c.redis.exists("arq:queue") == 0


async def test_run_check_reports_failures(settings: HerderSettings) -> None:
    async with HerderClient(settings, app()) as c:
        await c.enqueue("default", "ok")
        dead = await c.enqueue("default", "bad")
        w = worker(settings)
        try:
            await asyncio.wait_for(w.run_check(), 60)
        except FailedJobs as exc:
            assert exc.count == 1
            assert [r.job_id for r in exc.job_results] == [dead.id]
            assert "broken on purpose" in str(exc)
        else:
            raise AssertionError("run_check() reported no failure")
        finally:
            await w.close()


async def test_second_burst_main_runs_again(settings: HerderSettings) -> None:
    async with HerderClient(settings, app()) as c:
        w = worker(settings)
        await c.enqueue("default", "ok")
        await asyncio.wait_for(w.main(), 60)
        second = await c.enqueue("default", "ok")
        await asyncio.wait_for(w.main(), 60)
        await w.close()
        assert (await c.get_job(second.id, "default")).state == JobState.succeeded
        assert w.jobs_complete == 2


async def test_burst_exits_when_the_last_job_ends_not_a_heartbeat_later(redis_server: RedisProc) -> None:
    # A 60 s lease means a 20 s heartbeat: a burst worker that waits for it misses the bound.
    settings = HerderSettings(redis_url=redis_server.url, lease_seconds=60.0)
    async with HerderClient(settings, app()) as c:
        await c.enqueue("default", "ok")
        w = worker(settings)
        await asyncio.wait_for(w.main(), 12)
        await w.close()
        assert w.jobs_complete == 1


async def test_keep_result_zero_means_not_kept_and_none_forever(settings: HerderSettings) -> None:
    async with HerderClient(settings, app()) as c:
        first = await c.enqueue("default", "ok")
        w = worker(settings, keep_result=0)
        await asyncio.wait_for(w.main(), 60)
        await w.close()
        assert w.jobs_complete == 1
        # Not kept, as arq's keep_result=0 (it used to mean forever): the finish script gives the
        # hash 1 ms to live, so a reader right after the finish may still see it; it never
        # outlives that (the worker may return within the millisecond: wait for it, no sleep).
        key = c.keys("default").job(first.id)
        assert await c.redis.pttl(key) in (-2, 0, 1)
        await wait_for(lambda: c.redis.exists(key), lambda n: n == 0, timeout=5)
        with pytest.raises(NotFound):
            await c.get_job(first.id, "default")
        second = await c.enqueue("default", "ok")
        w = worker(settings, keep_result=None)
        await asyncio.wait_for(w.main(), 60)
        await w.close()
        assert await c.redis.ttl(c.keys("default").job(second.id)) == -1


async def test_worker_timeout_applies_when_the_job_carries_none(settings: HerderSettings) -> None:
    producer_tasks = TaskSet()

    @producer_tasks.task(name="slow")  # the producer's view: no timeout known
    async def slow_stub(ctx: JobContext, payload: Any) -> None:
        return None

    worker_tasks = TaskSet()

    @worker_tasks.task(name="slow", timeout=0.3, max_attempts=1)
    async def slow(ctx: JobContext, payload: Any) -> None:
        await asyncio.Event().wait()

    async with HerderClient(settings, producer_tasks) as c:
        res = await c.enqueue("default", "slow")
        assert (await c.get_job(res.id, "default")).timeout is None
        w = HerderWorker("default", worker_tasks, settings, handle_signals=False, burst=True)
        await asyncio.wait_for(w.main(), 30)
        await w.close()
        job = await c.get_job(res.id, "default")
        assert job.state == JobState.dead and job.errors[-1].kind == "timeout"


async def test_worker_max_attempts_applies_when_the_job_carries_none(settings: HerderSettings) -> None:
    producer_tasks = TaskSet()

    @producer_tasks.task(name="flaky")  # the producer's view: no max_attempts known
    async def flaky_stub(ctx: JobContext, payload: Any) -> None:
        return None

    worker_tasks = TaskSet()
    tries: list[int] = []

    @worker_tasks.task(name="flaky", max_attempts=5, backoff=Backoff(base_seconds=0.01, jitter=0))
    async def flaky(ctx: JobContext, payload: Any) -> None:
        tries.append(ctx.attempt)
        raise RuntimeError("always fails")

    async with HerderClient(settings, producer_tasks) as c:
        res = await c.enqueue("default", "flaky")
        assert await c.redis.hget(c.keys("default").job(res.id), "max_attempts") == ""
        # Unknown until claimed: no guessed number (it used to read 1, then the worker's 5).
        assert (await c.get_job(res.id, "default")).max_attempts is None
        w = HerderWorker("default", worker_tasks, settings, handle_signals=False, burst=True)
        await asyncio.wait_for(w.main(), 60)
        await w.close()
        job = await c.get_job(res.id, "default")
        assert job.state == JobState.dead and job.max_attempts == 5
        assert tries == [1, 2, 3, 4, 5] and len(job.errors) == 5
