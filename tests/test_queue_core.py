"""The queue core against a real redis-server: enqueue validation, priorities, scheduling,
retries, the DLQ, dependencies, operations, capacity and capabilities."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from pydantic import BaseModel

from helpers import (
    all_keys,
    assert_consistent,
    db_size,
    running_worker,
    wait_claim_round,
    wait_for,
    wait_state,
)
from herder.backoff import Backoff
from herder.client import HerderClient, JobRequest
from herder.errors import Conflict, InvalidInput, NotFound, PermanentError
from herder.settings import HerderSettings
from herder.tasks import JobContext, TaskSet
from redis_proc import RedisProc

# ---- a test app: records what ran, in order ------------------------------------------------

app = TaskSet()
RAN: list[str] = []


class Note(BaseModel):
    tag: str
    seconds: float = 0.0


@app.task(payload=Note)
async def note(ctx: JobContext, p: Note) -> str:
    RAN.append(p.tag)
    if p.seconds:
        await asyncio.sleep(p.seconds)
    return p.tag


@app.task(max_attempts=5)
async def permanent(ctx: JobContext, p: Any) -> None:
    raise PermanentError("bad input, never retry")


@app.task(capabilities=("gpu",))
async def needs_gpu(ctx: JobContext, p: Any) -> str:
    return ctx.worker_id


@pytest.fixture
def settings(single_or_cluster: HerderSettings) -> HerderSettings:
    """Every test that takes `settings` or `client` runs on one redis-server and on a Redis
    Cluster (3 masters with a replica each, HERDER_REDIS_CLUSTER=true): the queue core does not
    depend on a single Redis."""
    return single_or_cluster


@pytest.fixture(autouse=True)
def _reset() -> None:
    RAN.clear()


async def snapshot(client: HerderClient) -> dict[str, Any]:
    keys = sorted(await all_keys(client.redis))
    return {k: await client.redis.dump(k) for k in keys}


# ---- enqueue ------------------------------------------------------------------------------


async def test_enqueue_returns_job_with_fields(client: HerderClient) -> None:
    r = await client.enqueue("default", "echo", {"a": 1}, priority=7, labels={"team": "x"})
    assert r.created and r.state == "ready"
    j = await client.get_job(r.id)
    assert (j.queue, j.task, j.payload, j.priority, j.attempts, j.labels) == (
        "default",
        "echo",
        {"a": 1},
        7,
        0,
        {"team": "x"},
    )
    assert j.enqueued_at is not None and abs(j.enqueued_at - time.time()) < 60


@pytest.mark.parametrize(
    ("task", "payload", "options", "reason"),
    [
        ("sleep", {"seconds": "soon"}, {}, "invalid payload for task 'sleep'"),
        ("sleep", {"seconds": 1, "extra": True}, {}, "Extra inputs are not permitted"),
        ("nope", None, {}, "unknown task 'nope'"),
        ("echo", None, {"priority": 5000}, "priority"),
        ("echo", None, {"id": "has space"}, "job id must match"),
        ("echo", None, {"delay": -1}, "delay"),
        ("echo", None, {"max_attempts": 0}, "max_attempts"),
        ("echo", None, {"after": ["missing-parent"]}, "unknown parent job id missing-parent"),
        ("echo", None, {"delay": 1, "at": time.time() + 5}, "either delay or at"),
    ],
)
async def test_invalid_enqueue_is_rejected_and_changes_nothing(
    client: HerderClient, task: str, payload: Any, options: dict[str, Any], reason: str
) -> None:
    await client.enqueue("default", "echo", {"seed": True}, id="seed")
    before = await snapshot(client)
    with pytest.raises(InvalidInput, match=reason):
        await client.enqueue("default", task, payload, **options)
    assert await snapshot(client) == before


async def test_invalid_queue_name_rejected(client: HerderClient) -> None:
    with pytest.raises(InvalidInput, match="invalid queue name"):
        await client.enqueue("bad queue{x}", "echo")
    assert await db_size(client.redis) == 0


async def test_duplicate_id_returns_existing_and_runs_once(settings: HerderSettings) -> None:
    async with HerderClient(settings, app) as c:
        first = await c.enqueue("default", "note", {"tag": "once"}, id="idem-1")
        second = await c.enqueue("default", "note", {"tag": "once"}, id="idem-1")
        assert first.created and not second.created and second.id == "idem-1"
        with pytest.raises(Conflict):  # the same id with another payload is not the same job
            await c.enqueue("default", "note", {"tag": "twice"}, id="idem-1")
        async with running_worker(settings, tasks=app):
            await wait_state(c, "idem-1", "succeeded")
            third = await c.enqueue("default", "note", {"tag": "once"}, id="idem-1")
            assert not third.created and third.state == "succeeded"
            await wait_claim_round(c)  # the worker has tried to claim since: nothing re-ran
        assert RAN == ["once"]


async def test_bulk_enqueue_is_one_atomic_call(client: HerderClient) -> None:
    reqs = [JobRequest(task="echo", payload={"i": i}, id=f"b{i}") for i in range(500)]
    results = await client.enqueue_many("default", reqs)
    assert [r.id for r in results] == [f"b{i}" for i in range(500)]
    assert (await client.status("default")).ready == 500
    # one bad request in a batch: nothing of the batch is written
    before = await snapshot(client)
    bad = [JobRequest(task="echo", id="ok-1"), JobRequest(task="echo", id="ok-2", after=["ghost"])]
    with pytest.raises(InvalidInput, match="unknown parent job id ghost"):
        await client.enqueue_many("default", bad)
    assert await snapshot(client) == before


async def test_all_keys_of_a_queue_share_its_hash_tag(settings: HerderSettings) -> None:
    async with HerderClient(settings) as c, running_worker(settings, "q1"):
        await c.enqueue("q1", "echo", id="p")
        await c.enqueue("q1", "fail", id="f", max_attempts=1)
        await c.enqueue("q1", "echo", id="c", after=["p"], delay=0.1)
        await wait_state(c, "c", "succeeded")
        await wait_state(c, "f", "dead")
        keys = await all_keys(c.redis)
        assert keys
        for k in keys:
            assert k == "herder:queues" or k.startswith("herder:{q1}:"), k


# ---- priorities and scheduling -------------------------------------------------------------


async def test_higher_priority_first_fifo_within_level(settings: HerderSettings) -> None:
    async with HerderClient(settings, app) as c:
        await c.pause("default")
        order = [("low-1", 0), ("high-1", 10), ("low-2", 0), ("mid-1", 5), ("high-2", 10), ("neg", -3)]
        for tag, prio in order:
            await c.enqueue("default", "note", {"tag": tag}, priority=prio)
        await c.resume("default")
        async with running_worker(settings, tasks=app, concurrency=1):
            await wait_for(lambda: c.status("default"), lambda s: s.ready == 0 and s.active == 0)
        assert RAN == ["high-1", "high-2", "mid-1", "low-1", "low-2", "neg"]


async def test_delayed_and_at_jobs_do_not_run_early(settings: HerderSettings) -> None:
    async with HerderClient(settings, app) as c, running_worker(settings, tasks=app):
        t0 = time.time()
        d = await c.enqueue("default", "note", {"tag": "delayed"}, delay=0.6)
        a = await c.enqueue("default", "note", {"tag": "at"}, at=t0 + 0.8)
        assert d.state == "scheduled" and a.state == "scheduled"
        assert (await c.status("default")).scheduled == 2
        jd = await wait_state(c, d.id, "succeeded")
        ja = await wait_state(c, a.id, "succeeded")
        assert jd.run_at is not None and jd.started_at is not None and jd.started_at >= jd.run_at
        assert ja.started_at is not None and ja.started_at >= t0 + 0.8 - 0.01


async def test_at_without_timezone_is_rejected(client: HerderClient) -> None:
    from datetime import datetime

    with pytest.raises(InvalidInput, match="timezone"):
        await client.enqueue("default", "echo", at=datetime(2030, 1, 1))


# ---- retries and the DLQ -------------------------------------------------------------------


async def test_flaky_job_records_attempts_and_errors(settings: HerderSettings, client: HerderClient) -> None:
    async with running_worker(settings, name="w-retry"):
        r = await client.enqueue("default", "flaky", {"failures": 2})
        j = await wait_state(client, r.id, "succeeded")
    assert j.attempts == 3 and j.result == {"attempts": 3}
    assert [e.attempt for e in j.errors] == [1, 2]
    for e in j.errors:
        assert e.type == "RuntimeError" and "flaky failure" in e.message
        assert "Traceback" in e.traceback and e.worker == "w-retry"
        assert e.started_at and e.ended_at and e.ended_at >= e.started_at


async def test_backoff_delays_retries(settings: HerderSettings, client: HerderClient) -> None:
    async with running_worker(settings):
        r = await client.enqueue(
            "default", "flaky", {"failures": 1}, backoff=Backoff(base_seconds=0.5, jitter=0), max_attempts=2
        )
        j = await wait_state(client, r.id, "succeeded")
    assert j.started_at is not None and j.errors[0].ended_at is not None
    assert j.started_at - j.errors[0].ended_at >= 0.45  # the retry waited for its backoff


async def test_out_of_attempts_goes_to_dlq_with_history(
    settings: HerderSettings, client: HerderClient
) -> None:
    async with running_worker(settings):
        r = await client.enqueue("default", "fail", {"message": "kaput"}, max_attempts=3)
        j = await wait_state(client, r.id, "dead")
    assert j.attempts == 3 and len(j.errors) == 3
    assert j.dead_reason == "out of attempts (3/3): RuntimeError: kaput"
    dlq = await client.dlq_list("default")
    assert [d.id for d in dlq] == [r.id]
    await assert_consistent(client)


async def test_permanent_error_skips_retries(settings: HerderSettings) -> None:
    async with HerderClient(settings, app) as c, running_worker(settings, tasks=app):
        r = await c.enqueue("default", "permanent")
        j = await wait_state(c, r.id, "dead")
    assert j.attempts == 1 and j.dead_reason == "bad input, never retry"
    assert j.errors[0].kind == "permanent"


async def test_dlq_replay_one_several_all_and_purge(settings: HerderSettings, client: HerderClient) -> None:
    ids = [(await client.enqueue("default", "fail", max_attempts=1, id=f"d{i}")).id for i in range(5)]
    async with running_worker(settings) as w:
        for i in ids:
            await wait_state(client, i, "dead")
        await client.pause("default")  # keep replayed jobs pending so we can see them
        assert await client.retry("d0") == "ready"
        assert await client.replay("default", ["d1", "d2"]) == {"d1": "ready", "d2": "ready"}
        assert (await client.status("default")).dead == 2
        j = await client.get_job("d0")
        assert j.attempts == 0 and j.replays == 1 and len(j.errors) == 1  # history kept
        assert await client.replay("default", await client.dlq_ids("default")) == {
            "d3": "ready",
            "d4": "ready",
        }
        await client.resume("default")
        for i in ids:
            await wait_state(client, i, "dead")
        assert w.jobs_failed >= 10
    assert await client.dlq_purge("default") == 5
    assert (await client.status("default")).dead == 0
    with pytest.raises(NotFound):
        await client.get_job("d0")


async def test_replay_of_job_whose_task_is_gone(settings: HerderSettings) -> None:
    old_app = TaskSet()

    @old_app.task(max_attempts=1)
    async def retired(ctx: JobContext, p: Any) -> None:
        raise RuntimeError("nope")

    async with HerderClient(settings, old_app) as old, running_worker(settings, tasks=old_app):
        r = await old.enqueue("default", "retired")
        await wait_state(old, r.id, "dead")
    async with HerderClient(settings, app) as new:
        before = await snapshot(new)
        with pytest.raises(InvalidInput, match="unknown task 'retired'"):
            await new.retry(r.id)
        assert await new.replay("default", [r.id]) == {r.id: "unknown task 'retired'"}
        assert await snapshot(new) == before


async def test_retry_of_non_dead_job_is_a_conflict(client: HerderClient) -> None:
    r = await client.enqueue("default", "echo")
    with pytest.raises(Conflict, match="only dead or cancelled"):
        await client.retry(r.id)


# ---- dependencies --------------------------------------------------------------------------


async def test_child_waits_for_all_parents(settings: HerderSettings) -> None:
    async with HerderClient(settings, app) as c:
        p1 = await c.enqueue("default", "note", {"tag": "p1", "seconds": 0.3})
        p2 = await c.enqueue("default", "note", {"tag": "p2"})
        child = await c.enqueue("default", "note", {"tag": "child"}, after=[p1.id, p2.id])
        assert child.state == "waiting"
        assert (await c.status("default")).waiting == 1
        async with running_worker(settings, tasks=app):
            jc = await wait_state(c, child.id, "succeeded")
        jp1 = await c.get_job(p1.id)
        assert jc.started_at is not None and jp1.finished_at is not None
        assert jc.started_at >= jp1.finished_at
        assert RAN[-1] == "child"


async def test_parent_death_dead_letters_children_and_grandchildren(
    settings: HerderSettings, client: HerderClient
) -> None:
    p = await client.enqueue("default", "fail", max_attempts=1, id="parent")
    c1 = await client.enqueue("default", "echo", after=["parent"], id="child")
    g1 = await client.enqueue("default", "echo", after=["child"], id="grandchild")
    anyway = await client.enqueue("default", "echo", {"ran": True}, after=["parent"], run_regardless=True)
    async with running_worker(settings):
        await wait_state(client, p.id, "dead")
        jc = await wait_state(client, c1.id, "dead")
        jg = await wait_state(client, g1.id, "dead")
        ja = await wait_state(client, anyway.id, "succeeded")
    assert jc.dead_reason == "parent parent failed" and jc.attempts == 0
    assert jg.dead_reason == "parent child failed"
    assert ja.result == {"ran": True}
    # a child enqueued after its parent died is dead-lettered at once
    late = await client.enqueue("default", "echo", after=["parent"])
    assert late.state == "dead"
    await assert_consistent(client)


async def test_child_of_succeeded_parent_is_ready_at_once(
    settings: HerderSettings, client: HerderClient
) -> None:
    async with running_worker(settings):
        p = await client.enqueue("default", "echo")
        await wait_state(client, p.id, "succeeded")
        c = await client.enqueue("default", "echo", after=[p.id])
        assert c.state == "ready"
        await wait_state(client, c.id, "succeeded")


# ---- operations ----------------------------------------------------------------------------


async def test_pause_stops_claims_but_running_jobs_finish(
    settings: HerderSettings, client: HerderClient
) -> None:
    async with running_worker(settings):
        running = await client.enqueue("default", "sleep", {"seconds": 0.5})
        await wait_state(client, running.id, "active")
        await client.pause("default")
        queued = await client.enqueue("default", "echo")
        await wait_state(client, running.id, "succeeded")
        await wait_claim_round(client)  # the worker, now idle, has tried to claim since
        st = await client.status("default")
        assert st.paused and (await client.get_job(queued.id)).state == "ready"
        await client.resume("default")
        await wait_state(client, queued.id, "succeeded")


async def test_remove_pending_and_refuse_active(settings: HerderSettings, client: HerderClient) -> None:
    pending = await client.enqueue("default", "echo", delay=60)
    child = await client.enqueue("default", "echo", after=[pending.id])
    await client.remove(pending.id)
    with pytest.raises(NotFound):
        await client.get_job(pending.id)
    assert (await client.get_job(child.id)).dead_reason == f"parent {pending.id} was removed"
    async with running_worker(settings):
        active = await client.enqueue("default", "sleep", {"seconds": 0.6})
        await wait_state(client, active.id, "active")
        with pytest.raises(Conflict, match="cancel it instead"):
            await client.remove(active.id)
    with pytest.raises(NotFound):
        await client.remove("never-was")
    await assert_consistent(client)


async def test_cancel_pending_and_running(settings: HerderSettings, client: HerderClient) -> None:
    pending = await client.enqueue("default", "echo", delay=60)
    assert await client.cancel(pending.id) == "cancelled"
    assert (await client.get_job(pending.id)).state == "cancelled"
    async with running_worker(settings, concurrency=2):
        long = await client.enqueue("default", "sleep", {"seconds": 60})
        other = await client.enqueue("default", "sleep", {"seconds": 0.3})
        await wait_state(client, long.id, "active")
        assert await client.cancel(long.id) == "cancelling"
        j = await wait_state(client, long.id, "cancelled", timeout=10)
        assert j.errors[-1].kind == "cancelled"
        assert (await wait_state(client, other.id, "succeeded")).attempts == 1
        with pytest.raises(Conflict, match="already cancelled"):
            await client.cancel(long.id)
        # a cancelled job can be retried
        assert await client.retry(long.id) == "ready"
        await client.cancel(long.id)
    await assert_consistent(client)


# ---- capacity and capabilities -------------------------------------------------------------


async def test_worker_never_exceeds_its_capacity(settings: HerderSettings) -> None:
    async with HerderClient(settings, app) as c:
        ids = [(await c.enqueue("default", "note", {"tag": f"t{i}", "seconds": 0.15})).id for i in range(8)]
        async with running_worker(settings, tasks=app, concurrency=3):
            for i in ids:
                await wait_state(c, i, "succeeded")
        spans = [(j.started_at, j.finished_at) for j in [await c.get_job(i) for i in ids]]
    events = sorted([(s, 1) for s, _ in spans] + [(f, -1) for _, f in spans])
    level = peak = 0
    for _, d in events:
        level += d
        peak = max(peak, level)
    assert peak <= 3


async def test_capability_jobs_go_only_to_capable_workers(settings: HerderSettings) -> None:
    async with HerderClient(settings, app) as c:
        async with running_worker(settings, tasks=app, name="plain"):
            r = await c.enqueue("default", "needs_gpu")
            plain = await c.enqueue("default", "note", {"tag": "plain"})
            await wait_state(c, plain.id, "succeeded")
            await wait_claim_round(c)  # the plain worker has tried to claim since, and left it
            assert (await c.get_job(r.id)).state == "ready"
            async with running_worker(settings, tasks=app, name="gpu-box", capabilities=("gpu", "cuda")):
                j = await wait_state(c, r.id, "succeeded")
        assert j.result == "gpu-box"


# ---- cron ----------------------------------------------------------------------------------


async def test_cron_tick_runs_once_however_many_workers(settings: HerderSettings) -> None:
    cron_app = TaskSet()
    ticks: list[str] = []

    @cron_app.task(cron="* * * * * *")  # every second (croniter's seconds field)
    async def tick(ctx: JobContext, p: Any) -> None:
        ticks.append(ctx.job_id)

    async with HerderClient(settings, cron_app):
        async with (
            running_worker(settings, tasks=cron_app, name="a"),
            running_worker(settings, tasks=cron_app, name="b"),
            running_worker(settings, tasks=cron_app, name="c"),
        ):
            await wait_for(lambda: asyncio.sleep(0, len(ticks)), lambda n: n >= 3, timeout=15)
        assert len(ticks) == len(set(ticks))
        assert all(t.startswith("herder-cron-tick-") for t in ticks)


# ---- Redis settings ------------------------------------------------------------------------


async def test_acl_user_and_password(tmp_path: Any) -> None:
    proc = RedisProc(
        tmp_path / "acl",
        extra=["--user", "default", "off", "--user", "herder", "on", ">s3cret", "~*", "&*", "+@all"],
    ).start()
    try:
        good = HerderSettings(redis_url=proc.url, redis_username="herder", redis_password="s3cret")
        async with HerderClient(good) as c:
            r = await c.enqueue("default", "echo")
            assert (await c.get_job(r.id)).state == "ready"
        bad = HerderSettings(redis_url=proc.url, redis_username="herder", redis_password="wrong")
        async with HerderClient(bad) as c:
            with pytest.raises(Exception, match=r"(?i)invalid|WRONGPASS|auth"):
                await c.enqueue("default", "echo")
    finally:
        proc.stop()


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERDER_REDIS_URL", "redis://example:6380/2")
    monkeypatch.setenv("HERDER_REDIS_USERNAME", "u")
    monkeypatch.setenv("HERDER_REDIS_PASSWORD", "p")
    monkeypatch.setenv("HERDER_REDIS_TLS", "true")
    s = HerderSettings()
    assert s.redis_url == "redis://example:6380/2" and s.redis_username == "u" and s.redis_tls
    assert s.redis_password is not None and s.redis_password.get_secret_value() == "p"
    from redis.asyncio.connection import SSLConnection

    from herder.connection import redis_client

    r = redis_client(s)
    kw = r.connection_pool.connection_kwargs
    assert kw["username"] == "u" and kw["password"] == "p"
    assert issubclass(r.connection_pool.connection_class, SSLConnection)


def test_invalid_settings_rejected() -> None:
    with pytest.raises(ValueError, match="key_prefix"):
        HerderSettings(key_prefix="a{b}")
