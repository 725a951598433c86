"""Finished attempts are written back in batches: every outcome that arrives while one write is
queued joins it, so a busy worker stores many outcomes in one finish-script call. Each outcome is
fenced by its lease token in the script, so a write retried after an outage cannot clobber a job
that another worker now owns."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from redis.exceptions import ResponseError

from herder import metrics, recent
from herder.keys import QueueKeys
from herder.logs import get_logger
from herder.scripts import Scripts
from herder.worker.health import is_outage
from herder.worker.outcome import Outcome

log = get_logger("herder.worker")


class FinishBatcher:
    def __init__(self, scripts: Scripts, keyspace: QueueKeys, worker_id: str, keep_result_ms: int) -> None:
        self.scripts = scripts
        self.keyspace = keyspace
        self.worker_id = worker_id
        self.keep_result_ms = keep_result_ms
        self._buf: list[tuple[list[str], Callable[[str], None]]] = []
        self._flushes: set[asyncio.Future[None]] = set()

    def submit(self, job_id: str, token: str, o: Outcome, done: Callable[[str], None]) -> None:
        """Queue this attempt's outcome for the next batched write; `done` is called with the
        job's resulting state ("stale" when the lease had moved on) once it is stored. The job's
        task need not wait for it: a callback per job costs a fraction of a future, a shield and
        one more step of the task."""
        self._buf.append(([job_id, token, o.outcome, o.data, str(o.delay_ms), o.reason], done))
        if len(self._buf) == 1:
            asyncio.get_running_loop().call_soon(self._start_flush)

    async def finish(self, job_id: str, token: str, o: Outcome) -> str:
        """`submit`, then wait until the outcome is stored; returns the job's resulting state."""
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.submit(job_id, token, o, lambda state: None if fut.done() else fut.set_result(state))
        return await asyncio.shield(fut)

    def _start_flush(self) -> None:
        task = asyncio.ensure_future(self.flush())
        self._flushes.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._flushes.discard)

    async def flush(self) -> None:
        batch, self._buf = self._buf, []
        if not batch:
            return
        queue = self.keyspace.queue
        # The script also notes succeeded and cancelled ids in the browse index (herder.recent).
        args = [self.worker_id, str(self.keep_result_ms), str(recent.RECENT_KEPT)]
        for row, _ in batch:
            args.extend(row)
        delay = 0.1
        while True:
            try:
                out = await self.scripts.finish(self.keyspace, *args)
                break
            except Exception as exc:
                if not is_outage(exc):
                    # Refused by Redis, or a fault in the client library (seen: a cluster client's
                    # "dictionary changed size"). Raising here would kill this flush task and leave
                    # every waiter, and its job's slot, in flight for ever. Answer "error" instead:
                    # the worker lets the job go and its lease expires, so another attempt runs it.
                    log.error(
                        "finish script failed",
                        error=str(exc),
                        error_type=type(exc).__name__,
                        exc_info=not isinstance(exc, ResponseError),
                    )
                    out = ["error"] * len(batch)
                    break
                # The outcome is kept in memory and written once Redis is back; the lease fences it.
                metrics.REDIS_ERRORS.labels(queue).inc()
                if delay == 0.1:
                    log.warning("cannot store job outcomes yet; retrying", jobs=len(batch), error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        for (_, done), state in zip(batch, out, strict=True):
            try:
                done(state)
            except Exception as exc:  # one job's bookkeeping must not cost the others theirs
                log.error("after-finish step failed", error=str(exc), exc_info=True)
