"""The client: enqueue (validated), inspect and operate queues. All writes go through Lua
scripts, so each is one atomic step and one round trip. The request model is in request.py,
wire encoding in wire.py, reply decoding in replies.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from pydantic import ValidationError
from redis.exceptions import ResponseError

from herder import recent, replies
from herder.connection import redis_client
from herder.errors import CorruptData, InvalidInput, NotFound
from herder.fastlane import FastLane
from herder.keys import (
    RESERVED_ID_PREFIX,
    QueueKeys,
    queues_key,
    reserved_id,
    split_queue_names,
    valid_id,
)
from herder.logs import get_logger
from herder.models import EnqueueResult, Job, JobState, QueueStatus
from herder.request import MAX_BATCH, JobRequest, check_queue, error_text
from herder.scripts import Scripts
from herder.settings import HerderSettings
from herder.tasks import TaskSet, load_taskset
from herder.wire import encode_job

__all__ = ["MAX_BATCH", "HerderClient", "JobRequest", "check_queue"]

log = get_logger("herder.client")

QUEUE_PAGE = 1000  # SSCAN COUNT when reading the queue index
_REPORTED_BAD_QUEUES: set[str] = set()
# What job listings read: never the payload, result or progress (each may be up to its cap).
SUMMARY_FIELDS = (
    "id",
    "queue",
    "task",
    "state",
    "priority",
    "attempts",
    "max_attempts",
    "labels",
    "caps",
    "enqueued_at",
    "run_at",
    "started_at",
    "finished_at",
    "errors",
    "worker",
    "dead_reason",
    "replays",
)


class HerderClient:
    """Async client. Use `async with HerderClient(settings) as client:`."""

    def __init__(
        self,
        settings: HerderSettings | None = None,
        tasks: TaskSet | None = None,
        *,
        redis: Any = None,
    ) -> None:
        self.settings = settings or HerderSettings()
        # Loaded on first use: a client that only inspects or operates (the operator, the
        # dashboard) never imports the built-in processors.
        self._tasks = tasks
        # Typed as Any: redis-py's annotations mix sync and async return types.
        self.redis: Any = redis if redis is not None else redis_client(self.settings)
        self.scripts = Scripts.register(self.redis)
        # The enqueue script's own lean connection (herder.fastlane), for a plain redis:// URL.
        self._fast = FastLane.for_settings(self.settings) if redis is None else None
        self._known_queues: set[str] = set()
        self._queue_keys: dict[str, QueueKeys] = {}

    @property
    def tasks(self) -> TaskSet:
        if self._tasks is None:
            self._tasks = load_taskset(None)
        return self._tasks

    async def __aenter__(self) -> HerderClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._fast is not None:
            await self._fast.aclose()
        await self.redis.aclose()

    def keys(self, queue: str) -> QueueKeys:
        qk = self._queue_keys.get(queue) if isinstance(queue, str) else None
        if qk is None:  # checked once per name (bounded: a dashboard may touch many queues)
            qk = QueueKeys(self.settings.key_prefix, check_queue(queue))
            if len(self._queue_keys) >= 4096:
                self._queue_keys.clear()
            self._queue_keys[queue] = qk
        return qk

    # ---- enqueue -------------------------------------------------------------------------

    def _spec(self, queue: str, req: JobRequest) -> dict[str, Any]:
        return encode_job(queue, req, self.tasks.get(req.task))

    async def enqueue(self, queue: str, task: str, payload: Any = None, **options: Any) -> EnqueueResult:
        """Validate and enqueue one job; one Redis round trip. Options: see JobRequest."""
        try:
            req = JobRequest(task=task, payload=payload, **options)
        except ValidationError as exc:
            raise InvalidInput(error_text(exc)) from None
        return (await self.enqueue_many(queue, [req]))[0]

    async def enqueue_many(
        self, queue: str, requests: Sequence[JobRequest], *, allow_reserved: bool = False
    ) -> list[EnqueueResult]:
        """Validate every request, then enqueue all of them atomically in one round trip.

        `allow_reserved` is for Herder's own generated ids (cron ticks); callers leave it off."""
        keys = self.keys(queue)
        if not requests:
            return []
        if len(requests) > MAX_BATCH:
            raise InvalidInput(f"batch of {len(requests)} jobs; at most {MAX_BATCH} per call")
        if not allow_reserved:
            for r in requests:
                if r.id is not None and reserved_id(r.id):
                    raise InvalidInput(
                        f"job id {r.id!r}: ids starting with {RESERVED_ID_PREFIX!r} are reserved"
                    )
        specs = [self._spec(queue, r) for r in requests]
        ids = [s["id"] for s in specs]
        if len(set(ids)) != len(ids):
            raise InvalidInput("duplicate job ids within one batch")
        # The queue index lives outside the queue's slot, so it cannot join the script. It is
        # written first (once per client and queue), after a read probe of the queue's keys:
        # a caller without rights on the index or the queue (NOPERM) or with an unknown parent
        # fails before anything is written, so a retry never creates a second job.
        if queue not in self._known_queues:
            await self._precheck_new_queue(keys, specs)
            await self.redis.sadd(queues_key(self.settings.key_prefix), queue)
        try:
            if self._fast is not None:
                rows = await self._fast.script(self.scripts.enqueue, keys, json.dumps(specs))
            else:
                rows = await self.scripts.enqueue(keys, json.dumps(specs))
        except ResponseError as exc:
            invalid = replies.invalid_from_error(str(exc))
            if invalid is not None:
                raise invalid from None
            raise
        self._known_queues.add(queue)
        return replies.enqueue_rows(rows)

    async def _precheck_new_queue(self, keys: QueueKeys, specs: list[dict[str, Any]]) -> None:
        """One read round trip before the first write to a queue: it fails with NOPERM where
        the script would, and finds unknown parents (the script checks again, atomically)."""
        in_batch = {s["id"] for s in specs}
        parents = sorted({p for s in specs for p in s["parents"]} - in_batch)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(keys.stats)
            for p in parents:
                pipe.exists(keys.job(p))
            found = (await pipe.execute())[1:]
        missing = [p for p, n in zip(parents, found, strict=True) if not n]
        if missing:
            raise InvalidInput(f"unknown parent job id {missing[0]}")

    # ---- inspect -------------------------------------------------------------------------

    async def queue_pages(self, page_size: int = QUEUE_PAGE) -> AsyncIterator[list[str]]:
        """The queue index page by page (SSCAN), valid names only.

        The index is writable by producers and workers (docs/security.md), so one odd member
        must not break every reader: invalid names are skipped with a log line. A name may come
        twice across pages (SSCAN's contract); callers that need a set dedupe."""
        key = queues_key(self.settings.key_prefix)
        cursor: Any = 0
        while True:
            cursor, raw = await self.redis.sscan(key, cursor, count=page_size)
            valid, invalid = split_queue_names(raw)
            fresh = [n for n in invalid if repr(n) not in _REPORTED_BAD_QUEUES]
            if fresh:  # once per name and process: readers scan the index on every scrape
                if len(_REPORTED_BAD_QUEUES) < 10_000:
                    _REPORTED_BAD_QUEUES.update(repr(n) for n in fresh)
                log.warning(
                    "queue index: skipping invalid queue names",
                    key=key,
                    count=len(fresh),
                    sample=[repr(n)[:80] for n in fresh[:3]],
                )
            if valid:
                yield valid
            if int(cursor) == 0:
                return

    async def queues(self) -> list[str]:
        """Every valid queue name in the index, sorted (see `queue_pages`)."""
        names: set[str] = set()
        async for page in self.queue_pages():
            names.update(page)
        return sorted(names)

    async def find_queue(self, job_id: str) -> str:
        """Jobs are addressed by id alone on the CLI: look the id up in every known queue."""
        if not valid_id(job_id):
            raise InvalidInput(f"invalid job id {job_id!r}")
        queues = await self.queues()
        async with self.redis.pipeline(transaction=False) as pipe:
            for q in queues:
                pipe.exists(self.keys(q).job(job_id))
            found = await pipe.execute()
        hits = [q for q, n in zip(queues, found, strict=True) if n]
        if not hits:
            raise NotFound(f"no job with id {job_id!r}")
        if len(hits) > 1:
            raise InvalidInput(f"job id {job_id!r} exists in queues {', '.join(hits)}: pass --queue")
        return hits[0]

    async def get_job(self, job_id: str, queue: str | None = None) -> Job:
        queue = queue or await self.find_queue(job_id)
        raw = await self.redis.hgetall(self.keys(queue).job(job_id))
        if not raw:
            raise NotFound(f"no job with id {job_id!r} in queue {queue!r}")
        return Job.from_hash(raw)

    async def job_log(self, job_id: str, queue: str | None = None, start: int = 0) -> list[Any]:
        queue = queue or await self.find_queue(job_id)
        return [json.loads(x) for x in await self.redis.lrange(self.keys(queue).log(job_id), start, -1)]

    async def status(self, queue: str) -> QueueStatus:
        keys = self.keys(queue)
        lease_ms = int(self.settings.lease_seconds * 1000)
        reply = await self.scripts.status(keys, lease_ms)
        return replies.queue_status(queue, reply)

    # ---- operate -------------------------------------------------------------------------

    async def pause(self, queue: str) -> None:
        await self.redis.set(self.keys(queue).paused, "1")

    async def resume(self, queue: str) -> None:
        keys = self.keys(queue)
        await self.scripts.resume(keys)

    async def cancel(self, job_id: str, queue: str | None = None) -> str:
        """Cancel a pending job (at once) or an active one (cooperatively). Returns the new state."""
        queue = queue or await self.find_queue(job_id)
        keys = self.keys(queue)
        r = await self.scripts.cancel(keys, job_id)
        state = replies.cancel_state(job_id, r)
        if state == "cancelled":  # a pending job, cancelled at once: list it for browsing
            await recent.note_finished(self.redis, keys, [(job_id, state)])
        return state

    async def remove(self, job_id: str, queue: str | None = None) -> None:
        queue = queue or await self.find_queue(job_id)
        keys = self.keys(queue)
        r = await self.scripts.remove(keys, job_id)
        replies.check_removed(job_id, r)

    async def replay(self, queue: str, job_ids: Iterable[str]) -> dict[str, str]:
        """Move dead (or cancelled) jobs back to ready. Returns id -> new state or reason
        (see replies.ReplayResult.text)."""
        return {i: r.text for i, r in (await self.replay_results(queue, job_ids)).items()}

    async def replay_results(self, queue: str, job_ids: Iterable[str]) -> dict[str, replies.ReplayResult]:
        keys = self.keys(queue)
        ids = list(job_ids)
        if not ids:
            return {}
        # A job whose task this client no longer knows would only die again: refuse it.
        rows: dict[str, replies.ReplayResult] = {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hget(keys.job(i), "task")
            tasks = await pipe.execute()
        todo = []
        for i, t in zip(ids, tasks, strict=True):
            if t is None:
                rows[i] = replies.ReplayResult("notfound")
            elif t not in self.tasks:
                rows[i] = replies.ReplayResult("unknown_task", t)
            else:
                todo.append(i)
        if todo:
            out = replies.replay_results(await self.scripts.replay(keys, *todo))
            rows.update(zip(todo, out, strict=True))
        return {i: rows[i] for i in ids}

    async def retry(self, job_id: str, queue: str | None = None) -> str:
        queue = queue or await self.find_queue(job_id)
        return replies.retry_state(job_id, (await self.replay_results(queue, [job_id]))[job_id])

    async def dlq_ids(self, queue: str, limit: int | None = None) -> list[str]:
        end = -1 if limit is None else limit - 1
        return list(await self.redis.zrange(self.keys(queue).dead, 0, end))

    async def dlq_list(self, queue: str, limit: int = 100) -> list[Job]:
        """Dead jobs as summaries: payload, result, progress left out (read with get_job), so a
        listing stays small however big the jobs are. A job that cannot be decoded is listed
        with the reason instead of failing the listing."""
        keys = self.keys(queue)
        ids = await self.dlq_ids(queue, limit)
        async with self.redis.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hmget(keys.job(i), *SUMMARY_FIELDS)
            rows = await pipe.execute()
        out = []
        for i, row in zip(ids, rows, strict=True):
            raw = {k: v for k, v in zip(SUMMARY_FIELDS, row, strict=True) if v is not None}
            if not raw:
                continue  # removed between the two reads
            try:
                out.append(Job.from_hash(raw))
            except CorruptData as exc:
                out.append(Job(id=i, queue=queue, task="?", state=JobState.dead, dead_reason=str(exc)))
        return out

    async def dlq_purge(self, queue: str) -> int:
        """Delete every dead job. Each is removed atomically; returns how many."""
        n = 0
        for i in await self.dlq_ids(queue):
            try:
                await self.remove(i, queue)
                n += 1
            except NotFound:
                pass
        return n

    async def drain_worker(self, queue: str, worker_id: str, *, exit: bool = True) -> None:
        keys = self.keys(queue)
        ok = await self.scripts.drain(keys, worker_id, "1", "1" if exit else "0")
        if not ok:
            raise NotFound(f"no live worker {worker_id!r} in queue {queue!r}")

    async def undrain_worker(self, queue: str, worker_id: str) -> None:
        keys = self.keys(queue)
        ok = await self.scripts.drain(keys, worker_id, "0", "0")
        if not ok:
            raise NotFound(f"no live worker {worker_id!r} in queue {queue!r}")

    async def find_worker_queue(self, worker_id: str) -> str:
        for q in await self.queues():
            if await self.redis.exists(self.keys(q).worker(worker_id)):
                return q
        raise NotFound(f"no live worker {worker_id!r}")
