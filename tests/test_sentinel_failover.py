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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import assert_consistent, running_worker, wait_for, wait_state
from herder.client import HerderClient
from herder.settings import HerderSettings
from herder.tasks import JobContext, TaskSet
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
