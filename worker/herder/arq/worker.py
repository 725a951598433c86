"""arq's Worker on Herder: the same constructor and WorkerSettings classes, functions called
as `(ctx, *args, **kwargs)` with arq's ctx keys, arq's retry/timeout/keep-result/abort
semantics, and Herder's claim/lease/heartbeat/drain path underneath."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any, cast

from arq.constants import default_queue_name, expires_extra_ms, health_check_key_suffix
from arq.cron import CronJob
from arq.jobs import JobResult, SerializationError
from arq.utils import args_to_string, import_string, ms_to_datetime, to_seconds, to_unix_ms, truncate
from arq.worker import (
    FailedJobs,
    Function,
    JobExecutionFailed,
    Retry,
    RetryJob,
    async_check_health,
    check_health,
    func,
)
from pydantic_core import to_jsonable_python
from redis.asyncio import Redis

from herder.arq.codec import decode_call, herder_queue
from herder.arq.connections import OPEN_MAX_ATTEMPTS, ArqRedis, RedisSettings, refuse_cluster, settings_for
from herder.arq.jobs import job_def
from herder.errors import InvalidInput, PermanentError, RetryableError
from herder.settings import HerderSettings
from herder.tasks import JobContext, Task, TaskSet
from herder.worker import HerderWorker
from herder.worker.outcome import Outcome
from herder.worker.state import Running

__all__ = [
    "FailedJobs",
    "Function",
    "JobExecutionFailed",
    "Retry",
    "RetryJob",
    "Worker",
    "async_check_health",
    "check_health",
    "create_worker",
    "func",
    "get_kwargs",
    "run_worker",
]

logger = logging.getLogger("arq.worker")
Hook = Callable[[dict[str, Any]], Any]


class Worker(HerderWorker):
    """arq.worker.Worker's constructor over HerderWorker. `poll_delay` and `queue_read_limit`
    are accepted and unused (Herder blocks in Redis instead of polling); serializers are
    ignored (jobs are JSON)."""

    finish_in_batch = False  # _finish runs arq's per-job hooks after the write

    def __init__(
        self,
        functions: Sequence[Function | Callable[..., Any]] = (),
        *,
        queue_name: str | None = default_queue_name,
        cron_jobs: Sequence[CronJob] | None = None,
        redis_settings: RedisSettings | None = None,
        redis_pool: Redis | None = None,
        burst: bool = False,
        on_startup: Hook | None = None,
        on_shutdown: Hook | None = None,
        on_job_start: Hook | None = None,
        on_job_end: Hook | None = None,
        after_job_end: Hook | None = None,
        handle_signals: bool = True,
        job_completion_wait: int = 0,
        max_jobs: int = 10,
        job_timeout: int | float | timedelta = 300,
        keep_result: int | float | timedelta = 3600,
        keep_result_forever: bool = False,
        poll_delay: int | float | timedelta = 0.5,
        queue_read_limit: int | None = None,
        max_tries: int = 5,
        health_check_interval: int | float | timedelta = 3600,
        health_check_key: str | None = None,
        ctx: dict[str, Any] | None = None,
        retry_jobs: bool = True,
        allow_abort_jobs: bool = False,
        max_burst_jobs: int = -1,
        job_serializer: Any = None,
        job_deserializer: Any = None,
        expires_extra_ms: int = expires_extra_ms,
        timezone: dt_timezone | None = None,
        log_results: bool = True,
        herder_settings: HerderSettings | None = None,
        drain_timeout: float = 30.0,
        name: str | None = None,
        capabilities: tuple[str, ...] = (),
    ) -> None:
        if queue_name is None:
            queue_name = getattr(redis_pool, "default_queue_name", None) or default_queue_name
        self.arq_queue_name = queue_name
        self.arq_functions: dict[str, Function | CronJob] = {}
        for f in functions:
            one = func(f)
            self.arq_functions[one.name] = one
        crons = list(cron_jobs or [])
        for cj in crons:
            if not isinstance(cj, CronJob):
                raise TypeError("cron_jobs must be instances of CronJob (use herder.arq.cron)")
            self.arq_functions[cj.name] = cj
        tasks = TaskSet()
        for fname, fn in self.arq_functions.items():
            tasks.add(Task(name=fname, fn=self._runner(fn), max_attempts=OPEN_MAX_ATTEMPTS))
        settings = herder_settings or settings_for(redis_pool if redis_pool is not None else redis_settings)
        refuse_cluster(settings, "Worker")
        self.keep_result_s = float(to_seconds(keep_result) or 0)
        self.keep_result_forever = keep_result_forever
        super().__init__(
            herder_queue(queue_name),
            tasks,
            settings,
            concurrency=max_jobs,
            keep_result=None if keep_result_forever else self.keep_result_s,
            burst=burst,
            handle_signals=handle_signals,
            on_startup=on_startup,
            on_shutdown=on_shutdown,
            drain_timeout=float(job_completion_wait) if job_completion_wait else drain_timeout,
            name=name,
            capabilities=capabilities,
        )
        if job_serializer is not None or job_deserializer is not None:
            logger.warning("herder.arq stores jobs as JSON: job_serializer/job_deserializer are ignored")
        # ctx['redis'] enqueues onto Herder (arq's client would write to arq's own keys,
        # where no Herder worker looks).
        self._own_pool = not isinstance(redis_pool, ArqRedis)
        # Not given one: on the worker's own connection pool, so what the settings say (Sentinel,
        # TLS, ACL user, timeouts) holds for ctx['redis'] too; built from the URL alone it talked
        # to whatever the URL named, e.g. a stale master or nothing.
        pool = redis_pool if isinstance(redis_pool, ArqRedis) else ArqRedis(self.redis.connection_pool)
        if self._own_pool:
            pool.default_queue_name = queue_name
            pool.herder_settings = settings
        self._pool: Any = pool
        self.cron_jobs = crons  # after super().__init__, which sets arq's own (empty) list
        self.ctx.update(ctx or {})
        self.on_job_start: Any = on_job_start
        self.on_job_end: Any = on_job_end
        self.after_job_end: Any = after_job_end
        self.job_timeout_s = float(to_seconds(job_timeout) or 0)
        self.max_tries = max_tries
        self.retry_jobs = retry_jobs
        self.allow_abort_jobs = allow_abort_jobs
        self.max_burst_jobs = max_burst_jobs
        self.timezone = datetime.now().astimezone().tzinfo if timezone is None else timezone
        self.log_results = log_results
        self.health_check_interval = float(to_seconds(health_check_interval) or 0)
        self.health_check_key = health_check_key or f"{queue_name}{health_check_key_suffix}"
        self._last_health = 0.0
        self._last_health_log = ""
        self._arq_jobs: dict[str, tuple[dict[str, Any], Function | CronJob]] = {}
        self._failures: dict[str, BaseException] = {}
        self._burst_started = 0

    # ---- running one arq function --------------------------------------------------------

    def _runner(self, fn: Function | CronJob) -> Callable[[JobContext, Any], Any]:
        is_cron = isinstance(fn, CronJob)

        async def run(jctx: JobContext, payload: Any) -> Any:
            args, kwargs, meta = decode_call(payload)
            now_ms = int(time.time() * 1000)
            job_try = jctx.attempt + max(int(meta.get("job_try") or 1) - 1, 0)
            enqueue_ms = int(meta.get("enqueue_ms") or now_ms)
            score = int(meta.get("score") or enqueue_ms)
            ref = fn.name if is_cron else f"{jctx.job_id}:{fn.name}"
            ctx: dict[str, Any] = {
                **self.ctx,
                "job_id": jctx.job_id,
                "job_try": job_try,
                "enqueue_time": ms_to_datetime(enqueue_ms),
                "score": score,
            }
            expires = meta.get("expires_at_ms")
            if expires is not None and now_ms > int(expires):
                logger.warning("job %s expired", jctx.job_id)
                raise self._fail(jctx, JobExecutionFailed("job expired"))
            max_tries = self.max_tries if fn.max_tries is None else fn.max_tries
            if job_try > max_tries:
                t = (now_ms - enqueue_ms) / 1000
                logger.warning("%6.2fs ! %s max retries %d exceeded", t, ref, max_tries)
                raise self._fail(jctx, JobExecutionFailed(f"max {max_tries} retries exceeded"))
            self._arq_jobs[jctx.job_id] = (ctx, fn)
            if self.on_job_start:
                await self.on_job_start(ctx)
            timeout = self.job_timeout_s if fn.timeout_s is None else fn.timeout_s
            start_ms = int(time.time() * 1000)
            # arq's log lines, on arq's logger, so log-based alerts and habits keep working.
            extra = f" try={job_try}" if job_try > 1 else ""
            if start_ms - score > 1200:
                extra += f" delayed={(start_ms - score) / 1000:0.2f}s"
            logger.info(
                "%6.2fs → %s(%s)%s", (start_ms - enqueue_ms) / 1000, ref, args_to_string(args, kwargs), extra
            )

            def took() -> float:
                return (time.time() * 1000 - start_ms) / 1000

            try:
                async with asyncio.timeout(timeout or None):
                    result = await fn.coroutine(ctx, *args, **kwargs)
            except Retry as exc:
                if not self.retry_jobs:
                    logger.exception("%6.2fs ! %s failed, %s: %s", took(), ref, type(exc).__name__, exc)
                    raise self._fail(jctx, exc) from None
                delay_s = (exc.defer_score or 0) / 1000
                logger.info("%6.2fs ↻ %s retrying job in %0.2fs", took(), ref, delay_s)
                raise RetryableError("Retry", delay=delay_s) from None
            except RetryJob:
                logger.info("%6.2fs ↻ %s cancelled, will be run again", took(), ref)
                raise RetryableError("RetryJob", delay=0) from None
            except asyncio.CancelledError:
                r = self.running.get(jctx.job_id)
                if r is not None and r.stop_reason == "cancelled":
                    logger.info("%6.2fs ⊘ %s aborted", took(), ref)
                    raise
                logger.info("%6.2fs ↻ %s cancelled, will be run again", took(), ref)
                if r is not None and r.stop_reason is None:
                    # Raised by the function itself, not by a stop: arq retries it (a new try).
                    raise RetryableError("CancelledError", delay=0) from None
                raise
            except Exception as exc:  # arq: only Retry retries; a timed-out job fails too
                logger.exception(
                    "%6.2fs ! %s failed, %s: %s",
                    took(),
                    ref,
                    type(exc).__name__,
                    exc,
                    extra={"extra": _exc_extra(exc)},
                )
                raise self._fail(jctx, exc) from None
            finally:
                if self.on_job_end:
                    await self.on_job_end(ctx)
            try:
                to_jsonable_python(result)
            except Exception:
                logger.warning("error serializing result of %s", ref, exc_info=True)
                raise self._fail(jctx, SerializationError("unable to serialize result")) from None
            result_str = "" if result is None or not self.log_results else truncate(repr(result))
            logger.info("%6.2fs ← %s ● %s", took(), ref, result_str)
            return result

        return run

    def _fail(self, jctx: JobContext, exc: BaseException) -> PermanentError:
        self._failures[jctx.job_id] = exc
        return PermanentError(str(exc))

    def _failure_cause(self, job_id: str, exc: Exception) -> BaseException | None:
        orig = self._failures.pop(job_id, None)
        if orig is not None:  # record the function's own exception, not our PermanentError
            return orig
        if isinstance(exc, InvalidInput) and str(exc).startswith("unknown task '"):
            name = str(exc).split("'")[1]
            logger.warning("job %s, function %r not found", job_id, name)
            return JobExecutionFailed(f"function {name!r} not found")
        return None

    async def _finish(self, job_id: str, token: str, o: Outcome) -> str:
        final = await super()._finish(job_id, token, o)
        ctx, fn = self._arq_jobs.pop(job_id, ({}, None))
        if final == "succeeded" and fn is not None:
            await self._keep(job_id, fn)
        if self.after_job_end and fn is not None and final != "stale":
            try:
                await self.after_job_end(ctx)
            except Exception:
                logger.exception("after_job_end hook failed for job %s", job_id)
        return final

    async def _keep(self, job_id: str, fn: Function | CronJob) -> None:
        """arq's result retention per function: keep_result seconds, 0 = not kept,
        keep_result_forever. The worker-wide default is set by the finish script itself."""
        forever = self.keep_result_forever if fn.keep_result_forever is None else fn.keep_result_forever
        keep_s = self.keep_result_s if fn.keep_result_s is None else fn.keep_result_s
        job_key, log_key = self.keyspace.job(job_id), self.keyspace.log(job_id)
        if (forever and self.keep_result_ms == 0) or (
            not forever and max(1, int(keep_s * 1000)) == self.keep_result_ms
        ):
            return  # the worker-wide setting, already applied by the finish script
        if forever:
            await self.redis.persist(job_key)
        elif keep_s <= 0:
            await self.redis.delete(job_key, log_key)
        elif max(1, int(keep_s * 1000)) != self.keep_result_ms:
            await self.redis.pexpire(job_key, int(keep_s * 1000))

    # ---- loop hooks ----------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        cap = self._capacity
        if self.burst and getattr(self, "max_burst_jobs", -1) >= 0:
            left = max(self.max_burst_jobs - self._burst_started, 0)
            cap = min(cap, len(getattr(self, "running", {})) + left)
        return cap

    @capacity.setter
    def capacity(self, value: int) -> None:
        self._capacity = value

    def _start(self, row: list[Any]) -> None:
        self._burst_started += 1
        super()._start(row)

    def _done(self) -> bool:
        if (
            self.burst
            and self.max_burst_jobs >= 0
            and self._burst_started >= self.max_burst_jobs
            and not self.running
        ):
            return True
        return super()._done()

    def _forget(self, run: Running) -> None:
        super()._forget(run)
        if self.burst:
            self.stop_event.set()  # wake the loop now: a burst worker may be done

    def _apply_control(self, draining: int, lost: list[str], cancels: list[str]) -> None:
        # arq runs jobs to completion unless allow_abort_jobs is set.
        super()._apply_control(draining, lost, cancels if self.allow_abort_jobs else [])

    async def _run_cron(self) -> None:
        await super()._run_cron()
        await self._record_health()
        if not self.cron_jobs:
            return
        now = datetime.now(tz=self.timezone)
        cutoff = now + timedelta(seconds=self.hb_interval + 1.0)
        for cj in self.cron_jobs:
            if cj.next_run is None:
                if cj.run_at_startup:
                    cj.next_run = now
                else:
                    cj.calculate_next(now)
            while cj.next_run is not None and cj.next_run < cutoff:
                if cj.job_id:
                    job_id: str | None = cj.job_id
                else:
                    job_id = f"{cj.name}:{to_unix_ms(cj.next_run)}" if cj.unique else None
                await self.pool.enqueue_job(
                    cj.name,
                    _job_id=job_id,
                    _queue_name=self.arq_queue_name,
                    _defer_until=cj.next_run if cj.next_run > datetime.now(tz=cj.next_run.tzinfo) else None,
                )
                cj.calculate_next(cj.next_run)

    async def _record_health(self) -> None:
        """arq's health-check key (same name and format), so `arq --check`-style probes work."""
        now = time.time()
        if now - self._last_health < self.health_check_interval:
            return
        self._last_health = now
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self.keyspace.ready)
            pipe.zcard(f"{self.keyspace.base}:scheduled")
            ready, scheduled = await pipe.execute()
        info = (
            f"{datetime.now():%b-%d %H:%M:%S} j_complete={self.jobs_complete} j_failed={self.jobs_failed} "
            f"j_retried={self.jobs_retried} j_ongoing={len(self.running)} queued={ready + scheduled}"
        )
        await self.redis.psetex(self.health_check_key, int((self.health_check_interval + 1) * 1000), info)
        suffix = info[info.index("j_complete=") :]
        if suffix != self._last_health_log:
            logger.info("recording health: %s", info)
            self._last_health_log = suffix

    # ---- lifecycle -----------------------------------------------------------------------

    async def main(self) -> None:
        self._burst_idle = False  # a second main() runs again
        self._burst_started = 0
        self._started_at = time.time()
        names = ", ".join(self.arq_functions)
        logger.info("Starting worker for %d functions: %s", len(self.arq_functions), names)
        await super().main()
        with contextlib.suppress(Exception):
            await self._record_health()  # the final counts, as arq records them each loop

    def _arq_client(self) -> Any:
        return self._pool  # the ArqRedis built in __init__ (or the one passed in)

    async def run_check(self, retry_jobs: bool | None = None, max_burst_jobs: int | None = None) -> int:
        """Run in burst mode, then raise FailedJobs if any job failed (with their results)."""
        if retry_jobs is not None:
            self.retry_jobs = retry_jobs
        if max_burst_jobs is not None:
            self.max_burst_jobs = max_burst_jobs
        self.burst = True
        started = time.time()
        await self.main()
        if self.jobs_failed:
            dead = await self.client.dlq_list(self.herder_queue, limit=1000)
            results = [
                r
                for j in dead
                if (j.finished_at or 0) >= started - 1
                and isinstance(r := job_def(j, self.arq_queue_name), JobResult)
            ]
            raise FailedJobs(self.jobs_failed, results)
        return self.jobs_complete

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.redis.delete(self.health_check_key)  # as arq: a stopped worker is not healthy
        await super().close()
        if self._own_pool:
            with contextlib.suppress(Exception):
                await self._pool.aclose()

    def __repr__(self) -> str:
        return (
            f"<Worker j_complete={self.jobs_complete} j_failed={self.jobs_failed} "
            f"j_retried={self.jobs_retried} j_ongoing={len(self.running)}>"
        )


def _exc_extra(exc: BaseException) -> Any:
    extra = getattr(exc, "extra", None)
    return extra() if callable(extra) else extra


WorkerSettingsType = type[Any] | dict[str, Any]


def get_kwargs(settings_cls: WorkerSettingsType) -> dict[str, Any]:
    """The Worker arguments a WorkerSettings class (or dict) defines; other attributes ignored."""
    names = set(inspect.signature(Worker).parameters)
    if isinstance(settings_cls, dict):
        return {k: v for k, v in settings_cls.items() if k in names}
    return {k: v for k, v in vars(settings_cls).items() if k in names}


def find_worker_settings(spec: str | None) -> Any:
    """The arq WorkerSettings that `--app module:attr` (or `module.attr`) names, or None when
    it names something else (a Herder TaskSet, say). Import errors propagate."""
    if not spec:
        return None
    module_name, sep, attr = spec.partition(":")
    if not sep:
        module_name, _, attr = spec.rpartition(".")
        if not module_name:
            return None
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    obj = getattr(module, attr or "WorkerSettings", None)
    if isinstance(obj, dict):
        return obj if "functions" in obj or "cron_jobs" in obj else None
    if isinstance(obj, type) and (hasattr(obj, "functions") or hasattr(obj, "cron_jobs")):
        return obj
    return None


def create_worker(settings_cls: WorkerSettingsType | str, **kwargs: Any) -> Worker:
    if isinstance(settings_cls, str):
        settings_cls = cast(WorkerSettingsType, import_string(settings_cls))
    return Worker(**{**get_kwargs(settings_cls), **kwargs})


def run_worker(settings_cls: WorkerSettingsType | str, **kwargs: Any) -> Worker:
    worker = create_worker(settings_cls, **kwargs)
    worker.run()
    return worker


_ = (SerializationError, async_check_health, check_health)
