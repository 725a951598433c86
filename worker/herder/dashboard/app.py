"""FastAPI app behind the dashboard page. Reads are open; operations (pause, resume, retry,
cancel, remove, replay) need the bearer token when HERDER_DASHBOARD_TOKEN is set."""

from __future__ import annotations

import hmac
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from redis.exceptions import RedisError

from herder.client import HerderClient
from herder.errors import Conflict, InvalidInput, NotFound
from herder.settings import HerderSettings
from herder.tasks import TaskSet


def _client(request: Request) -> HerderClient:
    c: HerderClient = request.app.state.client
    return c


# Module level: FastAPI resolves these string annotations in the module's namespace.
Client = Annotated[HerderClient, Depends(_client)]


def create_app(settings: HerderSettings, tasks: TaskSet | None = None, token: str | None = None) -> FastAPI:
    token = token if token is not None else os.environ.get("HERDER_DASHBOARD_TOKEN") or None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.client = HerderClient(settings, tasks)
        try:
            yield
        finally:
            await app.state.client.close()

    app = FastAPI(title="Herder", lifespan=lifespan, docs_url="/api/docs", openapi_url="/api/openapi.json")

    def authorized(authorization: Annotated[str | None, Header()] = None) -> None:
        if token is None:
            return
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "operations need the dashboard token (Authorization: Bearer …)")

    Auth = Depends(authorized)

    @app.exception_handler(InvalidInput)
    async def _invalid(_: Request, exc: InvalidInput) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(NotFound)
    async def _missing(_: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(RedisError)
    async def _redis(_: Request, exc: RedisError) -> JSONResponse:
        return JSONResponse({"detail": f"Redis unavailable: {exc}"}, status_code=503)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return (resources.files("herder.dashboard") / "static" / "index.html").read_text()

    @app.get("/api/config")
    async def config() -> dict[str, Any]:
        return {"auth": token is not None}

    @app.get("/api/queues")
    async def queues(c: Client) -> list[dict[str, Any]]:
        return [(await c.status(q)).model_dump(mode="json") for q in await c.queues()]

    @app.get("/api/queues/{queue}")
    async def queue(queue: str, c: Client) -> dict[str, Any]:
        return (await c.status(queue)).model_dump(mode="json")

    @app.get("/api/queues/{queue}/dlq")
    async def dlq(queue: str, c: Client, limit: int = 100) -> list[dict[str, Any]]:
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit must be 1..1000")
        return [j.model_dump(mode="json") for j in await c.dlq_list(queue, limit)]

    @app.get("/api/jobs/{job_id}")
    async def job(job_id: str, c: Client, log_tail: int = 50) -> dict[str, Any]:
        j = await c.get_job(job_id)
        events = await c.job_log(job_id, j.queue, start=-max(0, min(log_tail, 1000)) if log_tail else 0)
        return {**j.model_dump(mode="json"), "log": events if log_tail else []}

    @app.post("/api/queues/{queue}/pause", dependencies=[Auth])
    async def pause(queue: str, c: Client) -> dict[str, Any]:
        await c.pause(queue)
        return {"queue": queue, "paused": True}

    @app.post("/api/queues/{queue}/resume", dependencies=[Auth])
    async def resume(queue: str, c: Client) -> dict[str, Any]:
        await c.resume(queue)
        return {"queue": queue, "paused": False}

    @app.post("/api/queues/{queue}/dlq/replay", dependencies=[Auth])
    async def replay_all(queue: str, c: Client) -> dict[str, str]:
        return await c.replay(queue, await c.dlq_ids(queue))

    @app.post("/api/jobs/{job_id}/retry", dependencies=[Auth])
    async def retry(job_id: str, c: Client) -> dict[str, str]:
        return {"id": job_id, "state": await c.retry(job_id)}

    @app.post("/api/jobs/{job_id}/cancel", dependencies=[Auth])
    async def cancel(job_id: str, c: Client) -> dict[str, str]:
        return {"id": job_id, "state": await c.cancel(job_id)}

    @app.post("/api/jobs/{job_id}/remove", dependencies=[Auth])
    async def remove(job_id: str, c: Client) -> dict[str, str]:
        await c.remove(job_id)
        return {"id": job_id, "state": "removed"}

    return app
