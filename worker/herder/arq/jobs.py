"""arq's Job handle over a Herder job: status, info, result and abort read the job's hash."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from arq.constants import default_queue_name
from arq.jobs import (
    DeserializationError,
    JobDef,
    JobResult,
    JobStatus,
    ResultNotFound,
    SerializationError,
    deserialize_job,
    deserialize_job_raw,
    deserialize_result,
    serialize_job,
    serialize_result,
)

from herder.arq.codec import decode_call, herder_queue, ms_datetime, rebuild_exception
from herder.errors import Conflict, InvalidInput, NotFound
from herder.models import Job as HerderJob
from herder.models import JobState

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from herder.client import HerderClient

__all__ = [
    "DeserializationError",
    "Job",
    "JobDef",
    "JobResult",
    "JobStatus",
    "ResultNotFound",
    "SerializationError",
    "deserialize_job",
    "deserialize_job_raw",
    "deserialize_result",
    "job_def",
    "serialize_job",
    "serialize_result",
]

_STATUS = {
    JobState.scheduled: JobStatus.deferred,
    JobState.waiting: JobStatus.deferred,
    JobState.ready: JobStatus.queued,
    JobState.active: JobStatus.in_progress,
    JobState.succeeded: JobStatus.complete,
    JobState.dead: JobStatus.complete,
    JobState.cancelled: JobStatus.complete,
}


def job_def(job: HerderJob, queue_name: str) -> JobDef:
    """arq's view of a Herder job: a JobDef while pending or running, a JobResult once final."""
    try:
        args, kwargs, meta = decode_call(job.payload)
    except InvalidInput:
        args, kwargs, meta = [], {}, {}
    enqueue_ms = meta.get("enqueue_ms") or (job.enqueued_at or 0) * 1000
    score = None
    if job.state in (JobState.scheduled, JobState.waiting, JobState.ready):
        score = int(job.run_at * 1000) if job.run_at else int(meta.get("score") or enqueue_ms)
    job_try = job.attempts + (int(meta["job_try"]) - 1 if meta.get("job_try") else 0) or meta.get("job_try")
    common: dict[str, Any] = {
        "function": job.task,
        "args": tuple(args),
        "kwargs": kwargs,
        "job_try": job_try or None,
        "enqueue_time": ms_datetime(enqueue_ms),
        "score": score,
        "job_id": job.id,
    }
    if job.state not in (JobState.succeeded, JobState.dead, JobState.cancelled):
        return JobDef(**common)
    success = job.state == JobState.succeeded
    result: Any = job.result if success else failure(job)
    return JobResult(
        **common,
        success=success,
        result=result,
        start_time=ms_datetime((job.started_at or 0) * 1000),
        finish_time=ms_datetime((job.finished_at or 0) * 1000),
        queue_name=queue_name,
    )


def failure(job: HerderJob) -> BaseException:
    if job.state == JobState.cancelled:
        return asyncio.CancelledError()
    if job.errors:
        last = job.errors[-1]
        return rebuild_exception(last.type, last.message)
    return rebuild_exception("JobExecutionFailed", job.dead_reason or "job failed")


def _client(redis: Redis) -> HerderClient:
    from herder.arq.connections import herder_client_for

    return herder_client_for(redis)


class Job:
    """Holds a reference to a job, as arq's Job does."""

    __slots__ = ("_deserializer", "_queue_name", "_redis", "job_id")

    def __init__(
        self,
        job_id: str,
        redis: Redis,
        _queue_name: str = default_queue_name,
        _deserializer: Any = None,
    ) -> None:
        self.job_id = job_id
        self._redis = redis
        self._queue_name = _queue_name
        self._deserializer = _deserializer

    async def _job(self) -> HerderJob | None:
        try:
            return await _client(self._redis).get_job(self.job_id, herder_queue(self._queue_name))
        except NotFound:
            return None

    async def result(
        self, timeout: float | None = None, *, poll_delay: float = 0.5, pole_delay: float | None = None
    ) -> Any:
        """The job's result, waiting for it; a failed job raises its exception (rebuilt from
        JSON: built-in types as themselves, others as JobFailed). ResultNotFound when there
        is no such job (or its result was not kept)."""
        if pole_delay is not None:
            poll_delay = pole_delay
        start = time.monotonic()
        while True:
            job = await self._job()
            if job is None:
                raise ResultNotFound(
                    "Not waiting for job result because the job is not in queue. "
                    "Is the worker function configured to keep result?"
                )
            if job.state == JobState.succeeded:
                return job.result
            if job.state in (JobState.dead, JobState.cancelled):
                raise failure(job)
            if timeout is not None and time.monotonic() - start > timeout:
                raise TimeoutError()
            await asyncio.sleep(poll_delay)

    async def info(self) -> JobDef | None:
        job = await self._job()
        return None if job is None else job_def(job, self._queue_name)

    async def result_info(self) -> JobResult | None:
        info = await self.info()
        return info if isinstance(info, JobResult) else None

    async def status(self) -> JobStatus:
        job = await self._job()
        if job is None:
            return JobStatus.not_found
        if job.state == JobState.scheduled and job.run_at is not None and job.run_at <= time.time():
            return JobStatus.queued  # due: the next claim promotes it
        return _STATUS[job.state]

    async def abort(self, *, timeout: float | None = None, poll_delay: float = 0.5) -> bool:
        """Cancel the job: a pending job at once, a running one when its worker stops it
        (workers with allow_abort_jobs=False let it finish). True if it ended cancelled."""
        client = _client(self._redis)
        try:
            await client.cancel(self.job_id, herder_queue(self._queue_name))
        except NotFound:
            return False
        except Conflict:
            pass  # already final: report how it ended
        try:
            await self.result(timeout=timeout, poll_delay=poll_delay)
        except asyncio.CancelledError:
            return True
        except ResultNotFound:
            return False
        except TimeoutError:
            raise
        except Exception:
            return False
        return False

    def __repr__(self) -> str:
        return f"<arq job {self.job_id}>"
