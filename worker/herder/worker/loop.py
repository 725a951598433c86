"""`HerderWorker`: arq's Worker shell (process lifecycle, signal wiring, function registry,
hooks) with Herder's claim loop. The other concerns live beside it: health.py, shutdown.py,
outcome.py (pure), finishing.py, progress.py, cron.py, arq_adapter.py.

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
import socket
import time
import weakref
from typing import Any

from redis.exceptions import RedisError

from herder import __version__, metrics, replies, trends
from herder.client import HerderClient
from herder.connection import redis_client
from herder.errors import IdConflict, InvalidInput, RetryableError
from herder.keys import QueueKeys
from herder.logs import get_logger
from herder.scripts import Scripts
from herder.settings import HerderSettings
from herder.tasks import JobContext, TaskSet
from herder.worker import arq_adapter, outcome
from herder.worker.arq_adapter import arq_functions
from herder.worker.claimed import Claimed, decode_row
from herder.worker.cron import cron_requests, cron_secret
from herder.worker.finishing import FinishBatcher
from herder.worker.health import OUTAGE_ERRORS, HealthMixin, is_outage
from herder.worker.progress import Reporter
from herder.worker.shutdown import ShutdownMixin
from herder.worker.state import Running

# Failures of advisory writes (trend samples): any Redis error or outage, never fatal.
ADVISORY_ERRORS: tuple[type[Exception], ...] = (RedisError, *OUTAGE_ERRORS)
log = get_logger("herder.worker")

PRECISE_WINDOW_S = 0.25
# Jobs claimed per call at most: half the slots, and no more than CLAIM_BATCH. A busy worker
# claims again at once after a full claim, so smaller claims keep Redis working on the next
# one (and on the last batch's finish) while this process runs the jobs just claimed; one
# claim of every free slot left the two taking turns. Measured (no-op jobs, one worker):
# concurrency 100, ~12k jobs/s claiming every free slot, 19-25k with 20-25 per claim (much
# smaller claims cost more per job than they overlap); concurrency 10, 10.5k -> 11.9k with 5.
CLAIM_BATCH = 25


def default_worker_id() -> str:
    """The pod name in Kubernetes (one worker per pod), else host-pid."""
    pod = os.environ.get("HERDER_WORKER_NAME") or os.environ.get("POD_NAME")
    return pod or f"{socket.gethostname()}-{os.getpid()}"


class HerderWorker(ShutdownMixin, HealthMixin):
    # The job's task hands its outcome to the batched write and ends (see _run, _finish).
    finish_in_batch = True

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
        keep_result: float | None = 86_400.0,
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
        # For jobs that carry no max_attempts: this worker's value per task (claim.lua stamps it).
        self._attempt_limits = json.dumps({t.name: t.attempts_limit for t in tasks})
        self.worker_id = name or default_worker_id()
        self.capacity = concurrency
        self.capabilities = sorted(set(capabilities))
        self.drain_timeout = drain_timeout
        self.lease_ms = int(self.settings.lease_seconds * 1000)
        self.hb_interval = self.settings.lease_seconds / 3
        redis: Any = redis_client(self.settings)
        self.redis = redis
        self.scripts = Scripts.register(redis)
        self.client = HerderClient(self.settings, tasks, redis=redis)
        self.keep_result_ms = script_keep_ms(keep_result)
        self.finisher = FinishBatcher(self.scripts, self.keyspace, self.worker_id, self.keep_result_ms)
        self.reporter = Reporter(
            redis,
            self.scripts,
            self.keyspace,
            self.worker_id,
            max_progress_bytes=self.settings.max_progress_bytes,
            max_event_bytes=self.settings.max_log_event_bytes,
            max_events=self.settings.max_log_events,
        )
        self._trend_minute = 0
        self._cron_secret: str | None = None
        # In flight: read at scrape time, not set per job start and end (weakly: the registry
        # is global).
        me = weakref.ref(self)
        metrics.IN_FLIGHT.labels(queue).set_function(lambda: len(w.running) if (w := me()) is not None else 0)
        # Metric children resolved once, not per job: .labels() costs more than the update.
        self._m_seconds: dict[str, Any] = {}
        self._m_jobs: dict[tuple[str, str], Any] = {}
        # A line per success only at debug level: building it costs more than the rest of a
        # no-op job's bookkeeping.
        self._log_successes = logging.getLogger("herder.worker").isEnabledFor(logging.DEBUG)
        super().__init__(
            functions=arq_functions(tasks),
            queue_name=self.keyspace.ready,
            redis_pool=redis,
            burst=burst,
            max_jobs=concurrency,
            poll_delay=0,
            handle_signals=handle_signals,
            on_startup=on_startup,
            on_shutdown=on_shutdown,
        )
        self.running = {}
        self.draining = False
        self.drain_source = None
        self.exit_when_drained = False
        self.drain_deadline = None
        self._drain_started = None
        self._give_up_at = None
        self.stop_event = asyncio.Event()
        self.slot_event = asyncio.Event()
        self.stop_now = False
        self._next_hb = 0.0
        self._healthy_since = None
        self._outage_since = None
        self._next_due = None
        self._next_expiry = None
        self._burst_idle = False
        self._cron_checked = time.time()
        self._started_at = time.time()
        self.exit_code = 0
        self.persistence_warning = None
        self._persistence_checked = False

    # ---- lifecycle -----------------------------------------------------------------------

    def _arq_client(self) -> Any:
        return arq_adapter.ctx_client(self.settings, self.redis, self.herder_queue, self.taskset)

    async def run_check(self, retry_jobs: bool | None = None, max_burst_jobs: int | None = None) -> int:
        """arq's run_check: run in burst mode, then raise FailedJobs listing the jobs that died
        in this run, or return how many succeeded. (arq's own read arq's result keys: empty.)"""
        from arq.worker import FailedJobs

        self.burst = True
        started = time.time()
        await self.main()
        if self.jobs_failed:
            since = started - 1  # Redis' clock stamps finished_at; allow a little skew
            raise FailedJobs(
                self.jobs_failed, await arq_adapter.failed_results(self.client, self.herder_queue, since)
            )
        return self.jobs_complete

    async def main(self) -> None:
        self._burst_idle = False  # a second main() (arq's run_check, tests) runs again
        self.ctx["redis"] = self._arq_client()
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
                except Exception as exc:
                    if not is_outage(exc):
                        raise
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

    async def heart_beat(self) -> None:  # arq's hook; Herder's heartbeat rides on the claim call
        return None

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
        want = 0 if (self.draining or self.stop_now) else min(free, CLAIM_BATCH, (self.capacity + 1) // 2)
        hb_due = now >= self._next_hb
        if want == 0 and not hb_due:
            await self._wait(free=0)  # nothing to claim and no heartbeat due: no round trip
            return
        # Reap (expired leases, gone workers) with each heartbeat and once the earliest lease
        # this worker knows of has run out, not on every claim: a busy worker claims many
        # times a second, and each reap costs Redis two range reads.
        reap = (
            self._healthy_since is not None
            and now - self._healthy_since >= self.settings.lease_seconds
            and (hb_due or (self._next_expiry is not None and now >= self._next_expiry))
        )
        res = replies.claim_reply(
            await self.scripts.claim(
                self.keyspace,
                self.worker_id,
                want,
                self.lease_ms,
                json.dumps(self.capabilities),
                self._heartbeat_payload() if hb_due else "",
                "1" if reap else "0",
                self._attempt_limits,
            )
        )
        self._redis_up()
        if hb_due:
            self._next_hb = now + self.hb_interval
            await self._run_cron()
            await self._record_trend()
        self._apply_control(res.draining, res.lost, res.cancels)
        redis_now_s = res.now_ms / 1000
        self._next_due = now + (res.next_due_ms / 1000 - redis_now_s) if res.next_due_ms else None
        self._next_expiry = now + (res.next_expiry_ms / 1000 - redis_now_s) if res.next_expiry_ms else None
        jobs = res.rows
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
        if free > 0 and not (due is not None and due <= timeout and due < PRECISE_WINDOW_S):
            # Redis times out blocked clients only every ~100 ms, so a scheduled job's due time
            # is approached in Redis until PRECISE_WINDOW_S before it, then with a local timer.
            server_timeout = timeout - PRECISE_WINDOW_S / 2 if due is not None and due <= timeout else timeout
            await self._wait_in_redis(max(0.01, server_timeout))
        else:
            # Locally. Whatever sets stop_event sets slot_event too, so with no free slot one
            # event is enough: no task per wait, which a busy worker pays at every freed slot.
            event = self.slot_event if free == 0 else self.stop_event
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await event.wait()
        self.stop_event.clear()

    async def _wait_in_redis(self, timeout: float) -> None:
        """Block in Redis on the queue's wake list and this worker's control list, or until
        stop_event is set."""
        stop = asyncio.ensure_future(self.stop_event.wait())
        keys = [self.keyspace.wake, self.keyspace.control(self.worker_id)]
        waiter = asyncio.ensure_future(self.redis.blpop(keys, timeout=timeout))
        try:
            await asyncio.wait((stop, waiter), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for f in (stop, waiter):
                if not f.done():
                    f.cancel()
        if waiter.done() and not waiter.cancelled():
            popped = waiter.result()  # also surfaces Redis errors to the outage handler
            if popped and popped[0] != self.keyspace.wake:
                self._next_hb = 0.0  # a control message (drain, cancel): heartbeat now to read it

    async def _record_trend(self) -> None:
        """Once a minute per worker: the first worker of the queue to call writes the queue's
        per-minute trend sample (herder.trends), the others' calls are no-ops."""
        minute = int(time.time() // 60)
        if minute == self._trend_minute:
            return
        self._trend_minute = minute
        try:
            await trends.record(self.redis, self.keyspace, self.lease_ms)
        except ADVISORY_ERRORS as exc:  # advisory: never stop the loop for it
            log.info("trend sample not recorded", error=str(exc))

    async def _run_cron(self) -> None:
        if not any(t.cron for t in self.taskset):
            return
        until = (
            time.time() + self.hb_interval + 1.0
        )  # enqueue a little ahead; the job is scheduled at the tick
        if self._cron_secret is None:
            self._cron_secret = await cron_secret(self.redis, self.keyspace)
        reqs = cron_requests(self.taskset, self._cron_checked, until, self._cron_secret)
        self._cron_checked = until
        if reqs:
            # Tick ids carry the reserved prefix: only Herder itself may enqueue them.
            try:
                await self.client.enqueue_many(self.herder_queue, reqs, allow_reserved=True)
            except IdConflict as exc:  # another worker version enqueued this tick with its payload
                log.warning("cron tick already enqueued with another payload", error=str(exc))

    # ---- running one job -----------------------------------------------------------------

    def _start(self, row: list[Any]) -> None:
        c = decode_row(row)
        ctx = JobContext(
            job_id=c.job_id,
            queue=self.herder_queue,
            task=c.task,
            attempt=c.attempt,
            max_attempts=c.max_attempts,
            worker_id=self.worker_id,
            state=self.ctx,
            _progress=functools.partial(self.reporter.progress, c.job_id, c.token),
            _log=functools.partial(self.reporter.log, c.job_id),
        )
        timeout = c.timeout if c.timeout is not None else self._task_timeout(c.task)
        prev = self.running.get(c.job_id)
        if prev is not None and prev.stop("lost"):
            # Redis handed out a job this worker still runs: our lease is gone there (after a
            # failover the new master may lack the claim, and give the job out again, maybe with
            # the same token). Our copy stops; the new claim runs as the one we track.
            log.warning("job claimed again while our copy runs: stopping our copy", job=c.job_id)
        task = asyncio.create_task(self._run(ctx, c.token, c, timeout, c.backoff_json))
        self.running[c.job_id] = Running(job_id=c.job_id, token=c.token, task=task, ctx=ctx)
        self.tasks[c.job_id] = task

    def _task_timeout(self, task_name: str) -> float | None:
        """A job enqueued without a timeout (its producer did not know the task) gets this
        worker's timeout for the task, applied at run time."""
        return self.taskset.get(task_name).timeout if task_name in self.taskset else None

    async def _execute(self, ctx: JobContext, claimed: Claimed, timeout: float | None) -> str:
        if claimed.problem:  # dead-lettered with the reason (InvalidInput: no retry)
            raise InvalidInput(f"stored job cannot be decoded: {claimed.problem}")
        task = self.taskset.get(ctx.task)
        payload = task.parse_payload(claimed.payload)
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
        return outcome.encode_result(result, self.settings.max_result_bytes)

    async def _run(
        self, ctx: JobContext, token: str, claimed: Claimed, timeout: float | None, backoff_json: str
    ) -> None:
        # This task's own entry: read before the first await, while it is surely ours (_start
        # sets it right after creating the task); a later claim of the same id replaces it.
        me = self.running[ctx.job_id]
        started = time.time()
        try:
            o = outcome.Outcome("ok", await self._execute(ctx, claimed, timeout))
        except asyncio.CancelledError as exc:
            attempt = self._attempt(ctx, started, timeout, backoff_json)
            reason_code = me.stop_reason
            current = asyncio.current_task()
            if reason_code is None and current is not None and current.cancelling() == 0:
                # Nobody cancelled this task: the job raised CancelledError itself. That is the
                # job's failure, not a hand-back (which spends no attempt and would loop for ever).
                o = outcome.failed(attempt, outcome.self_cancelled(exc), time.time(), random.uniform(-1, 1))
            else:
                o = outcome.stopped(attempt, reason_code, time.time())
        except Exception as exc:
            attempt = self._attempt(ctx, started, timeout, backoff_json)
            cause = self._failure_cause(ctx.job_id, exc)
            o = outcome.failed(attempt, exc, time.time(), random.uniform(-1, 1), cause)
        if me.stop_reason == "lost":
            # The lease is another's now: write nothing, whatever the task raised on its way out
            # (herder.arq turns the cancellation into arq's retry).
            self._forget(me)
            return
        me.finishing = True
        elapsed = time.time() - started
        # Only registered task names become label values: a queue full of jobs naming 20k
        # unknown tasks must not create 20k series.
        label = ctx.task if ctx.task in self.taskset else metrics.UNKNOWN_TASK
        seconds = self._m_seconds.get(label)
        if seconds is None:
            seconds = self._m_seconds[label] = metrics.JOB_SECONDS.labels(self.herder_queue, label)
        seconds.observe(elapsed)
        if self.finish_in_batch:
            # This task ends here; the rest runs when the batched write has stored the outcome.
            self.finisher.submit(
                ctx.job_id, token, o, functools.partial(self._finished, me, o, label, elapsed)
            )
            return
        self._finished(me, o, label, elapsed, await self._finish(ctx.job_id, token, o))

    def _finished(self, me: Running, o: outcome.Outcome, label: str, elapsed: float, final: str) -> None:
        """Count and log an attempt whose outcome is stored, and free its slot."""
        jobs = self._m_jobs.get((label, final))
        if jobs is None:
            jobs = self._m_jobs[label, final] = metrics.JOBS.labels(self.herder_queue, label, final)
        jobs.inc()
        if final == "succeeded":
            self.jobs_complete += 1
        elif final in ("dead", "cancelled"):
            self.jobs_failed += 1
        elif final == "stale":
            metrics.STALE_FINISH.labels(self.herder_queue).inc()
            log.warning("result discarded: lease had moved to another worker", job=me.job_id)
        else:
            self.jobs_retried += 1
        # Successes are routine (debug); every other outcome is worth a line at info.
        if final != "succeeded" or self._log_successes:
            (log.debug if final == "succeeded" else log.info)(
                "job finished",
                job=me.job_id,
                task=me.ctx.task,
                attempt=me.ctx.attempt,
                outcome=final,
                seconds=round(elapsed, 3),
                reason=o.reason or None,
            )
        self._forget(me)

    def _attempt(
        self, ctx: JobContext, started: float, timeout: float | None, backoff_json: str
    ) -> outcome.Attempt:
        """Built only when the attempt did not succeed: a success needs none of it."""
        return outcome.Attempt(
            ctx.attempt,
            self.worker_id,
            started,
            timeout,
            backoff_json,
            self.settings.max_error_chars,
            self.settings.max_traceback_chars,
        )

    def _failure_cause(self, job_id: str, exc: Exception) -> BaseException | None:
        """Hook: the exception to record instead of `exc` (herder.arq records the arq
        function's own exception, not the PermanentError that wraps it)."""
        return None

    async def _finish(self, job_id: str, token: str, o: outcome.Outcome) -> str:
        """Hook around the batched, lease-fenced write; returns the job's resulting state. A
        subclass that overrides it (herder.arq, for its post-job hooks) sets finish_in_batch
        False, so the job's task waits for the write and runs the hook."""
        return await self.finisher.finish(job_id, token, o)

    def _forget(self, run: Running) -> None:
        if self.running.get(run.job_id) is run:  # not a newer claim of the same id
            del self.running[run.job_id]
        if self.tasks.get(run.job_id) is run.task:
            del self.tasks[run.job_id]
        if self.draining and not self.running:
            self._next_hb = 0.0  # report "drained" now: the operator waits for it to scale down
        self.slot_event.set()
        if self.burst:
            self.stop_event.set()  # wake the loop now: a burst worker exits when the last job ends


def script_keep_ms(keep_result: float | None) -> int:
    """A successful job's retention as finish.lua takes it (0 there means no expiry): seconds
    to keep it; None keeps it forever; 0 keeps it not at all, as arq's keep_result=0 (1 ms, so
    the hash disappears in the same atomic finish as far as any reader can tell)."""
    if keep_result is None:
        return 0
    if keep_result < 0:
        raise InvalidInput("keep_result must be >= 0 seconds, or None to keep results forever")
    return max(1, int(keep_result * 1000))


def run_worker(worker: HerderWorker) -> int:
    logging.getLogger("arq").setLevel(logging.WARNING)
    worker.run()
    return worker.exit_code
