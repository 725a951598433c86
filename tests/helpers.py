"""Test helpers: an in-process worker, polling until a condition holds, and a consistency check
that every job sits in exactly the state set its hash says."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from redis.asyncio.cluster import RedisCluster

from herder.client import HerderClient
from herder.connection import is_cluster
from herder.models import Job
from herder.settings import HerderSettings
from herder.tasks import TaskSet, load_taskset
from herder.worker import HerderWorker

T = TypeVar("T")


@asynccontextmanager
async def running_worker(
    settings: HerderSettings, queue: str = "default", tasks: TaskSet | None = None, **kw: Any
) -> AsyncIterator[HerderWorker]:
    w = HerderWorker(queue, tasks or load_taskset(None), settings, handle_signals=False, **kw)
    t = asyncio.create_task(w.main())
    try:
        yield w
    finally:
        if not t.done():
            w.handle_sig(signal.SIGTERM)
        await asyncio.wait_for(t, 30)
        await w.pool.aclose()


async def all_keys(redis: Any, pattern: str = "*") -> list[str]:
    """Every key matching `pattern`, on one Redis or on every master of a cluster (where KEYS
    would ask one node only)."""
    at = {"target_nodes": RedisCluster.PRIMARIES} if is_cluster(redis) else {}
    return list(await redis.keys(pattern, **at))


async def db_size(redis: Any) -> int:
    """DBSIZE of one Redis, or the sum over a cluster's masters."""
    at = {"target_nodes": RedisCluster.PRIMARIES} if is_cluster(redis) else {}
    return int(await redis.dbsize(**at))


async def wait_for(
    probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], timeout: float = 15.0, every: float = 0.02
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {value!r}")
        await asyncio.sleep(every)


async def wait_state(client: HerderClient, job_id: str, *states: str, timeout: float = 15.0) -> Job:
    return await wait_for(lambda: client.get_job(job_id), lambda j: j.state in states, timeout)


SET_OF_STATE = {
    "ready": ("ready", "readyc"),
    "scheduled": ("scheduled",),
    "waiting": ("waiting",),
    "active": ("active",),
    "dead": ("dead",),
    "succeeded": (),
    "cancelled": (),
}


async def assert_consistent(client: HerderClient, queue: str = "default") -> None:
    """Every job is in exactly the one set its state names (and in no other)."""
    base = client.keys(queue).base
    r = client.redis
    members: dict[str, set[str]] = {}
    for name in ("ready", "readyc", "scheduled", "active", "dead"):
        members[name] = set(await r.zrange(f"{base}:{name}", 0, -1))
    members["waiting"] = set(await r.smembers(f"{base}:waiting"))
    ids = [k.rsplit(":job:", 1)[1] async for k in r.scan_iter(match=f"{base}:job:*")]
    for jid in ids:
        state = await r.hget(f"{base}:job:{jid}", "state")
        expected = set(SET_OF_STATE[state])
        actual = {name for name, m in members.items() if jid in m}
        if state == "ready":
            assert len(actual) == 1 and actual <= expected, (jid, state, actual)
        else:
            assert actual == expected, (jid, state, actual)
    all_ids = set(ids)
    for name, m in members.items():
        assert m <= all_ids, f"{name} holds ids without a job hash: {m - all_ids}"


async def wait_claim_round(client: HerderClient, queue: str = "default", timeout: float = 15.0) -> None:
    """Wait until every live worker of `queue` has made a heartbeat claim call that began after
    now. Heartbeat and claim are one Lua call, so this proves that each worker has just tried
    to claim: the observable event that lets a test assert a job was *not* taken, without
    sleeping and hoping."""
    secs, micros = await client.redis.time()
    since = int(secs) + int(micros) / 1e6
    await wait_for(
        lambda: client.status(queue),
        lambda s: bool(s.workers) and all(w.last_seen is not None and w.last_seen > since for w in s.workers),
        timeout,
    )
