"""The enqueue fast lane (herder.fastlane) against a real redis-server: used for a plain URL only,
errors as before, survives a restart and SCRIPT FLUSH, pipelines many callers, a cancelled
caller does not shift the replies of the others, ACL users authenticate."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError

from herder import fastlane
from herder.acl import acl_rule, aclfile_line
from herder.client import HerderClient
from herder.errors import IdConflict, InvalidInput
from herder.keys import QueueKeys
from herder.settings import HerderSettings
from redis_proc import RedisProc


async def lane_clients(client: HerderClient) -> list[str]:
    listing = await client.redis.execute_command("CLIENT", "LIST")
    text = listing if isinstance(listing, str) else "\n".join(str(x) for x in listing)
    return [line for line in text.splitlines() if f"name={fastlane.CLIENT_NAME} " in line]


async def test_a_plain_url_enqueues_over_the_fast_lane(client: HerderClient) -> None:
    sent: list[int] = []
    old, fastlane.on_send = fastlane.on_send, sent.append
    try:
        r = await client.enqueue("default", "echo", {"a": 1})
    finally:
        fastlane.on_send = old
    assert sent  # the handshake and the EVALSHA went through the lane
    assert len(await lane_clients(client)) == 1
    job = await client.get_job(r.id, "default")
    assert job.state == "ready" and job.payload == {"a": 1}
    await client.close()
    assert client._fast is not None and client._fast._proto is None


async def test_script_refusals_surface_as_before(client: HerderClient) -> None:
    await client.enqueue("default", "echo", {"a": 1}, id="j1")  # queue known: next calls skip the precheck
    with pytest.raises(IdConflict, match="exists with another task or payload"):
        await client.enqueue("default", "echo", {"a": 2}, id="j1")
    with pytest.raises(InvalidInput, match="unknown parent job id nope"):
        await client.enqueue("default", "echo", {}, after=["nope"])
    again = await client.enqueue("default", "echo", {"a": 1}, id="j1")
    assert again.id == "j1" and not again.created


async def test_script_flush_and_a_redis_restart(client: HerderClient, redis_server: RedisProc) -> None:
    await client.enqueue("default", "echo", {"n": 0})
    await client.redis.script_flush()
    assert (await client.enqueue("default", "echo", {"n": 1})).created
    redis_server.stop()
    with pytest.raises(RedisConnectionError):
        await client.enqueue("default", "echo", {"n": 2})
    redis_server.start()  # same port, empty (no persistence): no script, no queue keys
    r = await client.enqueue("default", "echo", {"n": 3})
    assert (await client.get_job(r.id, "default")).payload == {"n": 3}


async def test_many_concurrent_enqueues_share_one_connection(client: HerderClient) -> None:
    await client.enqueue("default", "echo", {"warm": True})
    results = await asyncio.gather(*(client.enqueue("default", "echo", {"i": i}) for i in range(500)))
    assert len({r.id for r in results}) == 500 and all(r.created for r in results)
    status = await client.status("default")
    assert status.ready == 501
    assert len(await lane_clients(client)) == 1


async def test_a_cancelled_caller_does_not_shift_later_replies(client: HerderClient) -> None:
    await client.enqueue("default", "echo", {"warm": True})
    tasks = [asyncio.create_task(client.enqueue("default", "echo", {"i": i}, id=f"c{i}")) for i in range(50)]
    await asyncio.sleep(0)  # every task has written its request
    for t in tasks[::2]:
        t.cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    for i, r in enumerate(done):
        if not isinstance(r, BaseException):
            assert r.id == f"c{i}"  # each caller got its own reply
    later = await asyncio.gather(
        *(client.enqueue("default", "echo", {"x": i}, id=f"l{i}") for i in range(20))
    )
    assert [r.id for r in later] == [f"l{i}" for i in range(20)]


async def test_a_silent_server_times_out_every_waiting_request_and_the_lane_recovers(
    client: HerderClient, redis_server: RedisProc
) -> None:
    """One deadline timer per connection bounds the wait: a server that stops answering
    (SIGSTOP) fails every request waiting on the lane with TimeoutError once the oldest is
    `timeout` old (a late reply must never be taken for a later request's); once the server
    answers again, the next enqueue opens a new connection and succeeds."""
    import os
    import signal
    import time

    from redis.exceptions import TimeoutError as RedisTimeoutError

    lane = client._fast
    assert lane is not None
    lane.timeout = 0.5  # before the lane's connection opens: it takes the timeout then
    await client.enqueue("default", "echo", {"n": 0})
    assert redis_server.proc is not None
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        results = await asyncio.wait_for(
            asyncio.gather(
                *(client.enqueue("default", "echo", {"n": i}) for i in range(3)), return_exceptions=True
            ),
            10,
        )
        waited = time.monotonic() - t0
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    assert all(isinstance(r, RedisTimeoutError) for r in results), results
    assert waited >= 0.5
    # (the three timed-out requests may still run once the server resumes: a timeout says
    # "unknown", as with redis-py; the caller retries under the same id to be sure)
    last = await client.enqueue("default", "echo", {"n": 9})
    assert last.created and (await client.get_job(last.id, "default")).state == "ready"


async def test_acl_user_and_a_wrong_password(tmp_path: Path) -> None:
    password = "pw-for-tests"
    sha = hashlib.sha256(password.encode()).hexdigest()
    lines = ["user default off", f"user admin on #{sha} ~* &* +@all"]
    lines.append(aclfile_line(acl_rule("producer", ["q1"], user="producer"), sha))
    (tmp_path / "users.acl").write_text("\n".join(lines) + "\n")
    proc = RedisProc(tmp_path / "redis", extra=["--aclfile", str(tmp_path / "users.acl")]).start()
    try:
        ok = HerderSettings(redis_url=proc.url, redis_username="producer", redis_password=password)
        async with HerderClient(ok) as c:
            first = await c.enqueue("q1", "echo", {"a": 1})
            second = await c.enqueue("q1", "echo", {"a": 2})
            assert first.created and second.created
        # the queue is known to this client, so the wrong password meets the fast lane's AUTH
        bad = HerderSettings(redis_url=proc.url, redis_username="producer", redis_password="wrong")
        async with HerderClient(bad) as c:
            c._known_queues.add("q1")
            with pytest.raises(AuthenticationError, match="invalid username-password pair"):
                await c.enqueue("q1", "echo", {"a": 3})
        admin = Redis.from_url(proc.url, username="admin", password=password, decode_responses=True)
        try:
            keys = QueueKeys("herder", "q1")
            assert await admin.exists(keys.job(first.id), keys.job(second.id)) == 2
        finally:
            await admin.aclose()
    finally:
        proc.stop()


@pytest.mark.parametrize(
    "overrides",
    [
        {"redis_tls": True},
        {"redis_url": "rediss://127.0.0.1:1/0"},
        {"redis_sentinels": "127.0.0.1:1"},
        {"redis_cluster": True},
        {"redis_url": "unix:///tmp/nowhere.sock"},
        {"redis_url": "redis://127.0.0.1:1/0?socket_timeout=3"},
    ],
)
def test_other_setups_keep_the_normal_path(overrides: dict[str, object]) -> None:
    settings = HerderSettings(**{"redis_url": "redis://127.0.0.1:1/0", **overrides})  # type: ignore[arg-type]
    assert fastlane.FastLane.for_settings(settings) is None
    client = HerderClient(settings)
    assert client._fast is None


def test_an_external_client_keeps_the_normal_path() -> None:
    settings = HerderSettings(redis_url="redis://127.0.0.1:1/2", redis_password="pw")
    lane = fastlane.FastLane.for_settings(settings)
    assert lane is not None and (lane.db, lane.password) == (2, "pw")
    assert HerderClient(settings, redis=Redis.from_url(settings.redis_url))._fast is None


def test_under_uvloop(settings: HerderSettings) -> None:
    """The API server runs on uvloop, whose transports are not asyncio.Transport subclasses."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> list[str]:
        async with HerderClient(settings) as c:
            await c.enqueue("default", "echo", {})
            done = await asyncio.gather(
                *(c.enqueue("default", "echo", {"i": i}, id=f"u{i}") for i in range(20))
            )
            assert c._fast is not None and c._fast._proto is not None
            return [r.id for r in done]

    assert uvloop.run(main()) == [f"u{i}" for i in range(20)]
