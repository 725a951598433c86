"""Poison jobs cannot loop for ever: a job whose own code raises CancelledError, or whose code
(or processes) signals its own worker into handing it back, spends attempts and ends in the DLQ.
Both looped without end before: a self-raised CancelledError looked like a hand-back (no
attempt spent; 1,323 re-runs in 8 s), and a job that SIGTERMed its worker twice was handed back
free by every worker it killed."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helpers import running_worker, wait_state
from herder.backoff import Backoff
from herder.client import HerderClient
from herder.settings import HerderSettings
from herder.tasks import JobContext, TaskSet, load_taskset
from procs import WorkerProc


async def test_a_task_raising_cancelled_error_itself_spends_attempts_and_dies(
    settings: HerderSettings,
) -> None:
    app = TaskSet(load_taskset(None))
    runs = 0

    @app.task(max_attempts=3, backoff=Backoff(base_seconds=0.01, max_seconds=0.05))
    async def self_cancel(ctx: JobContext, p: Any) -> None:
        nonlocal runs
        runs += 1
        raise asyncio.CancelledError()

    async with HerderClient(settings, app) as c, running_worker(settings, tasks=app, concurrency=2):
        r = await c.enqueue("default", "self_cancel")
        j = await wait_state(c, r.id, "dead", timeout=60)
    assert j.attempts == 3 and runs == 3
    assert {e.type for e in j.errors} == {"RetryableError"}
    assert "raised CancelledError without being cancelled" in j.errors[-1].message


async def test_a_job_that_keeps_stopping_its_worker_reaches_the_dlq(
    worker_env: dict[str, str], settings: HerderSettings
) -> None:
    sys.path.insert(0, str(Path(__file__).parent / "apps"))
    from poison_app import tasks as poison_tasks

    async with HerderClient(settings, poison_tasks) as client:
        await stop_worker_until_dead(worker_env, client)


async def stop_worker_until_dead(worker_env: dict[str, str], client: HerderClient) -> None:
    r = await client.enqueue("default", "regicide")
    # 3 free hand-backs, then each spends one of its 2 attempts: 5 workers. One more is slack;
    # before the fix the job was handed back free by every one of them.
    for n in range(6):
        w = WorkerProc(worker_env, f"victim-{n}", concurrency=1, app="poison_app", drain_timeout=600)
        try:
            code = await asyncio.to_thread(w.wait, 60)  # the job stops it
            assert code == 0
        finally:
            w.stop()
        j = await client.get_job(r.id)
        if j.state == "dead":
            break
    assert j.state == "dead", (j.state, j.attempts, [e.kind for e in j.errors])
    assert j.attempts == 2 and "handed back 5 times" in (j.dead_reason or "")
    assert [e.kind for e in j.errors] == ["handed_back"] * 5


async def test_a_finish_write_failing_in_the_client_library_answers_error_instead_of_hanging(
    client: HerderClient,
) -> None:
    """A fault inside the Redis client (not an outage, not a Redis error reply; seen on a cluster
    client: "dictionary changed size during iteration") must not kill the batched write and leave
    the job's slot waiting for ever: the waiter gets "error", the job is let go (lease expires)."""
    import dataclasses

    from herder.scripts import Scripts
    from herder.worker.finishing import FinishBatcher
    from herder.worker.outcome import Outcome

    class FaultyFinish:
        async def __call__(self, *args: Any) -> Any:
            raise RuntimeError("dictionary changed size during iteration")

    faulty = dataclasses.replace(Scripts.register(client.redis), finish=FaultyFinish())
    batcher = FinishBatcher(faulty, client.keys("default"), "w1", 60_000)
    states = await asyncio.wait_for(
        asyncio.gather(*(batcher.finish(f"j{i}", "1", Outcome("ok", "{}")) for i in range(3))), 30
    )
    assert states == ["error"] * 3


async def test_one_jobs_after_finish_step_failing_does_not_cost_the_batchs_other_jobs_theirs(
    client: HerderClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """A job's task hands its outcome to the batched write and ends; what follows the write
    (counting, logging, freeing the slot) runs as a callback per job. One callback that raises
    must not leave the batch's other jobs unfinished (their slots taken for ever)."""
    from herder.scripts import Scripts
    from herder.worker.finishing import FinishBatcher
    from herder.worker.outcome import Outcome

    batcher = FinishBatcher(Scripts.register(client.redis), client.keys("default"), "w1", 60_000)
    seen: list[tuple[str, str]] = []
    all_done = asyncio.Event()

    def done(job: str) -> Callable[[str], None]:
        def after(state: str) -> None:
            if job == "j1":
                raise RuntimeError("bookkeeping bug")
            seen.append((job, state))
            if len(seen) == 2:
                all_done.set()

        return after

    for i in range(3):
        batcher.submit(f"j{i}", "1", Outcome("ok", "{}"), done(f"j{i}"))
    await asyncio.wait_for(all_done.wait(), 30)
    assert seen == [("j0", "stale"), ("j2", "stale")]  # no such jobs leased: stale, and answered
    printed = capsys.readouterr()  # structlog prints to stdout unless herder.logs configured it
    assert "after-finish step failed" in printed.out + printed.err
