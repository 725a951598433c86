"""FastAPI app behind the dashboard page. Safe by default:

- operations always need the operate token (`HERDER_DASHBOARD_TOKEN`); with none set they are
  refused; reads need a token (operate or `HERDER_DASHBOARD_READ_TOKEN`) as soon as one is set;
- tokens travel only in `Authorization: Bearer`, never in cookies (CSRF) or URLs (logs);
- Host allow-list, Origin checks on writes and a strict CSP come from `herder.web.security`;
- every list is paginated and every stored value is size-capped, with a link to the full value.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import NoPermissionError, RedisError

from herder import __version__, trends
from herder.browse import BROWSABLE, MAX_PAGE, Browser, JobFilter
from herder.client import HerderClient, check_queue
from herder.cron import due_ticks, tick_job_id
from herder.errors import Conflict, InvalidInput, NotFound
from herder.jobevents import JobEventReader, bounded_json, parse_cursor
from herder.keys import ID_RE
from herder.settings import HerderSettings
from herder.tasks import TaskSet
from herder.web.errors import install_error_handlers
from herder.web.security import RequestCheck, SecurityMiddleware, Tokens, default_allowed_hosts

FIELD_CAP = 65_536  # bytes of one stored value (payload, result, progress) shown inline
RAW_FIELDS = ("payload", "result", "progress", "errors")
MAX_BULK = 10_000
MAX_STREAMS = 64
# One SSE response at most; the page resumes with Last-Event-ID. Short, because a client that
# went away is only noticed when its response ends (see _EventStream): it bounds a lost slot.
STREAM_SECONDS = 60.0
KEEPALIVE_SECONDS = 15.0
QUEUE_LIST_TTL = 2.0


def _client(request: Request) -> HerderClient:
    c: HerderClient = request.app.state.client
    return c


# Module level: FastAPI resolves these string annotations in the module's namespace.
Client = Annotated[HerderClient, Depends(_client)]


class BulkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["retry", "remove", "cancel"]
    ids: list[str] | None = Field(default=None, max_length=1000)
    # Or a whole filter: every job of `state` that matches, up to MAX_BULK.
    state: str | None = None
    task: str | None = None
    label: str | None = None
    worker: str | None = None
    text: str | None = None


def _env_list(name: str) -> list[str]:
    return [h for h in (os.environ.get(name) or "").split(",") if h.strip()]


def create_app(
    settings: HerderSettings,
    tasks: TaskSet | None = None,
    token: str | None = None,
    *,
    read_token: str | None = None,
    bind_host: str = "127.0.0.1",
    allowed_hosts: Iterable[str] | None = None,
    poll_interval: float = 0.25,
    max_streams: int = MAX_STREAMS,
) -> FastAPI:
    # None: read from the environment; "" (or unset): no such token.
    tokens = Tokens(
        admin=(token if token is not None else os.environ.get("HERDER_DASHBOARD_TOKEN")) or None,
        read=(read_token if read_token is not None else os.environ.get("HERDER_DASHBOARD_READ_TOKEN"))
        or None,
    )
    hosts = default_allowed_hosts(
        bind_host, allowed_hosts if allowed_hosts is not None else _env_list("HERDER_DASHBOARD_ALLOWED_HOSTS")
    )
    streams = asyncio.Semaphore(max_streams)
    queue_cache: dict[str, Any] = {"at": 0.0, "names": []}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.client = HerderClient(settings, tasks)
        try:
            yield
        finally:
            await app.state.client.close()

    # No Swagger/ReDoc: they load assets from a CDN, and the schema is not the product here.
    app = FastAPI(title="Herder", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(SecurityMiddleware, check=RequestCheck(hosts))
    app.mount("/static", StaticFiles(packages=[("herder.dashboard", "static")]), name="static")

    Read = Depends(tokens.require_read)
    Admin = Depends(tokens.require_admin)

    install_error_handlers(
        app,
        {
            InvalidInput: (400, str),
            NotFound: (404, str),
            Conflict: (409, str),
            NoPermissionError: (403, lambda e: f"Redis ACL denies this to the dashboard's user: {e}"),
            RedisError: (503, lambda e: f"Redis unavailable: {e}"),
        },
    )

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return (resources.files("herder.dashboard") / "static" / "index.html").read_text()

    @app.get("/api/config")
    async def config() -> dict[str, Any]:
        # Public: the page needs it before it has a token. Says nothing about the data.
        return {"read_auth": tokens.reads_protected, "ops": tokens.admin is not None, "version": __version__}

    @app.get("/api/whoami", dependencies=[Read])
    async def whoami(request: Request) -> dict[str, Any]:
        from herder.web.security import bearer, token_matches

        given = bearer(request.headers.get("authorization"))
        return {"operate": token_matches(given, tokens.admin)}

    # ---- queues ---------------------------------------------------------------------------

    async def queue_names(c: HerderClient) -> list[str]:
        # Cached briefly: with 10k+ queues, many open pages must not each re-read the index.
        now = time.monotonic()
        if now - queue_cache["at"] > QUEUE_LIST_TTL:
            names = [q for q in await c.queues() if isinstance(q, str)]
            queue_cache["names"] = [q for q in names if _valid_queue(q)]
            queue_cache["at"] = now
        names_: list[str] = queue_cache["names"]
        return names_

    @app.get("/api/queues", dependencies=[Read])
    async def queues(
        c: Client,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        q: Annotated[str, Query(max_length=128)] = "",
    ) -> dict[str, Any]:
        names = await queue_names(c)
        if q:
            names = [n for n in names if q in n]
        page = names[offset : offset + limit]
        statuses = await asyncio.gather(*(c.status(n) for n in page))
        items = []
        for s in statuses:
            d = s.model_dump(mode="json", exclude={"workers"})
            d["workers"] = len(s.workers)
            d["capacity"] = sum(w.capacity for w in s.workers if not w.draining)
            d["in_flight"] = sum(w.in_flight for w in s.workers)
            items.append(d)
        return {"total": len(names), "offset": offset, "limit": limit, "items": items}

    @app.get("/api/queues/{queue}", dependencies=[Read])
    async def queue(queue: str, c: Client) -> dict[str, Any]:
        s = await c.status(queue)
        d = s.model_dump(mode="json")
        d["workers"] = d["workers"][:500]
        return d

    @app.post("/api/queues/{queue}/pause", dependencies=[Admin])
    async def pause(queue: str, c: Client) -> dict[str, Any]:
        await c.pause(queue)
        return {"queue": queue, "paused": True}

    @app.post("/api/queues/{queue}/resume", dependencies=[Admin])
    async def resume(queue: str, c: Client) -> dict[str, Any]:
        await c.resume(queue)
        return {"queue": queue, "paused": False}

    # ---- jobs -----------------------------------------------------------------------------

    @app.get("/api/queues/{queue}/jobs", dependencies=[Read])
    async def jobs(
        queue: str,
        c: Client,
        state: str = "ready",
        cursor: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        task: Annotated[str | None, Query(max_length=200)] = None,
        label: Annotated[str | None, Query(max_length=300)] = None,
        worker: Annotated[str | None, Query(max_length=300)] = None,
        text: Annotated[str | None, Query(max_length=200)] = None,
    ) -> dict[str, Any]:
        b = Browser(c.redis, c.keys(queue))
        flt = JobFilter(task or None, label or None, worker or None, text or None)
        page = await b.page(state, cursor, limit, flt)
        return {
            "queue": queue,
            "state": state,
            "counts": await b.counts(),
            "items": page.items,
            "next_cursor": page.next_cursor,
            "total": page.total,
            "scanned": page.scanned,
        }

    @app.get("/api/queues/{queue}/dlq", dependencies=[Read])
    async def dlq(
        queue: str, c: Client, limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50
    ) -> list[dict[str, Any]]:
        return (await Browser(c.redis, c.keys(queue)).page("dead", 0, limit)).items

    @app.post("/api/queues/{queue}/jobs/bulk", dependencies=[Admin])
    async def bulk(queue: str, body: BulkRequest, c: Client) -> dict[str, Any]:
        keys = c.keys(queue)
        if body.ids is not None:
            for i in body.ids:
                if not ID_RE.match(i):
                    raise InvalidInput(f"invalid job id {i[:80]!r}")
            ids = list(dict.fromkeys(body.ids))
        else:
            if body.state is None:
                raise InvalidInput("give ids, or a state (and optional filters) to act on")
            b = Browser(c.redis, keys)
            flt = JobFilter(body.task, body.label, body.worker, body.text)
            ids, cur = [], 0
            while len(ids) < MAX_BULK:
                page = await b.page(body.state, cur, MAX_PAGE, flt, max_scan=MAX_BULK)
                ids += [r["id"] for r in page.items]
                if page.next_cursor is None:
                    break
                cur = page.next_cursor
            ids = ids[:MAX_BULK]
        results: dict[str, str] = {}
        if body.action == "retry":
            results = await c.replay(queue, ids)
        else:
            sem = asyncio.Semaphore(32)

            async def one(i: str) -> None:
                async with sem:
                    try:
                        if body.action == "remove":
                            await c.remove(i, queue)
                            results[i] = "removed"
                        else:
                            results[i] = await c.cancel(i, queue)
                    except (NotFound, Conflict) as exc:
                        results[i] = f"skipped: {exc}"

            await asyncio.gather(*(one(i) for i in ids))
        done = sum(
            1 for v in results.values() if v in ("ready", "removed", "cancelled", "active", "scheduled")
        )
        return {"action": body.action, "requested": len(ids), "done": done, "results": results}

    async def _job_queue(c: HerderClient, job_id: str, queue: str | None) -> str:
        if not ID_RE.match(job_id):
            raise InvalidInput(f"invalid job id {job_id[:80]!r}")
        return check_queue(queue) if queue else await c.find_queue(job_id)

    @app.get("/api/jobs/{job_id}", dependencies=[Read])
    async def job(job_id: str, c: Client, queue: str | None = None) -> dict[str, Any]:
        queue = await _job_queue(c, job_id, queue)
        raw = await c.redis.hgetall(c.keys(queue).job(job_id))
        if not raw:
            raise NotFound(f"no job with id {job_id!r} in queue {queue!r}")
        return _job_view(raw, queue)

    @app.get("/api/jobs/{job_id}/raw/{field}", dependencies=[Read])
    async def job_raw(job_id: str, field: str, c: Client, queue: str | None = None) -> Response:
        if field not in RAW_FIELDS:
            raise InvalidInput(f"field must be one of {', '.join(RAW_FIELDS)}")
        queue = await _job_queue(c, job_id, queue)
        k = c.keys(queue).job(job_id)
        if not await c.redis.exists(k):
            raise NotFound(f"no job with id {job_id!r} in queue {queue!r}")
        value = await c.redis.hget(k, field) or "null"
        return Response(
            value,
            media_type="application/json",
            headers={"content-disposition": f'attachment; filename="{job_id}-{field}.json"'},
        )

    @app.get("/api/jobs/{job_id}/graph", dependencies=[Read])
    async def graph(job_id: str, c: Client, queue: str | None = None) -> dict[str, Any]:
        queue = await _job_queue(c, job_id, queue)
        return await _graph(c, queue, job_id)

    @app.get("/api/jobs/{job_id}/events", dependencies=[Read])
    async def events(job_id: str, request: Request, c: Client, queue: str | None = None) -> Response:
        queue = await _job_queue(c, job_id, queue)
        keys = c.keys(queue)
        if not await c.redis.exists(keys.job(job_id)):
            raise NotFound(f"no job with id {job_id!r} in queue {queue!r}")
        if streams.locked():
            return JSONResponse({"detail": "too many live streams; try again shortly"}, status_code=429)
        await streams.acquire()
        reader = JobEventReader(c.redis, keys, job_id, parse_cursor(request.headers.get("last-event-id")))

        async def gen() -> AsyncIterator[str]:
            try:
                yield "retry: 1000\n\n"
                started = last = time.monotonic()
                # No is_disconnected() polling: Starlette cancels this generator when the client
                # goes away (and polling receive() here raced its own disconnect listener).
                while not reader.done and time.monotonic() - started < STREAM_SECONDS:
                    try:
                        batch = await reader.poll()
                    except RedisError as exc:
                        yield _sse("error", reader.cursor, {"detail": f"Redis unavailable: {exc}"})
                        await asyncio.sleep(1.0)
                        continue
                    for e in batch:
                        yield _sse(e.kind, e.cursor, e.data)
                    now = time.monotonic()
                    if batch:
                        last = now
                    elif now - last > KEEPALIVE_SECONDS:
                        last = now
                        yield ": keep-alive\n\n"
                    if not reader.done:
                        await asyncio.sleep(poll_interval)
            finally:
                streams.release()

        return _EventStream(
            gen(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    @app.post("/api/jobs/{job_id}/retry", dependencies=[Admin])
    async def retry(job_id: str, c: Client, queue: str | None = None) -> dict[str, str]:
        return {"id": job_id, "state": await c.retry(job_id, await _job_queue(c, job_id, queue))}

    @app.post("/api/jobs/{job_id}/cancel", dependencies=[Admin])
    async def cancel(job_id: str, c: Client, queue: str | None = None) -> dict[str, str]:
        return {"id": job_id, "state": await c.cancel(job_id, await _job_queue(c, job_id, queue))}

    @app.post("/api/jobs/{job_id}/remove", dependencies=[Admin])
    async def remove(job_id: str, c: Client, queue: str | None = None) -> dict[str, str]:
        await c.remove(job_id, await _job_queue(c, job_id, queue))
        return {"id": job_id, "state": "removed"}

    # ---- workers and cron ------------------------------------------------------------------

    @app.post("/api/queues/{queue}/workers/{worker_id}/drain", dependencies=[Admin])
    async def drain(queue: str, worker_id: str, c: Client) -> dict[str, Any]:
        await c.drain_worker(queue, worker_id, exit=False)
        return {"worker": worker_id, "draining": True}

    @app.post("/api/queues/{queue}/workers/{worker_id}/undrain", dependencies=[Admin])
    async def undrain(queue: str, worker_id: str, c: Client) -> dict[str, Any]:
        await c.undrain_worker(queue, worker_id)
        return {"worker": worker_id, "draining": False}

    @app.get("/api/queues/{queue}/trends", dependencies=[Read])
    async def queue_trends(
        queue: str, c: Client, minutes: Annotated[int, Query(ge=5, le=trends.RETENTION_MINUTES)] = 180
    ) -> dict[str, Any]:
        return {
            "queue": queue,
            "minutes": minutes,
            "series": await trends.read(c.redis, c.keys(queue), minutes),
        }

    @app.get("/api/queues/{queue}/cron", dependencies=[Read])
    async def cron(queue: str, c: Client) -> list[dict[str, Any]]:
        keys = c.keys(queue)
        now = time.time()
        out = []
        # Tick ids are keyed by the workers' secret (issue 10): none yet means no tick ran.
        secret = str(await c.redis.get(keys.cron_secret) or "")
        for t in c.tasks:
            if not t.cron:
                continue
            nxt = due_ticks(t.cron, now, now + 366 * 86_400, limit=5)
            past = _prev_ticks(t.cron, now, 5)
            async with c.redis.pipeline(transaction=False) as pipe:
                for tick in past:
                    pipe.hmget(keys.job(tick_job_id(t.name, tick, secret)), ["state", "finished_at"])
                states = await pipe.execute()
            out.append(
                {
                    "task": t.name,
                    "cron": t.cron,
                    "next": nxt,
                    "last": [
                        {"tick": tick, "id": tick_job_id(t.name, tick, secret), "state": st[0]}
                        for tick, st in zip(past, states, strict=True)
                    ],
                }
            )
        return out

    return app


class _EventStream(StreamingResponse):
    """An SSE response that ends when its generator does (at most STREAM_SECONDS). Starlette's
    receive()-based disconnect listener got an `http.disconnect` from uvicorn right after the
    response started while the client was still reading, and cancelled every live stream at
    once (the page then reconnected each second: polling in disguise). uvicorn drops writes to
    a gone client silently, so such a stream holds its slot until STREAM_SECONDS at most."""

    async def listen_for_disconnect(self, receive: Any) -> None:
        await asyncio.Event().wait()


def _valid_queue(name: str) -> bool:
    try:
        check_queue(name)
    except InvalidInput:
        return False
    return True


def _prev_ticks(expr: str, now: float, n: int) -> list[float]:
    from datetime import UTC, datetime

    from croniter import croniter

    it = croniter(expr, datetime.fromtimestamp(now, UTC))
    return [float(it.get_prev(float)) for _ in range(n)]


def _sse(kind: str, cursor: int, data: Any) -> str:
    body = json.dumps(data, default=str, separators=(",", ":"))
    return f"id: {cursor}\nevent: {kind}\ndata: {body}\n\n"


def _job_view(raw: dict[str, str], queue: str) -> dict[str, Any]:
    """A job for the page: every stored value size-capped; `truncated` names what was cut."""

    def ms(k: str) -> float | None:
        try:
            return float(raw[k]) / 1000 if raw.get(k) else None
        except ValueError:
            return None

    truncated = [f for f in RAW_FIELDS if len(raw.get(f) or "") > FIELD_CAP]
    errors = bounded_json(raw.get("errors"), 4 * FIELD_CAP)
    labels = bounded_json(raw.get("labels"), 8192)
    return {
        "id": raw.get("id", ""),
        "queue": queue,
        "task": raw.get("task", ""),
        "state": raw.get("state", ""),
        "priority": raw.get("priority"),
        "attempts": raw.get("attempts"),
        "max_attempts": raw.get("max_attempts") or None,
        "timeout": raw.get("timeout") or None,
        "parents": bounded_json(raw.get("parents"), 65_536) or [],
        "run_regardless": raw.get("run_regardless") == "1",
        "capabilities": bounded_json(raw.get("caps"), 4096) or [],
        "labels": labels if isinstance(labels, dict) else {},
        "backoff": bounded_json(raw.get("backoff"), 4096),
        "enqueued_at": ms("enqueued_at"),
        "run_at": ms("run_at"),
        "started_at": ms("started_at"),
        "finished_at": ms("finished_at"),
        "worker": raw.get("worker") or None,
        "dead_reason": (raw.get("dead_reason") or "")[:4000] or None,
        "cancel_requested": raw.get("cancel") == "1",
        "replays": raw.get("replays"),
        "payload": bounded_json(raw.get("payload"), FIELD_CAP),
        "result": bounded_json(raw.get("result"), FIELD_CAP),
        "progress": bounded_json(raw.get("progress"), FIELD_CAP),
        "errors": (errors if isinstance(errors, list) else [errors])[-50:] if errors else [],
        "truncated": truncated,
    }


async def _graph(c: HerderClient, queue: str, job_id: str, max_nodes: int = 100) -> dict[str, Any]:
    """Ancestors (by `parents`) and pending children of a job, breadth first, bounded."""
    keys = c.keys(queue)
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[tuple[str, str]] = []
    frontier, depth = [job_id], 0
    while frontier and len(nodes) < max_nodes and depth <= 6:
        async with c.redis.pipeline(transaction=False) as pipe:
            for i in frontier:
                pipe.hmget(keys.job(i), ["state", "task", "parents"])
            rows = await pipe.execute()
        nxt: list[str] = []
        for i, (state, task, parents) in zip(frontier, rows, strict=True):
            nodes[i] = {"id": i, "state": state or "gone", "task": task or "", "depth": -depth}
            ps = bounded_json(parents, 65_536)
            for p in ps if isinstance(ps, list) else []:
                if isinstance(p, str) and ID_RE.match(p):
                    edges.append((p, i))
                    if p not in nodes and p not in nxt and len(nodes) + len(nxt) < max_nodes:
                        nxt.append(p)
        frontier, depth = nxt, depth + 1
    kids: list[str] = []
    async for k in c.redis.sscan_iter(f"{keys.base}:children:{job_id}", count=100):
        kids.append(k)
        if len(kids) >= 50:
            break
    if kids:
        async with c.redis.pipeline(transaction=False) as pipe:
            for i in kids:
                pipe.hmget(keys.job(i), ["state", "task"])
            rows = await pipe.execute()
        for i, (state, task) in zip(kids, rows, strict=True):
            nodes.setdefault(i, {"id": i, "state": state or "gone", "task": task or "", "depth": 1})
            edges.append((job_id, i))
    return {
        "nodes": list(nodes.values()),
        "edges": [list(e) for e in edges],
        "truncated": len(nodes) >= max_nodes,
    }


__all__ = ["BROWSABLE", "create_app"]
