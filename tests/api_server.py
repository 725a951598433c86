"""Real uvicorn servers for tests (any ASGI app on a free port, in a thread; the HTTP API), and
API token helpers."""

from __future__ import annotations

import threading
import time
from typing import Any, Self

import redis
import uvicorn

from herder.api.app import ApiLimits, create_app
from herder.api.tokens import TokenRecord, Verb, new_token
from herder.keys import api_tokens_key
from herder.localredis import free_port
from herder.settings import HerderSettings
from herder.tasks import TaskSet


class ThreadedServer:
    """An ASGI app served by real uvicorn on a free loopback port, in a thread, for a with-block."""

    def __init__(self, app: Any, **config: Any) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", **config)
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive(), "the server's thread died (see its log)"
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


class ApiServer(ThreadedServer):
    def __init__(self, settings: HerderSettings, tasks: TaskSet, limits: ApiLimits | None = None, **kw: Any):
        super().__init__(create_app(settings, tasks, limits=limits, **kw), lifespan="on")


def make_token(
    r: redis.Redis, queues: list[str], verbs: str, prefix: str = "herder"
) -> tuple[str, TokenRecord]:
    token, record = new_token(queues, [Verb(v) for v in verbs.split(",")], name="test")
    r.hset(api_tokens_key(prefix), record.id, record.model_dump_json())
    return token, record


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
