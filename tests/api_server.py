"""The HTTP API served by real uvicorn on a free port (in a thread), and token helpers."""

from __future__ import annotations

import threading
import time
from typing import Any

import redis
import uvicorn

from herder.api.app import ApiLimits, create_app
from herder.api.tokens import TokenRecord, Verb, new_token
from herder.keys import api_tokens_key
from herder.localredis import free_port
from herder.settings import HerderSettings
from herder.tasks import TaskSet


class ApiServer:
    def __init__(self, settings: HerderSettings, tasks: TaskSet, limits: ApiLimits | None = None, **kw: Any):
        self.port = free_port()
        app = create_app(settings, tasks, limits=limits, **kw)
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert self.thread.is_alive(), "API server thread died"
            assert time.monotonic() < deadline, "API server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def make_token(
    r: redis.Redis, queues: list[str], verbs: str, prefix: str = "herder"
) -> tuple[str, TokenRecord]:
    token, record = new_token(queues, [Verb(v) for v in verbs.split(",")], name="test")
    r.hset(api_tokens_key(prefix), record.id, record.model_dump_json())
    return token, record


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
