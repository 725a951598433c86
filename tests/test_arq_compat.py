"""herder.arq: an arq app (producer and WorkerSettings) on Herder's queue, real Redis."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.worker import FailedJobs

from herder.arq import ArqRedis, Retry, Worker, cron, func
from herder.arq.codec import JobFailed, herder_queue, rebuild_exception
from herder.arq.jobs import JobStatus, ResultNotFound
from herder.client import HerderClient
from herder.errors import InvalidInput
from herder.models import JobState
from herder.settings import HerderSettings
from redis_proc import RedisProc


@pytest.fixture
async def arq_redis(redis_server: RedisProc) -> AsyncIterator[ArqRedis]:
    r = ArqRedis(host="127.0.0.1", port=redis_server.port)
    yield r
    await r.close()


@pytest.fixture
def make_worker(redis_server: RedisProc, arq_redis: ArqRedis) -> Any:
    made: list[Worker] = []

    def make(functions: list[Any], **kw: Any) -> Worker:
        kw.setdefault("burst", True)
        kw.setdefault("handle_signals", False)
        kw.setdefault("herder_settings", HerderSettings(redis_url=redis_server.url, lease_seconds=2.0))
        w = Worker(functions, **kw)
        made.append(w)
        return w

    return make


async def add(ctx: dict[str, Any], a: int, b: int = 0) -> int:
    return a + b


async def boom(ctx: dict[str, Any]) -> None:
    raise ValueError("bad value")


async def test_enqueue_run_result_info_status(arq_redis: ArqRedis, make_worker: Any) -> None:
    job = await arq_redis.enqueue_job("add", 2, b=3, _job_id="j1")
    assert job is not None
    assert await job.status() == JobStatus.queued
    info = await job.info()
    assert info is not None and info.function == "add" and info.args == (2,) and info.kwargs == {"b": 3}
    # An id that exists is refused as arq does: None, nothing changed.
    assert await arq_redis.enqueue_job("add", 9, _job_id="j1") is None
    await make_worker([func(add)]).main()
    assert await job.result(timeout=5, poll_delay=0.05) == 5
    assert await job.status() == JobStatus.complete
    res = await job.result_info()
    assert res is not None and res.success and res.result == 5 and res.job_try == 1


async def test_non_json_argument_is_refused_and_nothing_written(arq_redis: ArqRedis) -> None:
    with pytest.raises(InvalidInput, match=r'unable to serialize job "add".*JSON'):
        await arq_redis.enqueue_job("add", object())
    assert await arq_redis.keys("*") == []


async def test_plain_exception_fails_without_retry_and_reraises(
    arq_redis: ArqRedis, make_worker: Any
) -> None:
    job = await arq_redis.enqueue_job("boom")
    assert job is not None
    w = make_worker([boom])
    with pytest.raises(FailedJobs, match="ValueError"):
        await w.run_check()
    assert (w.jobs_failed, w.jobs_retried) == (1, 0)
    with pytest.raises(ValueError, match="bad value"):
        await job.result(timeout=5, poll_delay=0.05)
    # ... and the job sits in Herder's dead-letter queue, replayable.
    assert await arq_redis.herder.dlq_ids(herder_queue("arq:queue")) == [job.job_id]


async def test_retry_with_defer_then_max_tries(arq_redis: ArqRedis, make_worker: Any) -> None:
    tries: list[int] = []

    async def flaky(ctx: dict[str, Any]) -> str:
        tries.append(ctx["job_try"])
        if ctx["job_try"] < 2:
            raise Retry(defer=0.05)
        return "ok"

    async def always(ctx: dict[str, Any]) -> None:
        raise Retry(defer=0)

    j1 = await arq_redis.enqueue_job("flaky")
    j2 = await arq_redis.enqueue_job("always")
    assert j1 is not None and j2 is not None
    w = make_worker([func(flaky, name="flaky"), func(always, name="always", max_tries=3)])
    await w.main()
    assert tries == [1, 2]
    assert await j1.result(timeout=5, poll_delay=0.05) == "ok"
    with pytest.raises(Exception, match="max 3 retries exceeded"):
        await j2.result(timeout=5, poll_delay=0.05)


async def test_ctx_keys_hooks_and_nested_enqueue_goes_to_herder(
    arq_redis: ArqRedis, make_worker: Any
) -> None:
    seen: dict[str, Any] = {}
    calls: list[str] = []

    async def parent(ctx: dict[str, Any]) -> str:
        seen.update(ctx)
        inner = await ctx["redis"].enqueue_job("add", 20, b=1)
        return str(inner.job_id)

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["db"] = "connected"

    async def on_start(ctx: dict[str, Any]) -> None:
        calls.append(f"start:{ctx['job_id']}")

    async def on_end(ctx: dict[str, Any]) -> None:
        calls.append(f"end:{ctx['job_id']}")

    async def after(ctx: dict[str, Any]) -> None:
        calls.append(f"after:{ctx['job_id']}")

    job = await arq_redis.enqueue_job("parent", _job_id="p")
    assert job is not None
    w = make_worker(
        [func(parent, name="parent"), add],
        on_startup=startup,
        on_job_start=on_start,
        on_job_end=on_end,
        after_job_end=after,
    )
    await w.main()
    assert {"job_id", "job_try", "enqueue_time", "score", "redis"} <= set(seen)
    assert seen["db"] == "connected" and seen["job_id"] == "p" and seen["job_try"] == 1
    inner_id = await job.result(timeout=5, poll_delay=0.05)
    # The inner job ran on Herder's queue (arq's own client would have left it in arq:queue).
    assert await arq_redis.exists("arq:queue") == 0
    inner = await arq_redis.herder.get_job(inner_id, herder_queue("arq:queue"))
    assert inner.state == JobState.succeeded and inner.result == 21
    assert calls.index("start:p") < calls.index("end:p") < calls.index("after:p")


async def test_keep_result_zero_means_not_kept(arq_redis: ArqRedis, make_worker: Any) -> None:
    j0 = await arq_redis.enqueue_job("add", 1)
    assert j0 is not None
    await make_worker([func(add, keep_result=0)]).main()
    with pytest.raises(ResultNotFound):
        await j0.result(timeout=5, poll_delay=0.05)
    j1 = await arq_redis.enqueue_job("add", 1)
    assert j1 is not None
    await make_worker([func(add, keep_result_forever=True)]).main()
    key = arq_redis.herder.keys(herder_queue("arq:queue")).job(j1.job_id)
    assert await arq_redis.ttl(key) == -1


async def test_timeout_fails_the_job(arq_redis: ArqRedis, make_worker: Any) -> None:
    async def slow(ctx: dict[str, Any]) -> None:
        await asyncio.Event().wait()

    job = await arq_redis.enqueue_job("slow")
    assert job is not None
    w = make_worker([func(slow, name="slow", timeout=0.2)])
    await w.main()
    assert w.jobs_failed == 1
    with pytest.raises(TimeoutError):
        await job.result(timeout=5, poll_delay=0.05)


async def test_max_burst_jobs_and_second_main(arq_redis: ArqRedis, make_worker: Any) -> None:
    for i in range(5):
        await arq_redis.enqueue_job("add", i)
    w = make_worker([add], max_burst_jobs=2, max_jobs=1)
    await w.main()
    assert w.jobs_complete == 2
    await w.main()  # a second burst run works too (stock HerderWorker returned at once)
    assert w.jobs_complete == 4


async def test_health_check_key_and_cron_run_at_startup(
    redis_server: RedisProc, arq_redis: ArqRedis, make_worker: Any
) -> None:
    from arq.worker import async_check_health

    from herder.arq import RedisSettings

    ran: list[str] = []

    async def tick(ctx: dict[str, Any]) -> None:
        ran.append(ctx["job_id"])

    rs = RedisSettings(host="127.0.0.1", port=redis_server.port)
    assert await async_check_health(rs) == 1
    w = make_worker(
        [], cron_jobs=[cron(tick, name="tick", hour={3}, run_at_startup=True, job_id="tick-once")]
    )
    await w.main()
    assert ran == ["tick-once"]
    # Stock arq's own health check reads the key the Herder worker wrote.
    assert await async_check_health(rs) == 0


async def test_abort_pending_job(arq_redis: ArqRedis) -> None:
    job = await arq_redis.enqueue_job("add", 1, _defer_by=60)
    assert job is not None
    assert await job.status() == JobStatus.deferred
    assert await job.abort(timeout=5, poll_delay=0.05) is True
    with pytest.raises(asyncio.CancelledError):
        await job.result(timeout=1, poll_delay=0.05)


async def test_native_herder_client_can_enqueue_for_an_arq_worker(
    settings: HerderSettings, make_worker: Any, arq_redis: ArqRedis
) -> None:
    """A job enqueued with Herder's own client (payload = kwargs) runs on an arq function."""
    w = make_worker([add])
    async with HerderClient(settings, w.taskset) as c:
        res = await c.enqueue(herder_queue("arq:queue"), "add", {"a": 1, "b": 2}, priority=5)
    await w.main()
    assert (await arq_redis.herder.get_job(res.id, herder_queue("arq:queue"))).result == 3


def test_rebuild_exception_and_queue_names() -> None:
    assert isinstance(rebuild_exception("KeyError", "x"), KeyError)
    e = rebuild_exception("MyAppError", "boom")
    assert isinstance(e, JobFailed) and str(e) == "MyAppError: boom"
    assert herder_queue("arq:queue") == "arq.queue"
    with pytest.raises(InvalidInput):
        herder_queue("x" * 200)


async def test_unknown_function_and_unserialisable_result_fail_clearly(
    arq_redis: ArqRedis, make_worker: Any
) -> None:
    from arq.jobs import SerializationError
    from arq.worker import JobExecutionFailed

    async def opaque(ctx: dict[str, Any]) -> object:
        return object()

    j1 = await arq_redis.enqueue_job("missing")
    j2 = await arq_redis.enqueue_job("opaque")
    assert j1 is not None and j2 is not None
    w = make_worker([func(opaque, name="opaque")])
    await w.main()
    assert w.jobs_failed == 2
    with pytest.raises(JobExecutionFailed, match="function 'missing' not found"):
        await j1.result(timeout=5, poll_delay=0.05)
    with pytest.raises(SerializationError, match="unable to serialize result"):
        await j2.result(timeout=5, poll_delay=0.05)


def test_cli_check_and_help(redis_server: RedisProc, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from herder.arq.cli import cli

    class Settings:
        functions = [add]
        redis_settings = None

    from herder.arq import RedisSettings

    Settings.redis_settings = RedisSettings(host="127.0.0.1", port=redis_server.port)  # type: ignore[assignment]
    monkeypatch.setattr(sys.modules[__name__], "Settings", Settings, raising=False)
    res = CliRunner().invoke(cli, ["--help"])
    assert res.exit_code == 0 and res.output.startswith("Usage: arq [OPTIONS] WORKER_SETTINGS")
    res = CliRunner().invoke(cli, [f"{__name__}.Settings", "--check"])
    assert res.exit_code == 1  # no worker has written the health-check key


class WorkerSettings:
    functions = [add]


def test_find_worker_settings() -> None:
    from herder.arq.worker import find_worker_settings

    assert find_worker_settings(f"{__name__}:WorkerSettings") is WorkerSettings
    assert find_worker_settings(f"{__name__}.WorkerSettings") is WorkerSettings
    assert find_worker_settings(f"{__name__}:add") is None  # not a settings class
    assert find_worker_settings("no_such_module_xyz:WorkerSettings") is None
    assert find_worker_settings(None) is None


def test_worker_name_and_capacity_pass_through(make_worker: Any) -> None:
    w = make_worker([add], cron_jobs=[cron(add, name="tick", hour={1})], name="w-1", max_jobs=4)
    assert (w.worker_id, w.capacity) == ("w-1", 4)


def test_herder_worker_and_herder_arq_commands_run_an_arq_app(
    redis_server: RedisProc, worker_env: dict[str, str]
) -> None:
    """`herder worker QUEUE --app module:WorkerSettings` (what `herder up` and the operator run)
    and `herder arq module.WorkerSettings --burst` both run the arq app's functions."""
    import subprocess
    from pathlib import Path

    import redis as sync_redis

    apps = str(Path(__file__).parent / "apps")
    env = {**worker_env, "PYTHONPATH": apps}
    r = sync_redis.Redis(port=redis_server.port, decode_responses=True)

    async def produce() -> list[str]:
        pool = ArqRedis(host="127.0.0.1", port=redis_server.port)
        ids = [str((await pool.enqueue_job("work", i, pause=0)).job_id) for i in range(3)]  # type: ignore[union-attr]
        await pool.close()
        return ids

    for cmd in (
        ["worker", "arq.queue", "--app", "arq_app:WorkerSettings", "--burst", "--concurrency", "2"],
        ["arq", "arq_app.WorkerSettings", "--burst"],
    ):
        ids = asyncio.run(produce())
        subprocess.run([sys.executable, "-m", "herder.cli", *cmd], env=env, check=True, timeout=60)
        for i, jid in enumerate(ids):
            assert r.hget(f"herder:{{arq.queue}}:job:{jid}", "result") is not None, cmd
            assert '"n":' + str(i * 2) in r.hget(f"herder:{{arq.queue}}:job:{jid}", "result"), cmd
    r.close()


async def test_hostile_inputs_are_refused_or_dead_lettered(
    settings: HerderSettings, arq_redis: ArqRedis, make_worker: Any
) -> None:
    """Bad names are refused at enqueue (nothing written); a corrupt payload written straight
    into Redis dead-letters its job at once instead of being retried."""
    for bad in ({"_job_id": "has space"}, {"_queue_name": "q" * 300}):
        with pytest.raises(InvalidInput):
            await arq_redis.enqueue_job("add", 1, **bad)
    with pytest.raises(InvalidInput):
        await arq_redis.enqueue_job("f" * 500)
    assert await arq_redis.keys("*") == []
    w = make_worker([add])
    corrupt = [
        [1, 2],
        {"args": "nope", "kwargs": {}},
        {"args": [1], "kwargs": {}, "arq": {"job_try": "x"}},
        {"args": [1], "kwargs": {}, "arq": {"enqueue_ms": 1.5}},
    ]
    async with HerderClient(settings, w.taskset) as c:
        ids = [(await c.enqueue(herder_queue("arq:queue"), "add", p)).id for p in corrupt]
        await w.main()
        for i in ids:
            job = await c.get_job(i, herder_queue("arq:queue"))
            assert job.state == JobState.dead and job.attempts == 1, (job.payload, job.errors)
