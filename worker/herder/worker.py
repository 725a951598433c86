"""The worker: arq's Worker shell (process lifecycle, signal wiring, function registry, hooks)
with Herder's claim/run/finish path.

arq's own path reads ready ids with ZRANGEBYSCORE and races every worker over them with
WATCH/MULTI, and recovers a crashed worker's job only after job_timeout + 10 s. Herder
replaces exactly that path (`main`, `_poll_iteration`, `run_job`, `heart_beat`,
`handle_sig`, `close`): one Lua call claims the best jobs for the free slots, a heartbeat
keeps leases alive, and finished attempts are written back in batches, fenced by lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import random
import signal
import socket
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from arq.worker import Worker, func
from pydantic import ValidationError
from pydantic_core import to_jsonable_python
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from herder import __version__, metrics
from herder.backoff import Backoff, retry_delay
from herder.client import HerderClient, JobRequest
from herder.connection import redis_client
from herder.cron import due_ticks, tick_job_id
from herder.errors import InvalidInput, PermanentError, RetryableError
from herder.keys import QueueKeys
from herder.logs import get_logger
from herder.scripts import Scripts
from herder.settings import HerderSettings
from herder.tasks import JobContext, Task, TaskSet

log = get_logger("herder.worker")

# Errors that mean "Redis is unreachable right now", as opposed to a bug in a script.
OUTAGE_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError)
MAX_ERROR_MESSAGE = 2000
TRACEBACK_TAIL_LINES = 20
LOG_EVENTS_KEPT = 2000
LOOP_BLOCK_THRESHOLD_S = 1.0
PRECISE_WINDOW_S = 0.25
# After handing jobs back at shutdown, how long to keep trying to write that to Redis.
GIVE_UP_AFTER_HAND_BACK_S = 10.0


def default_worker_id() -> str:
    """The pod name in Kubernetes (one worker per pod), else host-pid."""
    pod = os.environ.get("HERDER_WORKER_NAME") or os.environ.get("POD_NAME")
    return pod or f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class Running:
    job_id: str
    token: str
    task: asyncio.Task[None]
    ctx: JobContext
    started: float = field(default_factory=time.time)
    stop_reason: str | None = None  # why we cancelled it: cancelled | handback | lost
    finishing: bool = False  # outcome computed and being written: never cancel it now

    def stop(self, reason: str) -> bool:
        """Cancel the task for `reason`, unless it is already stopping or writing its outcome."""
        if self.stop_reason is not None or self.finishing:
            return False
        self.stop_reason = reason
        self.task.cancel()
        return True


class HerderWorker(Worker):
    def __init__(
        self,
        queue: str,
        tasks: TaskSet,
        settings: HerderSettings | None = None,
        *,
        concurrency: int = 10,
        name: str | None = None,
        capabilities: tuple[str, ...] = (),
        drain_timeout: float = 30.0,
        keep_result: float = 86_400.0,
        burst: bool = False,
        handle_signals: bool = True,
        on_startup: Any = None,
        on_shutdown: Any = None,
    ) -> None:
        if concurrency < 1:
            raise InvalidInput("concurrency must be >= 1")
        if drain_timeout < 0:
            raise InvalidInput("drain timeout must be >= 0")
        self.settings = settings or HerderSettings()
        self.keyspace = QueueKeys(self.settings.key_prefix, queue)
        self.herder_queue = queue
        self.taskset = tasks
        self.worker_id = name or default_worker_id()
        self.capacity = concurrency
        self.capabilities = sorted(set(capabilities))
        self.drain_timeout = drain_timeout
        self.keep_result_ms = int(keep_result * 1000)
        self.lease_ms = int(self.settings.lease_seconds * 1000)
        self.hb_interval = self.settings.lease_seconds / 3
        redis: Any = redis_client(self.settings)
        self.redis: Any = redis
        self.scripts = Scripts.register(redis)
        self.client = HerderClient(self.settings, tasks, redis=redis)
        functions = [func(self._arq_entry(t), name=t.name) for t in tasks]
        super().__init__(
            functions=functions or [func(self._arq_entry(None), name="noop")],
            queue_name=self.keyspace.ready,
            redis_pool=redis,
            burst=burst,
            max_jobs=concurrency,
            poll_delay=0,
            handle_signals=handle_signals,
            on_startup=on_startup,
            on_shutdown=on_shutdown,
        )
        self.running: dict[str, Running] = {}
        self.draining = False
        self.drain_source: str | None = None  # "signal" or "redis"
        self.exit_when_drained = False
        self.drain_deadline: float | None = None
        self._drain_started: float | None = None
        self._give_up_at: float | None = None
        self.stop_event = asyncio.Event()
        self.slot_event = asyncio.Event()
        self.stop_now = False
        self._finish_buf: list[tuple[list[str], asyncio.Future[str]]] = []
        self._next_hb = 0.0
        self._healthy_since: float | None = None
        self._outage_since: float | None = None
        self._next_due: float | None = None
        self._next_expiry: float | None = None
        self._cron_checked = time.time()
        self._started_at = time.time()
        self.exit_code = 0
        self.persistence_warning: str | None = None
        self._persistence_checked = False

    @staticmethod
    def _arq_entry(task: Task | None) -> Any:
        # Registered with arq so that arq's registry lists Herder's tasks and a plain arq Worker
        # can run them too (payload as keyword arguments); Herder's own path calls `task.fn`.
        async def entry(ctx: dict[str, Any], **payload: Any) -> Any:
            if task is None:
                return None

            async def discard(_: Any) -> None:
                return None

            jctx = JobContext(
                job_id=str(ctx.get("job_id", "")),
                queue="arq",
                task=task.name,
                attempt=int(ctx.get("job_try", 1)),
                max_attempts=task.max_attempts,
                worker_id="arq",
                state=ctx,
                _progress=discard,
                _log=discard,
            )
            return await task.fn(jctx, task.parse_payload(payload))

        return entry

    # ---- lifecycle -----------------------------------------------------------------------

    async def main(self) -> None:
        self.ctx["redis"] = self.pool
        self.ctx["worker_id"] = self.worker_id
        metrics.CAPACITY.labels(self.herder_queue).set(self.capacity)
        # Counters exported at 0 from the start: increase() in the alerts needs a sample before
        # the first event, or a worker's first blocked loop or Redis error is never seen.
        for counter in (metrics.LOOP_BLOCKED, metrics.REDIS_ERRORS, metrics.STALE_FINISH):
            counter.labels(self.herder_queue)
        if self.on_startup:
            await self.on_startup(self.ctx)
        log.info(
            "worker starting",
            worker=self.worker_id,
            queue=self.herder_queue,
            capacity=self.capacity,
            tasks=self.taskset.names(),
            lease_s=self.settings.lease_seconds,
        )
        watchdog = asyncio.create_task(self._loop_watchdog())
        try:
            while not self._done():
                try:
                    await self._poll_iteration()
                except OUTAGE_ERRORS as exc:
                    await self._redis_down(exc)
            if self.running:
                # Redis stayed unreachable after the hand-back: exiting is safe (the jobs are still
                # "active" in Redis; their leases expire and other workers run them) and beats
                # hanging until the pod is killed.
                log.error(
                    "exiting with job outcomes unwritten: Redis unreachable; their leases will expire",
                    jobs=list(self.running),
                )
                self.exit_code = 1
            await self._leave()
        finally:
            watchdog.cancel()

    def _done(self) -> bool:
        if self._give_up_at is not None and time.monotonic() >= self._give_up_at:
            return True  # jobs handed back but Redis never took the hand-back: see main()
        if self.stop_now and not self.running:
            return True
        if self.draining and self.exit_when_drained and not self.running:
            return True
        return bool(self.burst and self._burst_idle)

    _burst_idle = False

    async def close(self) -> None:
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        with contextlib.suppress(Exception):
            await self.redis.aclose()

    def handle_sig(self, signum: int) -> None:
        """First SIGTERM/SIGINT: drain (bounded by the drain timeout). Second: stop at once,
        handing every running job back."""
        sig = signal.Signals(signum).name
        if self.draining and self.drain_source == "signal":
            log.warning(
                "second signal: stopping now, handing jobs back", signal=sig, in_flight=len(self.running)
            )
            self._hand_back_all()
            self.stop_now = True
        else:
            log.info(
                "draining on signal", signal=sig, in_flight=len(self.running), timeout_s=self.drain_timeout
            )
            # Already draining on request (the operator drains, then deletes the pod): the
            # timeout counts from when the drain began, not from the signal.
            started = self._drain_started if self.draining and self._drain_started else time.monotonic()
            self.draining = True
            self._drain_started = started
            self.drain_source = "signal"
            self.exit_when_drained = True
            self.drain_deadline = started + self.drain_timeout
            self._next_hb = 0.0  # tell the registry now
        self.stop_event.set()
        self.slot_event.set()

    def _hand_back_all(self) -> None:
        if self._give_up_at is None:
            self._give_up_at = time.monotonic() + GIVE_UP_AFTER_HAND_BACK_S
        for r in self.running.values():
            r.stop("handback")

    async def _leave(self) -> None:
        """Remove this worker from the registry on a clean exit."""
        with contextlib.suppress(*OUTAGE_ERRORS, RedisError):
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self.keyspace.workers, self.worker_id)
                pipe.delete(self.keyspace.worker(self.worker_id), self.keyspace.control(self.worker_id))
                await pipe.execute()
        log.info(
            "worker stopped", worker=self.worker_id, completed=self.jobs_complete, failed=self.jobs_failed
        )

    async def _check_persistence(self) -> None:
        try:
            cfg = await self.redis.config_get("appendonly")
            cfg.update(await self.redis.config_get("save"))
        except OUTAGE_ERRORS:
            raise
        except RedisError as exc:  # CONFIG is often denied to least-privilege ACL users
            log.info("cannot read Redis persistence settings", error=str(exc))
            return
        if cfg.get("appendonly") != "yes" and not cfg.get("save"):
            self.persistence_warning = (
                "Redis persistence is off: pending jobs will be lost if Redis restarts; "
                "enable AOF (appendonly yes, appendfsync everysec)"
            )
            log.warning(self.persistence_warning, appendonly=cfg.get("appendonly"), save=cfg.get("save"))

    async def _redis_down(self, exc: BaseException) -> None:
        metrics.REDIS_UP.labels(self.herder_queue).set(0)
        metrics.REDIS_ERRORS.labels(self.herder_queue).inc()
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = now
            log.error("redis unreachable; jobs keep running, retrying", error=f"{type(exc).__name__}: {exc}")
        self._healthy_since = None
        self._next_hb = 0.0
        # Bounded back-off: 0.1 s doubling to 2 s, so Redis is retried well within 10 s of returning.
        down_for = now - self._outage_since
        await self._sleep_or_stop(min(2.0, 0.1 * 2 ** min(down_for, 5)))

    def _redis_up(self) -> None:
        now = time.monotonic()
        if self._outage_since is not None:
            log.warning("redis reachable again", down_s=round(now - self._outage_since, 2))
            self._outage_since = None
        if self._healthy_since is None:
            self._healthy_since = now
        metrics.REDIS_UP.labels(self.herder_queue).set(1)

    async def _sleep_or_stop(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stop_event.wait(), seconds)

    async def _loop_watchdog(self) -> None:
        """A task that blocks the event loop delays every other job: report it."""
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(0.25)
            lag = time.monotonic() - t0 - 0.25
            metrics.LOOP_LAG.labels(self.herder_queue).set(max(lag, 0))
            if lag > LOOP_BLOCK_THRESHOLD_S:
                metrics.LOOP_BLOCKED.labels(self.herder_queue).inc()
                log.warning(
                    "event loop blocked: a task ran synchronous code; run it in a thread",
                    blocked_s=round(lag, 2),
                    jobs=list(self.running),
                )

    # ---- the loop ------------------------------------------------------------------------

    def _heartbeat_payload(self) -> str:
        fields = {
            "id": self.worker_id,
            "queue": self.herder_queue,
            "host": socket.gethostname(),
            "pod": os.environ.get("POD_NAME", ""),
            "pid": os.getpid(),
            "capacity": self.capacity,
            "in_flight": len(self.running),
            "jobs": json.dumps(list(self.running)),
            "capabilities": json.dumps(self.capabilities),
            "drained": "1" if self.draining and not self.running else "0",
            "started_at": repr(self._started_at),
            "version": __version__,
        }
        if self.drain_source == "signal":
            fields["draining"] = "1"
        jobs = [[r.job_id, r.token] for r in self.running.values() if r.stop_reason is None]
        return json.dumps({"fields": fields, "jobs": jobs})

    async def _poll_iteration(self) -> None:
        if not self._persistence_checked:
            await self._check_persistence()  # here, not at start-up: Redis may be down when we start
            self._persistence_checked = True
        # Cleared before `free` is read: a job that ends from here on sets it, and _wait sees it.
        self.slot_event.clear()
        now = time.monotonic()
        if self.draining and self.drain_deadline is not None and now >= self.drain_deadline and self.running:
            log.warning("drain deadline reached: handing jobs back", jobs=list(self.running))
            self._hand_back_all()
            self.drain_deadline = None
        free = self.capacity - len(self.running)
        want = 0 if (self.draining or self.stop_now) else free
        hb_due = now >= self._next_hb
        if want == 0 and not hb_due:
            await self._wait(free=0)  # nothing to claim and no heartbeat due: no round trip
            return
        reap = self._healthy_since is not None and now - self._healthy_since >= self.settings.lease_seconds
        res = await self.scripts.claim(
            keys=[self.keyspace.ready],
            args=[
                self.keyspace.base,
                self.worker_id,
                want,
                self.lease_ms,
                json.dumps(self.capabilities),
                self._heartbeat_payload() if hb_due else "",
                "1" if reap else "0",
            ],
        )
        self._redis_up()
        jobs, redis_now, next_due, next_expiry, _paused, draining, lost, cancels, _expired = res
        if hb_due:
            self._next_hb = now + self.hb_interval
            await self._run_cron()
        self._apply_control(int(draining), lost, cancels)
        redis_now_s = int(redis_now) / 1000
        self._next_due = now + (int(next_due) / 1000 - redis_now_s) if next_due else None
        self._next_expiry = now + (int(next_expiry) / 1000 - redis_now_s) if next_expiry else None
        for row in jobs:
            self._start(row)
        if self.burst:
            self._burst_idle = not jobs and not self.running
            if self._burst_idle:
                st = await self.client.status(self.herder_queue)
                self._burst_idle = st.ready + st.scheduled + st.waiting + st.active == 0
        if jobs and len(jobs) == want:
            return  # maybe more ready: claim again at once
        await self._wait(free=want - len(jobs))

    def _apply_control(self, draining: int, lost: list[str], cancels: list[str]) -> None:
        if draining and not self.draining:
            log.info("draining on request", worker=self.worker_id, in_flight=len(self.running))
            self.draining, self.drain_source = True, "redis"
            self._drain_started = time.monotonic()
            self._next_hb = 0.0
        elif not draining and self.draining and self.drain_source == "redis":
            log.info("drain cancelled", worker=self.worker_id)
            self.draining, self.drain_source, self.exit_when_drained = False, None, False
            self._drain_started = None
        if self.drain_source == "redis":
            self.exit_when_drained = draining == 2
        for jid in lost:
            r = self.running.get(jid)
            if r and r.stop("lost"):
                log.warning("lease lost: another worker owns this job now; stopping our copy", job=jid)
        for jid in cancels:
            r = self.running.get(jid)
            if r and r.stop("cancelled"):
                log.info("cancel requested", job=jid)
                r.ctx.cancel_event.set()

    async def _wait(self, free: int) -> None:
        """Sleep until there may be work. With free slots: block in Redis on the queue's wake
        list and this worker's control list. With none: wait locally for a slot (control
        messages then arrive with the next heartbeat). Either way wake for the next heartbeat,
        scheduled job, reapable lease, or drain deadline."""
        if self._done() or (self.stop_event.is_set() and self.stop_now):
            return
        now = time.monotonic()
        deadlines = [self._next_hb]
        if self._next_expiry is not None and self._healthy_since is not None:
            deadlines.append(max(self._next_expiry + 0.05, self._healthy_since + self.settings.lease_seconds))
        if self.draining and self.drain_deadline is not None:
            deadlines.append(self.drain_deadline)
        coarse = max(0.005, min(deadlines) - now)
        due = self._next_due - now if self._next_due is not None else None
        timeout = min(coarse, due) if due is not None else coarse
        waits = [asyncio.ensure_future(self.stop_event.wait())]
        if free > 0 and not (due is not None and due <= timeout and due < PRECISE_WINDOW_S):
            # Redis times out blocked clients only every ~100 ms, so a scheduled job's due time
            # is approached in Redis until PRECISE_WINDOW_S before it, then with a local timer.
            server_timeout = timeout - PRECISE_WINDOW_S / 2 if due is not None and due <= timeout else timeout
            keys = [self.keyspace.wake, self.keyspace.control(self.worker_id)]
            waiter = asyncio.ensure_future(self.redis.blpop(keys, timeout=max(0.01, server_timeout)))
            waits.append(waiter)
            local_timeout = None
        else:
            waiter = None
            if free == 0:
                waits.append(asyncio.ensure_future(self.slot_event.wait()))
            local_timeout = timeout
        try:
            done, _ = await asyncio.wait(waits, timeout=local_timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for f in waits:
                if not f.done():
                    f.cancel()
        self.stop_event.clear()
        if waiter is not None and waiter in done:
            popped = waiter.result()  # also surfaces Redis errors to the outage handler
            if popped and popped[0] != self.keyspace.wake:
                self._next_hb = 0.0  # a control message (drain, cancel): heartbeat now to read it

    # ---- running one job -----------------------------------------------------------------

    def _start(self, row: list[Any]) -> None:
        job_id, task_name, payload_json, attempt, timeout, max_attempts, backoff_json = row
        token = str(attempt)
        ctx = JobContext(
            job_id=job_id,
            queue=self.herder_queue,
            task=task_name,
            attempt=int(attempt),
            max_attempts=int(max_attempts),
            worker_id=self.worker_id,
            state=self.ctx,
            _progress=functools.partial(self._progress, job_id, token),
            _log=functools.partial(self._log, job_id),
        )
        task = asyncio.create_task(
            self._run(ctx, token, payload_json, float(timeout) if timeout else None, backoff_json)
        )
        self.running[job_id] = Running(job_id=job_id, token=token, task=task, ctx=ctx)
        self.tasks[job_id] = task
        metrics.IN_FLIGHT.labels(self.herder_queue).set(len(self.running))

    async def _run(
        self, ctx: JobContext, token: str, payload_json: str, timeout: float | None, backoff_json: str
    ) -> None:
        started = time.time()
        outcome, data, delay_ms, reason = "ok", "null", 0, ""
        try:
            task = self.taskset.get(ctx.task)
            payload = task.parse_payload(json.loads(payload_json))
            if timeout:
                async with asyncio.timeout(timeout) as cm:
                    try:
                        result = await task.fn(ctx, payload)
                    except TimeoutError:
                        if cm.expired():
                            raise
                        raise RetryableError("TimeoutError raised inside the task") from None
            else:
                result = await task.fn(ctx, payload)
            try:
                data = json.dumps(to_jsonable_python(result), separators=(",", ":"))
            except Exception as exc:  # a result we cannot store is the task's bug: don't retry it
                raise PermanentError(f"result is not JSON-serialisable: {exc}") from None
        except asyncio.CancelledError:
            reason_code = self.running[ctx.job_id].stop_reason if ctx.job_id in self.running else None
            if reason_code == "lost":
                self._forget(ctx.job_id)
                return
            kind = "cancelled" if reason_code == "cancelled" else "handed_back"
            outcome = "cancelled" if kind == "cancelled" else "handback"
            msg = (
                "cancelled on request" if kind == "cancelled" else f"worker {self.worker_id} stopped mid-task"
            )
            data = self._error(ctx, kind, "Cancelled", msg, "", started)
            reason = msg
        except TimeoutError:
            outcome, reason = "retry", f"timed out after {timeout} s"
            data = self._error(ctx, "timeout", "TimeoutError", reason, "", started)
            delay_ms = self._delay_ms(backoff_json, ctx.attempt, None)
        except (InvalidInput, ValidationError) as exc:
            outcome, reason = "dead", f"cannot run: {exc}"
            data = self._error(ctx, "permanent", type(exc).__name__, str(exc), "", started)
        except PermanentError as exc:
            outcome, reason = "dead", str(exc) or type(exc).__name__
            data = self._error(ctx, "permanent", type(exc).__name__, str(exc), _tb(exc), started)
        except Exception as exc:
            outcome, reason = "retry", f"{type(exc).__name__}: {exc}"[:MAX_ERROR_MESSAGE]
            data = self._error(ctx, "error", type(exc).__name__, str(exc), _tb(exc), started)
            hint = exc.delay if isinstance(exc, RetryableError) else None
            delay_ms = self._delay_ms(backoff_json, ctx.attempt, hint)
        if ctx.job_id in self.running:
            self.running[ctx.job_id].finishing = True
        elapsed = time.time() - started
        metrics.JOB_SECONDS.labels(self.herder_queue, ctx.task).observe(elapsed)
        final = await self._finish(ctx.job_id, token, outcome, data, delay_ms, reason)
        metrics.JOBS.labels(self.herder_queue, ctx.task, final).inc()
        if final == "succeeded":
            self.jobs_complete += 1
        elif final in ("dead", "cancelled"):
            self.jobs_failed += 1
        elif final == "stale":
            metrics.STALE_FINISH.labels(self.herder_queue).inc()
            log.warning("result discarded: lease had moved to another worker", job=ctx.job_id)
        else:
            self.jobs_retried += 1
        # Successes are routine (debug); every other outcome is worth a line at info.
        (log.debug if final == "succeeded" else log.info)(
            "job finished",
            job=ctx.job_id,
            task=ctx.task,
            attempt=ctx.attempt,
            outcome=final,
            seconds=round(elapsed, 3),
            reason=reason or None,
        )
        self._forget(ctx.job_id)

    def _forget(self, job_id: str) -> None:
        self.running.pop(job_id, None)
        self.tasks.pop(job_id, None)
        metrics.IN_FLIGHT.labels(self.herder_queue).set(len(self.running))
        if self.draining and not self.running:
            self._next_hb = 0.0  # report "drained" now: the operator waits for it to scale down
        self.slot_event.set()

    def _error(self, ctx: JobContext, kind: str, etype: str, message: str, tb: str, started: float) -> str:
        return json.dumps(
            {
                "attempt": ctx.attempt,
                "kind": kind,
                "type": etype,
                "message": message[:MAX_ERROR_MESSAGE],
                "traceback": tb,
                "worker": self.worker_id,
                "started_at": started,
                "ended_at": time.time(),
            }
        )

    @staticmethod
    def _delay_ms(backoff_json: str, attempt: int, hint: float | None) -> int:
        if hint is not None:
            return int(max(0.0, hint) * 1000)
        policy = Backoff.model_validate_json(backoff_json) if backoff_json else Backoff()
        return int(retry_delay(policy, attempt, random.uniform(-1, 1)) * 1000)

    async def _finish(
        self, job_id: str, token: str, outcome: str, data: str, delay_ms: int, reason: str
    ) -> str:
        """Queue this attempt's outcome for the next batched write; wait until it is stored."""
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._finish_buf.append(([job_id, token, outcome, data, str(delay_ms), reason], fut))
        if len(self._finish_buf) == 1:
            asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self._flush()))
        return await asyncio.shield(fut)

    async def _flush(self) -> None:
        batch, self._finish_buf = self._finish_buf, []
        if not batch:
            return
        args = [self.keyspace.base, self.worker_id, str(self.keep_result_ms)]
        for row, _ in batch:
            args.extend(row)
        delay = 0.1
        while True:
            try:
                out = await self.scripts.finish(keys=[self.keyspace.ready], args=args)
                break
            except OUTAGE_ERRORS as exc:
                # The outcome is kept in memory and written once Redis is back; the lease fences it.
                metrics.REDIS_ERRORS.labels(self.herder_queue).inc()
                if delay == 0.1:
                    log.warning("cannot store job outcomes yet; retrying", jobs=len(batch), error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            except ResponseError as exc:
                log.error("finish script failed", error=str(exc))
                out = ["error"] * len(batch)
                break
        for (_, fut), state in zip(batch, out, strict=True):
            if not fut.done():
                fut.set_result(state)

    async def _progress(self, job_id: str, token: str, data: dict[str, Any]) -> None:
        try:
            await self.scripts.progress(
                keys=[self.keyspace.job(job_id)],
                args=[self.keyspace.base, job_id, token, self.worker_id, json.dumps(data, default=str)],
            )
        except RedisError as exc:  # progress is advisory; never fail a job over it
            log.warning("progress not stored", job=job_id, error=str(exc))

    async def _log(self, job_id: str, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        key = self.keyspace.log(job_id)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.rpush(key, *[json.dumps(e, default=str) for e in events])
                pipe.ltrim(key, -LOG_EVENTS_KEPT, -1)
                await pipe.execute()
        except RedisError as exc:
            log.warning("event log not stored", job=job_id, error=str(exc))

    # ---- cron ----------------------------------------------------------------------------

    async def heart_beat(self) -> None:  # arq's hook; Herder's heartbeat rides on the claim call
        return None

    async def _run_cron(self) -> None:
        crons = [t for t in self.taskset if t.cron]
        if not crons:
            return
        now = time.time()
        until = now + self.hb_interval + 1.0  # enqueue a little ahead; the job is scheduled at the tick
        reqs = []
        for t in crons:
            assert t.cron is not None
            for tick in due_ticks(t.cron, self._cron_checked, until):
                reqs.append(
                    JobRequest(task=t.name, payload=t.cron_payload, id=tick_job_id(t.name, tick), at=tick)
                )
        self._cron_checked = until
        if reqs:
            await self.client.enqueue_many(self.herder_queue, reqs)


def _tb(exc: BaseException) -> str:
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return "".join(lines)[-4000:].split("\n", 1)[-1] if len(lines) > TRACEBACK_TAIL_LINES else "".join(lines)


def run_worker(worker: HerderWorker) -> int:
    logging.getLogger("arq").setLevel(logging.WARNING)
    worker.run()
    return worker.exit_code
