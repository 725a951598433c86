"""The HTTP API over real HTTP (uvicorn), against a real redis-server and a real `herder worker`."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from api_server import ApiServer, auth, make_token
from herder.api.app import ApiLimits
from herder.api.tokens import FileTokenStore, Verb, append_token_file, new_token
from herder.keys import api_tokens_key
from herder.settings import HerderSettings
from herder.tasks import load_taskset
from procs import APPS, WorkerProc
from redis_proc import RedisProc

sys.path.insert(0, APPS)
TASKS = load_taskset("api_app")


@pytest.fixture
def r(redis_server: RedisProc) -> Iterator[redis.Redis]:
    conn = redis.Redis(port=redis_server.port, decode_responses=True)
    yield conn
    conn.close()


@pytest.fixture
def api(settings: HerderSettings) -> Iterator[ApiServer]:
    with ApiServer(settings, TASKS) as server:
        yield server


@pytest.fixture
def http(api: ApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=30) as c:
        yield c


def herder_keys(r: redis.Redis) -> set[str]:
    """Every key but the token store."""
    return {k for k in r.keys("*") if k != api_tokens_key("herder")}


def until_status(call: Callable[[], httpx.Response], status: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (code := call().status_code) != status:
        assert time.monotonic() < deadline, f"still {code}, wanted {status}"
        time.sleep(0.05)


def sse(resp: httpx.Response) -> Iterator[dict[str, Any]]:
    """Parse a text/event-stream response into {id, event, data} dicts."""
    ev: dict[str, Any] = {}
    for line in resp.iter_lines():
        if not line:
            if "event" in ev:
                yield ev
            ev = {}
        elif line.startswith("data: "):
            ev["data"] = json.loads(line[6:])
        elif line.startswith(("id: ", "event: ")):
            k, _, v = line.partition(": ")
            ev[k] = v


# ---- submit → events → result ---------------------------------------------------------


def test_submit_then_follow_events_to_the_result(
    http: httpx.Client, r: redis.Redis, worker_env: dict[str, str]
) -> None:
    token, _ = make_token(r, ["api"], "submit,read")
    w = WorkerProc(worker_env, "api-w", queue="api", app="api_app")
    try:
        resp = http.post(
            "/v1/queues/api/jobs", json={"task": "steps", "payload": {"steps": 3}}, headers=auth(token)
        )
        assert resp.status_code == 201, resp.text
        body = resp.json()
        assert body["state"] == "ready" and body["created"] is True
        job_id = body["id"]
        with http.stream("GET", f"/v1/jobs/{job_id}/events", headers=auth(token)) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = list(sse(stream))  # the server ends the stream after `result`
    finally:
        w.stop()
    kinds = [e["event"] for e in events]
    assert kinds[0] == "snapshot" and kinds[-1] == "result"
    logs = [e for e in events if e["event"] == "log"]
    assert [e["data"]["n"] for e in logs] == [1, 2, 3]
    assert [e["id"] for e in logs] == ["1", "2", "3"]  # the id is the log position
    assert events[-1]["data"]["state"] == "succeeded"
    assert events[-1]["data"]["result"] == {"done": 3}
    got = http.get(f"/v1/jobs/{job_id}", headers=auth(token))
    assert got.status_code == 200 and got.json()["state"] == "succeeded"
    assert got.json()["result"] == {"done": 3}


def test_events_resume_with_last_event_id_without_repeats_or_gaps(
    http: httpx.Client, r: redis.Redis, worker_env: dict[str, str]
) -> None:
    token, _ = make_token(r, ["api"], "submit,read")
    job_id = "resumable"
    resp = http.post(
        "/v1/queues/api/jobs",
        json={"task": "steps", "id": job_id, "payload": {"steps": 4, "gated": True}},
        headers=auth(token),
    )
    assert resp.status_code == 201, resp.text
    w = WorkerProc(worker_env, "api-resume", queue="api", app="api_app")
    try:
        r.set(f"test:gate:{job_id}", 2)
        first: list[dict[str, Any]] = []
        with http.stream("GET", f"/v1/jobs/{job_id}/events", headers=auth(token)) as stream:
            for ev in sse(stream):
                first.append(ev)
                if ev["event"] == "progress" and ev["data"] == {"step": 2}:
                    break  # the client drops the connection mid-run
        last_id = first[-1]["id"]
        r.set(f"test:gate:{job_id}", 4)
        headers = {**auth(token), "Last-Event-ID": last_id}
        with http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as stream:
            second = list(sse(stream))
    finally:
        w.stop()
    logs = [e["data"]["n"] for e in first + second if e["event"] == "log"]
    assert logs == [1, 2, 3, 4]  # every step exactly once across the two connections
    assert second[0]["event"] == "snapshot"  # a reconnect starts from the current state
    # progress arrives as events, or inside the snapshot when it changed while disconnected
    progress = [
        (e["data"]["progress"] if e["event"] == "snapshot" else e["data"])["step"]
        for e in first + second
        if e["event"] == "progress" or (e["event"] == "snapshot" and e["data"]["progress"])
    ]
    assert progress == sorted(progress) and progress[-1] == 4
    assert second[-1]["event"] == "result" and second[-1]["data"]["result"] == {"done": 4}


def test_events_stream_stays_open_and_delivers_later_events(http: httpx.Client, r: redis.Redis) -> None:
    """One connection, held: an event written after the stream started arrives on it (pushed,
    not reconnect-polled). uvicorn 0.54 sent an early http.disconnect that made Starlette's
    StreamingResponse cancel every stream after its first batch."""
    token, _ = make_token(r, ["api"], "submit,read")
    resp = http.post(
        "/v1/queues/api/jobs",
        json={"task": "echo", "id": "held", "payload": 1, "delay": 3600},
        headers=auth(token),
    )
    assert resp.status_code == 201, resp.text
    with http.stream("GET", "/v1/jobs/held/events", headers=auth(token)) as stream:
        frames = sse(stream)
        assert next(frames)["event"] == "snapshot"
        # A gap, not the proof: the event is written after the stream has polled a few times.
        time.sleep(1.5)
        r.rpush("herder:{api}:log:held", json.dumps({"type": "herder", "late": True}))
        late = next(frames, None)  # blocks until the event arrives or the server ends the stream
    assert late is not None, "the stream ended before the later event arrived"
    assert late["event"] == "log" and late["data"]["late"] is True


def test_garbage_last_event_id_replays_from_the_start(http: httpx.Client, r: redis.Redis) -> None:
    token, _ = make_token(r, ["api"], "submit,read,operate")
    http.post(
        "/v1/queues/api/jobs",
        json={"task": "echo", "id": "e1", "payload": 1, "delay": 3600},
        headers=auth(token),
    )
    assert http.post("/v1/jobs/e1/cancel", headers=auth(token)).json()["state"] == "cancelled"
    bad_ids: list[str | bytes] = ["x" * 5000, "1.2.3", "-1.ready.0.", "9.bogus.0.x", b"\xe9\xff"]
    for bad in bad_ids:
        headers: dict[str, str | bytes] = {**auth(token), "Last-Event-ID": bad}
        with http.stream("GET", "/v1/jobs/e1/events", headers=headers) as s:
            events = list(sse(s))
        assert [e["event"] for e in events] == ["snapshot", "result"], bad


# ---- validation and idempotency -------------------------------------------------------


def test_invalid_payload_is_422_with_the_pydantic_errors_and_writes_nothing(
    http: httpx.Client, r: redis.Redis
) -> None:
    token, _ = make_token(r, ["api"], "submit")
    before = herder_keys(r)
    resp = http.post(
        "/v1/queues/api/jobs", json={"task": "steps", "payload": {"steps": 0}}, headers=auth(token)
    )
    assert resp.status_code == 422
    (err,) = resp.json()["detail"]
    assert err["loc"] == ["body", "steps", "payload", "steps"] and err["type"] == "greater_than_equal"
    # a batch with one bad job writes none of them
    batch = {"jobs": [{"task": "echo", "payload": 1}, {"task": "sleep", "payload": {"seconds": -1, "x": 1}}]}
    resp = http.post("/v1/queues/api/jobs", json=batch, headers=auth(token))
    assert resp.status_code == 422
    locs = [e["loc"] for e in resp.json()["detail"]]
    assert ["body", "jobs", 1, "sleep", "payload", "seconds"] in locs
    assert ["body", "jobs", 1, "sleep", "payload", "x"] in locs
    for body, needle in [
        ({"task": "nope"}, "does not match any of the expected tags"),
        ({"task": "echo", "priority": 5000}, "less than or equal"),
        ({"task": "echo", "surprise": 1}, "Extra inputs"),
        ({"task": "echo", "id": "bad id with spaces"}, "job id must match"),
        ({"task": "echo", "delay": 5, "at": 2_000_000_000.0}, "either delay or at"),
        ({"task": "echo", "at": "2030-01-01T00:00:00"}, "timezone"),
        ({"jobs": [{"task": "echo", "id": "same"}, {"task": "echo", "id": "same"}]}, "duplicate job ids"),
        ({"jobs": []}, "at least one"),
        ({"jobs": [], "extra": 1}, "nothing else"),
        ([1, 2], "valid dictionary"),
    ]:
        resp = http.post("/v1/queues/api/jobs", json=body, headers=auth(token))
        assert resp.status_code == 422, (body, resp.text)
        assert needle in json.dumps(resp.json()["detail"]), (body, resp.text)
    resp = http.post("/v1/queues/api/jobs", content=b"{not json", headers=auth(token))
    assert resp.status_code == 422 and resp.json()["detail"][0]["type"] == "json_invalid"
    assert herder_keys(r) == before


def test_resubmitting_the_same_id_is_idempotent(http: httpx.Client, r: redis.Redis) -> None:
    token, _ = make_token(r, ["api"], "submit,read")
    job = {"task": "echo", "id": "order-42", "payload": {"a": 1}, "delay": 3600}
    first = http.post("/v1/queues/api/jobs", json=job, headers=auth(token))
    again = http.post("/v1/queues/api/jobs", json=job, headers=auth(token))
    other = http.post("/v1/queues/api/jobs", json={**job, "payload": {"a": 2}}, headers=auth(token))
    assert other.status_code == 409 and "another task or payload" in other.json()["detail"]  # issue 10
    assert first.status_code == 201 and first.json()["created"] is True
    assert again.status_code == 200 and again.json() == {
        "id": "order-42",
        "state": "scheduled",
        "created": False,
    }
    assert http.get("/v1/jobs/order-42", headers=auth(token)).json()["payload"] == {"a": 1}
    batch = http.post(
        "/v1/queues/api/jobs", json={"jobs": [job, {"task": "echo", "id": "order-43"}]}, headers=auth(token)
    )
    assert batch.status_code == 201
    assert [(j["id"], j["created"]) for j in batch.json()["jobs"]] == [
        ("order-42", False),
        ("order-43", True),
    ]


# ---- auth -----------------------------------------------------------------------------


def test_auth_failures(http: httpx.Client, r: redis.Redis) -> None:
    submit_a, rec = make_token(r, ["a"], "submit")
    read_a, _ = make_token(r, ["a"], "read")
    ops_b, _ = make_token(r, ["b"], "read,operate")
    job = {"task": "echo", "id": "j1", "delay": 3600}
    # missing, malformed, wrong secret: 401 with a challenge
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer"}, auth("hdr_nope")):
        resp = http.post("/v1/queues/a/jobs", json=job, headers=headers)
        assert resp.status_code == 401, headers
        assert resp.headers["www-authenticate"].startswith("Bearer")
    secret = submit_a.split("_", 2)[2]
    forged = submit_a[: -len(secret)] + ("A" * 43 if secret != "A" * 43 else "B" * 43)
    assert http.post("/v1/queues/a/jobs", json=job, headers=auth(forged)).status_code == 401
    # wrong queue, wrong verb: 403, and nothing written
    resp = http.post("/v1/queues/b/jobs", json=job, headers=auth(submit_a))
    assert resp.status_code == 403 and "may not submit on queue 'b'" in resp.json()["detail"]
    assert http.post("/v1/queues/a/jobs", json=job, headers=auth(read_a)).status_code == 403
    assert herder_keys(r) == set()
    assert http.post("/v1/queues/a/jobs", json=job, headers=auth(submit_a)).status_code == 201
    assert http.get("/v1/queues/a", headers=auth(submit_a)).status_code == 403
    assert http.get("/v1/jobs/j1", headers=auth(read_a)).status_code == 200
    # a job in a queue the token cannot see is missing, not forbidden (no probing across tenants)
    assert http.get("/v1/jobs/j1", headers=auth(ops_b)).status_code == 404
    assert http.post("/v1/jobs/j1/cancel", headers=auth(ops_b)).status_code == 404
    # visible but not operable: 403
    assert http.post("/v1/jobs/j1/cancel", headers=auth(read_a)).status_code == 403
    assert http.get("/v1/queues", headers=auth(read_a)).json() == ["a"]
    assert http.get("/v1/queues", headers=auth(ops_b)).json() == []
    # revoked within the token cache's second; a corrupt record grants nothing
    r.hdel(api_tokens_key("herder"), rec.id)
    until_status(lambda: http.post("/v1/queues/a/jobs", json=job, headers=auth(submit_a)), 401)
    r.hset(api_tokens_key("herder"), rec.id, '{"id": "' + rec.id + '", "queues": ["*"]')
    assert http.post("/v1/queues/a/jobs", json=job, headers=auth(submit_a)).status_code == 401


def test_token_file_store_and_a_corrupt_file_fails_closed(settings: HerderSettings, tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    token, record = new_token(["api"], [Verb.read])
    append_token_file(path, record)
    with (
        ApiServer(settings, TASKS, store=FileTokenStore(path)) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        assert http.get("/v1/queues/api", headers=auth(token)).status_code == 200
        path.write_text("{broken")  # e.g. a bad Secret update
        os.utime(path, (time.time() + 5, time.time() + 5))  # a new mtime even on coarse clocks
        until_status(lambda: http.get("/v1/queues/api", headers=auth(token)), 503)  # after the 1 s cache
        resp = http.get("/v1/queues/api", headers=auth(token))
        assert resp.status_code == 503 and resp.json() == {"detail": "token store unavailable"}


def test_tokens_are_stored_hashed(r: redis.Redis) -> None:
    token, rec = make_token(r, ["a"], "read")
    stored = r.hget(api_tokens_key("herder"), rec.id)
    assert stored is not None and token.split("_", 2)[2] not in stored


def test_odd_names_are_rejected_cleanly(http: httpx.Client, r: redis.Redis) -> None:
    token, _ = make_token(r, ["*"], "submit,read")
    assert (
        http.post(f"/v1/queues/{'q' * 500}/jobs", json={"task": "echo"}, headers=auth(token)).status_code
        == 422
    )
    assert http.post("/v1/queues/%7Bx%7D/jobs", json={"task": "echo"}, headers=auth(token)).status_code == 422
    assert http.get(f"/v1/jobs/{'j' * 500}", headers=auth(token)).status_code == 422
    assert http.get("/v1/queues/a%20b", headers=auth(token)).status_code == 422
    assert herder_keys(r) == set()


# ---- limits ---------------------------------------------------------------------------


def test_request_size_is_capped(settings: HerderSettings, r: redis.Redis) -> None:
    token, _ = make_token(r, ["api"], "submit")
    with (
        ApiServer(settings, TASKS, ApiLimits(max_body_bytes=10_000)) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        big = {"task": "echo", "payload": "x" * 20_000}
        resp = http.post("/v1/queues/api/jobs", json=big, headers=auth(token))
        assert resp.status_code == 413
        # no Content-Length (chunked): counted while streaming
        chunks = iter([b'{"task": "echo", "payload": "', b"x" * 8000, b"x" * 8000, b'"}'])
        resp = http.post("/v1/queues/api/jobs", content=chunks, headers=auth(token))
        assert resp.status_code == 413
        assert http.post("/v1/queues/api/jobs", json={"task": "echo"}, headers=auth(token)).status_code == 201
    assert len([k for k in herder_keys(r) if ":job:" in k]) == 1


def test_rate_limit_per_token(settings: HerderSettings, r: redis.Redis) -> None:
    one, _ = make_token(r, ["api"], "read")
    other, _ = make_token(r, ["api"], "read")
    with (
        ApiServer(settings, TASKS, ApiLimits(rate=0.01, burst=3)) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        codes = [http.get("/v1/queues", headers=auth(one)).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = http.get("/v1/queues", headers=auth(one))
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert http.get("/v1/queues", headers=auth(other)).status_code == 200
        # bad tokens never spend a real token's budget
        wrong = other[:-1] + ("B" if other.endswith("A") else "A")
        assert http.get("/v1/queues", headers=auth(wrong)).status_code == 401


# ---- operations and status ------------------------------------------------------------


def test_cancel_retry_remove_and_status(http: httpx.Client, r: redis.Redis) -> None:
    token, _ = make_token(r, ["ops"], "submit,read,operate")
    http.post("/v1/queues/ops/jobs", json={"task": "echo", "id": "k1", "delay": 3600}, headers=auth(token))
    st = http.get("/v1/queues/ops", headers=auth(token)).json()
    assert st["scheduled"] == 1 and st["queue"] == "ops"
    assert http.post("/v1/jobs/k1/cancel", headers=auth(token)).json()["state"] == "cancelled"
    assert http.post("/v1/jobs/k1/cancel", headers=auth(token)).status_code == 409
    assert http.post("/v1/jobs/k1/retry", headers=auth(token)).json()["state"] == "ready"
    assert http.delete("/v1/jobs/k1", headers=auth(token)).json()["state"] == "removed"
    assert http.get("/v1/jobs/k1", headers=auth(token)).status_code == 404
    assert http.post("/v1/jobs/k1/retry", headers=auth(token)).status_code == 404


def test_host_and_origin_checks(settings: HerderSettings, r: redis.Redis) -> None:
    token, _ = make_token(r, ["api"], "submit,read")
    with (
        ApiServer(settings, TASKS, allowed_hosts=frozenset({"127.0.0.1"})) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        assert http.get("/v1/queues", headers={**auth(token), "Host": "evil.example"}).status_code == 421
        job = {"task": "echo"}
        cross = {**auth(token), "Origin": "https://evil.example"}
        assert http.post("/v1/queues/api/jobs", json=job, headers=cross).status_code == 403
        site = {**auth(token), "Sec-Fetch-Site": "cross-site"}
        assert http.post("/v1/queues/api/jobs", json=job, headers=site).status_code == 403
        assert herder_keys(r) == set()
        assert http.post("/v1/queues/api/jobs", json=job, headers=auth(token)).status_code == 201


def test_corrupt_job_data_gets_a_clear_error(http: httpx.Client, r: redis.Redis) -> None:
    token, _ = make_token(r, ["api"], "submit,read,operate")
    http.post("/v1/queues/api/jobs", json={"task": "echo", "id": "c1", "delay": 3600}, headers=auth(token))
    assert http.post("/v1/jobs/c1/cancel", headers=auth(token)).status_code == 200
    r.hset("herder:{api}:job:c1", "payload", "{not json")  # someone (or something) broke it
    resp = http.get("/v1/jobs/c1", headers=auth(token))
    assert (
        resp.status_code == 500 and "corrupt" in resp.json()["detail"] and "payload" in resp.json()["detail"]
    )
    with http.stream("GET", "/v1/jobs/c1/events", headers=auth(token)) as s:
        events = list(sse(s))
    assert [e["event"] for e in events] == ["snapshot", "error"] and "corrupt" in events[-1]["data"]["detail"]


def test_probes_need_no_token_and_reveal_nothing(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").json() == {"status": "ok"}
    resp = http.get("/v1/queues")
    assert resp.status_code == 401
    assert resp.headers["x-content-type-options"] == "nosniff"


# ---- durability -----------------------------------------------------------------------


def test_fsync_durability_is_refused_without_aof_and_nothing_is_written(
    http: httpx.Client, r: redis.Redis
) -> None:
    token, _ = make_token(r, ["api"], "submit")
    resp = http.post("/v1/queues/api/jobs?durability=fsync", json={"task": "echo"}, headers=auth(token))
    assert resp.status_code == 422 and "appendonly" in resp.json()["detail"][0]["msg"]
    assert herder_keys(r) == set()


def test_fsync_durability_with_aof_and_replica_waits(tmp_path: Path) -> None:
    with RedisProc(tmp_path / "p", appendonly=True, appendfsync="always") as primary:
        settings = HerderSettings(redis_url=primary.url)
        pr = redis.Redis(port=primary.port, decode_responses=True)
        token, _ = make_token(pr, ["api"], "submit")
        limits = ApiLimits(durable_timeout_ms=1000)
        with (
            ApiServer(settings, TASKS, limits) as server,
            httpx.Client(base_url=server.url, timeout=30) as http,
        ):
            resp = http.post(
                "/v1/queues/api/jobs?durability=fsync", json={"task": "echo"}, headers=auth(token)
            )
            assert resp.status_code == 201, resp.text
            assert resp.json()["durability"] == {"fsync": True, "replicas": 0}
            # no replica: the job is written but the answer says durability was not confirmed
            resp = http.post(
                "/v1/queues/api/jobs?replicas=1", json={"task": "echo", "id": "w1"}, headers=auth(token)
            )
            assert resp.status_code == 504 and resp.json()["detail"]["jobs"][0]["id"] == "w1"
            with RedisProc(tmp_path / "r", extra=["--replicaof", "127.0.0.1", str(primary.port)]) as replica:
                rr = redis.Redis(port=replica.port, decode_responses=True)
                deadline = time.monotonic() + 20
                while rr.info("replication").get("master_link_status") != "up":
                    assert time.monotonic() < deadline, "replica never synced"
                    time.sleep(0.05)
                ok = http.post(
                    "/v1/queues/api/jobs?durability=fsync&replicas=1",
                    json={"task": "echo", "id": "w2"},
                    headers=auth(token),
                )
                assert ok.status_code == 201, ok.text
                assert ok.json()["durability"] == {"fsync": True, "replicas": 1}
                rr.close()
        pr.close()
