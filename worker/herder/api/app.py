"""`herder api`: submit and follow jobs over HTTP. Every request but the probes carries a bearer
token scoped to queues and verbs; submissions go through HerderClient, so validation, options
and idempotency are exactly those of `enqueue`."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import TypeAdapter, ValidationError
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from herder import __version__
from herder.api.contract import REF, Contract, Submitted, SubmittedBatch, TaskInfo
from herder.api.durability import CannotConfirm, Durability, ServerFacts, confirmed, plan, server_facts
from herder.api.events import JobEvent, job_events
from herder.api.ratelimit import RateLimiter
from herder.api.tokens import RedisTokenStore, TokenRecord, TokenStore, Verb, split_token, verify
from herder.client import HerderClient, check_queue
from herder.errors import Conflict, CorruptData, InvalidInput, NotFound
from herder.jobevents import parse_cursor
from herder.keys import valid_id
from herder.logs import get_logger
from herder.models import Job, QueueStatus
from herder.settings import HerderSettings
from herder.tasks import TaskSet, load_taskset
from herder.web.errors import install_error_handlers, send_json
from herder.web.security import RequestCheck, SecurityMiddleware

FACTS_TTL_S = 10.0
log = get_logger(__name__)


@dataclass(frozen=True)
class ApiLimits:
    max_body_bytes: int = 2 << 20  # one 1 MiB payload plus its options, or a batch of small ones
    rate: float = 50.0  # requests per second per token (sustained)
    burst: float = 100.0
    events_poll_s: float = 0.25
    durable_timeout_ms: int = 5000
    durable_connections: int = 8
    token_cache_s: float = 1.0  # how long a looked-up token record is trusted  # WAIT/WAITAOF apply to one connection's writes: pinned clients


class ApiError(Exception):
    def __init__(self, status: int, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(str(detail))
        self.status, self.detail, self.headers = status, detail, headers or {}


def _error_list(msg: str, loc: list[str | int] | None = None, kind: str = "invalid") -> list[dict[str, Any]]:
    return [{"type": kind, "loc": loc or ["body"], "msg": msg}]


def _jsonable_errors(exc: ValidationError, prefix: list[str | int]) -> list[dict[str, Any]]:
    errs = [{**e, "loc": [*prefix, *e["loc"]]} for e in exc.errors(include_url=False)]
    out: list[dict[str, Any]] = json.loads(json.dumps(errs, default=str))
    return out


class BodyLimit:
    """Refuse request bodies over `limit` bytes (413), by Content-Length or while streaming,
    before the app reads them into memory."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                await self._reject(send)
                return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except* _TooLarge:  # may arrive wrapped in a task group's ExceptionGroup
            if not started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = json.dumps({"detail": f"request body over {self.limit} bytes"}).encode()
        await send_json(send, 413, body)


class _TooLarge(Exception):
    pass


class State:
    """Per-app state, created in the lifespan."""

    def __init__(self, settings: HerderSettings, tasks: TaskSet, store: TokenStore | None, limits: ApiLimits):
        self.settings, self.tasks, self.limits = settings, tasks, limits
        self.client = HerderClient(settings, tasks)
        self.store: TokenStore = store or RedisTokenStore(self.client.redis, settings.key_prefix)
        self.limiter = RateLimiter(limits.rate, limits.burst)
        self.pinned: asyncio.Queue[HerderClient] = asyncio.Queue()
        self.pinned_made = 0
        self.facts: tuple[float, ServerFacts] | None = None
        self._tokens: OrderedDict[str, tuple[float, TokenRecord]] = OrderedDict()

    async def token(self, token_id: str) -> TokenRecord | None:
        """The token's record, cached for `token_cache_s` (a Redis round trip saved on most
        requests; a revocation takes effect within that time). Misses are not cached."""
        now = time.monotonic()
        hit = self._tokens.get(token_id)
        if hit is not None and now - hit[0] < self.limits.token_cache_s:
            return hit[1]
        record = await self.store.get(token_id)
        if record is None:
            self._tokens.pop(token_id, None)
            return None
        self._tokens[token_id] = (now, record)
        self._tokens.move_to_end(token_id)
        if len(self._tokens) > 10_000:
            self._tokens.popitem(last=False)
        return record

    async def server_facts(self) -> ServerFacts:
        now = time.monotonic()
        if self.facts is None or now - self.facts[0] > FACTS_TTL_S:
            self.facts = (now, await server_facts(self.client.redis))
        return self.facts[1]

    @asynccontextmanager
    async def pinned_client(self) -> AsyncIterator[HerderClient]:
        """A client bound to one connection, so WAIT/WAITAOF cover exactly its own writes."""
        if self.pinned.empty() and self.pinned_made < self.limits.durable_connections:
            self.pinned_made += 1
            self.pinned.put_nowait(HerderClient(self.settings, self.tasks, redis=self.client.redis.client()))
        c = await self.pinned.get()
        try:
            yield c
        finally:
            self.pinned.put_nowait(c)

    async def close(self) -> None:
        while not self.pinned.empty():
            await self.pinned.get_nowait().close()
        await self.client.close()


def st(request: Request) -> State:
    s: State = request.app.state.herder
    return s


async def authenticate(request: Request) -> TokenRecord:
    """The request's token record; 401 without a valid one, 429 over its rate."""
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="herder"'}
    if scheme.lower() != "bearer" or not given.strip():
        raise ApiError(401, "missing bearer token (Authorization: Bearer <token>)", challenge)
    parts = split_token(given.strip())
    s = st(request)
    try:
        record = await s.token(parts[0]) if parts else None
    except InvalidInput:  # a token file that no longer parses: fail closed, say nothing about it
        log.error("token store unreadable; refusing every request until it is fixed")
        raise ApiError(503, "token store unavailable") from None
    if parts is None or record is None or not verify(record, parts[1]):
        raise ApiError(401, "invalid or revoked token", challenge)
    # Only after the secret checked out, so bad guesses cannot spend a real token's budget.
    wait = s.limiter.take(record.id, time.monotonic())
    if wait > 0:
        raise ApiError(
            429, f"rate limit of {s.limits.rate:g}/s exceeded", {"Retry-After": str(max(1, math.ceil(wait)))}
        )
    return record


# Module level: FastAPI resolves string annotations in the module's namespace.
Token = Annotated[TokenRecord, Depends(authenticate)]


def create_app(
    settings: HerderSettings,
    tasks: TaskSet | None = None,
    *,
    store: TokenStore | None = None,
    limits: ApiLimits | None = None,
    allowed_hosts: frozenset[str] | None = None,
    allowed_origins: tuple[str, ...] = (),
) -> FastAPI:
    """The API app. `allowed_hosts`: the Host names served (None: any; the CLI defaults to
    loopback and the bound address, see herder.web.security); `allowed_origins`: browser
    origins allowed to send writes (none by default: the API is for back ends)."""
    tasks = tasks if tasks is not None else load_taskset(None)
    limits = limits or ApiLimits()
    contract = Contract(tasks)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.herder = State(settings, tasks, store, limits)
        try:
            yield
        finally:
            await app.state.herder.close()

    app = FastAPI(
        title="Herder API",
        version=__version__,
        description="Submit and follow Herder jobs. Authenticate with `Authorization: Bearer <token>`.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )

    # Outermost: Host and Origin checks and security headers; then the size cap, left to
    # BodyLimit alone because it answers 413 for a chunked body too (not a disconnect).
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)
    app.add_middleware(
        SecurityMiddleware,
        check=RequestCheck(allowed_hosts, frozenset(allowed_origins)),
        no_store_prefix="/v1/",
        max_body=1 << 62,
    )

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    install_error_handlers(
        app,
        {
            InvalidInput: (422, lambda e: _error_list(str(e))),
            NotFound: (404, str),
            Conflict: (409, str),
            CorruptData: (500, lambda e: f"stored data is corrupt: {e}"),
            RedisError: (503, lambda e: f"Redis unavailable: {type(e).__name__}"),
        },
    )

    def require(token: TokenRecord, verb: Verb, queue: str) -> None:
        check_queue(queue)
        if not token.allows(verb, queue):
            raise ApiError(403, f"token {token.id} may not {verb.value} on queue {queue!r}")

    async def locate(s: State, token: TokenRecord, verb: Verb, job_id: str, queue: str | None) -> str:
        """The queue of `job_id` among those the token may use with `verb`. A job in a queue
        the token cannot see is reported missing, so ids cannot be probed across tenants."""
        if not valid_id(job_id):
            raise InvalidInput(f"invalid job id {job_id!r}")
        if queue is not None:
            check_queue(queue)
            candidates = [queue] if token.allows(verb, queue) else []
        else:
            candidates = [q for q in await s.client.queues() if token.allows(verb, q)]
        async with s.client.redis.pipeline(transaction=False) as pipe:
            for q in candidates:
                pipe.exists(s.client.keys(q).job(job_id))
            found = await pipe.execute() if candidates else []
        hits = [q for q, n in zip(candidates, found, strict=True) if n]
        if not hits:
            if verb is not Verb.read and await _visible(s, token, job_id, queue):
                raise ApiError(403, f"token {token.id} may not {verb.value} job {job_id!r}")
            raise NotFound(f"no job with id {job_id!r}")
        if len(hits) > 1:
            raise InvalidInput(f"job id {job_id!r} exists in queues {', '.join(hits)}: pass ?queue=")
        return hits[0]

    async def _visible(s: State, token: TokenRecord, job_id: str, queue: str | None) -> bool:
        try:
            await locate(s, token, Verb.read, job_id, queue)
        except NotFound:
            return False
        return True

    # ---- probes (no token: they reveal nothing) -----------------------------------------

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        try:
            await st(request).client.redis.ping()
        except (RedisError, OSError):
            return JSONResponse({"status": "redis unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    # ---- submit -------------------------------------------------------------------------

    @app.post(
        "/v1/queues/{queue}/jobs",
        status_code=201,
        responses={
            200: {
                "description": "Every job already existed (idempotent resubmission)",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SubmitResponse"}}},
            },
            201: {
                "description": "Enqueued",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SubmitResponse"}}},
            },
            422: {
                "description": "Invalid submission: the pydantic error list; nothing was written",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
                },
            },
        },
        response_class=JSONResponse,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Submission"}}},
            }
        },
        operation_id="submit",
    )
    async def submit(
        queue: str,
        request: Request,
        token: Token,
        durability: Annotated[Durability, Query(description="ack: in Redis memory; fsync: on disk")] = (
            Durability.ack
        ),
        replicas: Annotated[int, Query(ge=0, le=16, description="Replicas that must confirm")] = 0,
    ) -> JSONResponse:
        """Enqueue one job, or a batch (`{"jobs": [...]}`) atomically."""
        require(token, Verb.submit, queue)
        s = st(request)
        try:
            body = json.loads(await request.body())
        except ValueError as exc:
            raise ApiError(422, _error_list(f"invalid JSON: {exc}", kind="json_invalid")) from None
        batch = isinstance(body, dict) and "jobs" in body
        if batch:
            if set(body) != {"jobs"} or not isinstance(body["jobs"], list):
                raise ApiError(422, _error_list('a batch is {"jobs": [submission, ...]} and nothing else'))
            items: list[Any] = body["jobs"]
            prefix: list[str | int] = ["body", "jobs"]
        else:
            items, prefix = [body], ["body"]
        if not items:
            raise ApiError(422, _error_list("a batch needs at least one job", ["body", "jobs"]))
        try:
            requests = contract.validate(items)
        except ValidationError as exc:
            errs = _jsonable_errors(exc, prefix)
            if not batch:  # drop the list index of the single submission
                for e in errs:
                    e["loc"] = ["body", *e["loc"][2:]]
            raise ApiError(422, errs) from None
        try:
            p = plan(await s.server_facts(), durability, replicas, limits.durable_timeout_ms)
        except CannotConfirm as exc:
            raise ApiError(
                422, _error_list(str(exc), ["query", "durability"], "durability_unavailable")
            ) from None
        if p.command is None:
            results = await s.client.enqueue_many(queue, requests)
            ok = True
        else:
            async with s.pinned_client() as pc:
                results = await pc.enqueue_many(queue, requests)
                ok = confirmed(p, await pc.redis.execute_command(*p.command))
        jobs = [r.model_dump(mode="json") for r in results]
        if not ok:
            raise ApiError(
                504,
                {
                    "msg": "jobs are enqueued but the requested durability was not confirmed in time; "
                    "resubmitting with the same ids is safe (idempotent)",
                    "jobs": jobs,
                },
            )
        out: dict[str, Any] = {"jobs": jobs} if batch else jobs[0]
        if p.fsync_local or p.replicas:
            out["durability"] = {"fsync": p.fsync_local, "replicas": p.replicas}
        return JSONResponse(out, status_code=201 if any(r.created for r in results) else 200)

    # ---- read ---------------------------------------------------------------------------

    @app.get("/v1/jobs/{job_id}", response_model=Job, operation_id="getJob")
    async def get_job(
        job_id: str, request: Request, token: Token, queue: Annotated[str | None, Query()] = None
    ) -> Job:
        s = st(request)
        q = await locate(s, token, Verb.read, job_id, queue)
        return await s.client.get_job(job_id, q)

    @app.get(
        "/v1/jobs/{job_id}/events",
        operation_id="jobEvents",
        response_class=StreamingResponse,
        responses={
            200: {
                "description": "A text/event-stream; each frame's `event`, `id` and JSON `data` as JobEvent",
                "content": {"text/event-stream": {"schema": {"$ref": "#/components/schemas/JobEvent"}}},
            }
        },
    )
    async def events(
        job_id: str, request: Request, token: Token, queue: Annotated[str | None, Query()] = None
    ) -> StreamingResponse:
        """Server-sent events: `snapshot` first, then `state`, `attempt`, `progress` and `log`
        (e.g. Claude stream-json events), then `result` (the final job) and the end of the
        stream. Each id is the job's log position: resume with `Last-Event-ID`."""
        s = st(request)
        q = await locate(s, token, Verb.read, job_id, queue)
        cursor = parse_cursor(request.headers.get("last-event-id"))
        stream = job_events(s.client.redis, s.client.keys(q), job_id, cursor, limits.events_poll_s)
        return StreamingResponse(
            stream,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @app.get("/v1/queues", operation_id="listQueues")
    async def list_queues(request: Request, token: Token) -> list[str]:
        return token.readable(await st(request).client.queues())

    @app.get("/v1/queues/{queue}", response_model=QueueStatus, operation_id="queueStatus")
    async def queue_status(queue: str, request: Request, token: Token) -> QueueStatus:
        require(token, Verb.read, queue)
        return await st(request).client.status(queue)

    @app.get("/v1/tasks", response_model=list[TaskInfo], operation_id="listTasks")
    async def list_tasks(token: Token) -> list[TaskInfo]:
        return [
            TaskInfo(
                name=t.name,
                max_attempts=t.max_attempts,
                timeout=t.timeout,
                capabilities=list(t.capabilities),
                payload_schema=t.payload_model.model_json_schema() if t.payload_model else {},
                result_schema=t.result_model.model_json_schema() if t.result_model else {},
            )
            for t in sorted(tasks, key=lambda t: t.name)
        ]

    # ---- operate ------------------------------------------------------------------------

    async def operate(
        request: Request,
        token: TokenRecord,
        job_id: str,
        queue: str | None,
        act: Callable[[HerderClient, str, str], Awaitable[str]],
    ) -> dict[str, str]:
        """Find the job among the queues the token may operate on; answer the state `act` leaves it in."""
        s = st(request)
        q = await locate(s, token, Verb.operate, job_id, queue)
        return {"id": job_id, "queue": q, "state": await act(s.client, job_id, q)}

    @app.post("/v1/jobs/{job_id}/cancel", operation_id="cancelJob")
    async def cancel(
        job_id: str, request: Request, token: Token, queue: Annotated[str | None, Query()] = None
    ) -> dict[str, str]:
        return await operate(request, token, job_id, queue, HerderClient.cancel)

    @app.post("/v1/jobs/{job_id}/retry", operation_id="retryJob")
    async def retry(
        job_id: str, request: Request, token: Token, queue: Annotated[str | None, Query()] = None
    ) -> dict[str, str]:
        return await operate(request, token, job_id, queue, HerderClient.retry)

    @app.delete("/v1/jobs/{job_id}", operation_id="removeJob")
    async def remove(
        job_id: str, request: Request, token: Token, queue: Annotated[str | None, Query()] = None
    ) -> dict[str, str]:
        return await operate(request, token, job_id, queue, _remove)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(contract.components())
            schemas["Submission"] = contract.submission_schema()
            documented: dict[str, Any] = {
                "Submitted": Submitted,
                "SubmittedBatch": SubmittedBatch,
                "JobEvent": JobEvent,
            }
            for name, model in documented.items():
                ms = TypeAdapter(model).json_schema(ref_template=REF)
                schemas.update(ms.pop("$defs", {}))
                schemas[name] = ms
            schemas["SubmitResponse"] = {
                "oneOf": [
                    {"$ref": REF.format(model="Submitted")},
                    {"$ref": REF.format(model="SubmittedBatch")},
                ]
            }
            for t in tasks:
                if t.result_model is not None:
                    rs = t.result_model.model_json_schema(ref_template=REF)
                    schemas.update(rs.pop("$defs", {}))
                    schemas[t.result_model.__name__] = rs
            doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            doc["security"] = [{"bearer": []}]
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


async def _remove(client: HerderClient, job_id: str, queue: str) -> str:
    await client.remove(job_id, queue)
    return "removed"
