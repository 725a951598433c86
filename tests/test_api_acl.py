"""`herder api` under its least-privilege Redis ACL user (herder.acl role "api"), against a real
redis-server loaded from the generated aclfile: every endpoint works, and the user can neither
write token records nor run admin commands."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import redis
from redis.exceptions import NoPermissionError

from api_server import ApiServer, auth, make_token
from herder.keys import api_tokens_key
from herder.tasks import load_taskset
from redis_proc import RedisProc
from test_acl import PASSWORD, acl_redis, settings_for

__all__ = ["acl_redis"]  # the fixture, shared with test_acl


@pytest.fixture
def admin(acl_redis: RedisProc) -> Iterator[redis.Redis]:
    r = redis.Redis(port=acl_redis.port, username="admin", password=PASSWORD, decode_responses=True)
    r.flushall()
    yield r
    r.close()


def test_api_works_under_its_acl_user(acl_redis: RedisProc, admin: redis.Redis) -> None:
    token, _ = make_token(admin, ["q1"], "submit,read,operate")
    with (
        ApiServer(settings_for(acl_redis, "api"), load_taskset(None)) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        assert http.get("/readyz").status_code == 200
        one = http.post(
            "/v1/queues/q1/jobs", json={"task": "echo", "id": "a1", "delay": 3600}, headers=auth(token)
        )
        assert one.status_code == 201, one.text
        batch = {"jobs": [{"task": "echo", "id": "a2"}, {"task": "sleep", "payload": {"seconds": 1}}]}
        assert http.post("/v1/queues/q1/jobs", json=batch, headers=auth(token)).status_code == 201
        assert http.get("/v1/jobs/a1", headers=auth(token)).json()["state"] == "scheduled"
        assert http.get("/v1/queues", headers=auth(token)).json() == ["q1"]
        assert http.get("/v1/queues/q1", headers=auth(token)).json()["scheduled"] == 1
        assert http.post("/v1/jobs/a1/cancel", headers=auth(token)).json()["state"] == "cancelled"
        with http.stream("GET", "/v1/jobs/a1/events", headers=auth(token)) as s:
            kinds = [line[7:] for line in s.iter_lines() if line.startswith("event: ")]
        assert kinds == ["snapshot", "result"]
        assert http.post("/v1/jobs/a1/retry", headers=auth(token)).json()["state"] == "ready"
        assert http.delete("/v1/jobs/a1", headers=auth(token)).json()["state"] == "removed"
        # CONFIG is denied to this user; with no AOF the fsync request is refused before writing
        resp = http.post(
            "/v1/queues/q1/jobs?durability=fsync", json={"task": "echo", "id": "d1"}, headers=auth(token)
        )
        assert resp.status_code == 422 and "appendonly" in json.dumps(resp.json())
        assert not admin.exists("herder:{q1}:job:d1")
    api = redis.Redis(port=acl_redis.port, username="api", password=PASSWORD, decode_responses=True)
    try:
        for cmd in (
            ("HSET", api_tokens_key("herder"), "x", "{}"),
            ("DEL", api_tokens_key("herder")),
            ("KEYS", "*"),
            ("FLUSHALL",),
            ("CONFIG", "GET", "*"),
            ("ACL", "LIST"),
            ("GET", "other:key"),
        ):
            with pytest.raises(NoPermissionError):
                api.execute_command(*cmd)
    finally:
        api.close()
