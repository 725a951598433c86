"""The resumable job-event reader against a real Redis and a real worker."""

from __future__ import annotations

import json

import pytest

from helpers import running_worker, wait_state
from herder.client import HerderClient
from herder.jobevents import JobEventReader, bounded_json, first_index, next_number, parse_cursor
from herder.settings import HerderSettings


@pytest.fixture
def settings(single_or_cluster: HerderSettings) -> HerderSettings:
    """Each feed test runs on one redis-server and on a Redis Cluster (the feed is one
    read-only script per poll, not MULTI, which redis-py's cluster client refuses)."""
    return single_or_cluster


def test_parse_cursor_tolerates_garbage() -> None:
    assert parse_cursor(None) == 0 and parse_cursor("") == 0
    assert parse_cursor("12") == 12
    assert parse_cursor("-3") == 0 and parse_cursor("abc") == 0 and parse_cursor("9" * 40) == 0


def test_first_index_trusts_only_a_sane_number() -> None:
    assert first_index(None) == 0 and first_index('{"type":"x"}') == 0
    assert first_index('{"_n": 7}') == 7
    for bad in ('{"_n": -1}', '{"_n": true}', '{"_n": "7"}', '{"_n": 1e300}', '["_n"]', '{"_n"'):
        assert first_index(bad) == 0, bad


def test_bounded_json_caps_and_flags_corruption() -> None:
    assert bounded_json('{"a":1}') == {"a": 1}
    assert bounded_json("{oops")["_corrupt"] is True
    big = bounded_json(json.dumps("x" * 100_000), limit=1000)
    assert big["_truncated"] is True and big["bytes"] > 100_000 and len(big["preview"]) <= 1000


async def test_feed_follows_a_job_and_resumes_from_a_cursor(
    client: HerderClient, settings: HerderSettings
) -> None:
    keys = client.keys("default")
    job = await client.enqueue("default", "echo", {"x": 1}, id="j1")
    log = keys.log(job.id)
    await client.redis.rpush(log, *[json.dumps({"type": "herder", "n": i}) for i in range(3)])
    reader = JobEventReader(client.redis, keys, job.id)
    first = await reader.poll()
    assert first[0].kind == "snapshot" and first[0].data["state"] == "ready"
    assert [e.data["n"] for e in first if e.kind == "log"] == [0, 1, 2]
    assert [e.cursor for e in first if e.kind == "log"] == [1, 2, 3]
    assert await reader.poll() == []  # nothing changed: nothing sent twice
    # a reconnect with Last-Event-ID 2 gets a fresh snapshot and only the third event
    again = await JobEventReader(client.redis, keys, job.id, cursor=2).poll()
    assert [e.kind for e in again] == ["snapshot", "log"] and again[1].data["n"] == 2
    async with running_worker(settings, "default"):
        await wait_state(client, job.id, "succeeded")
    rest = [e async for e in reader.follow(interval=0.01)]
    kinds = [e.kind for e in rest]
    assert "state" in kinds and kinds[-1] == "end" and rest[-1].data["state"] == "succeeded"
    assert reader.done


async def test_trimmed_log_reports_a_gap_instead_of_skipping_silently(client: HerderClient) -> None:
    keys = client.keys("default")
    job = await client.enqueue("default", "echo", {}, id="j2")
    # 10 appended in all (numbered `_n`), the first 6 trimmed away as the worker's LTRIM does
    await client.redis.rpush(keys.log(job.id), *[json.dumps({"n": i, "_n": i}) for i in range(6, 10)])
    events = await JobEventReader(client.redis, keys, job.id, cursor=3).poll()
    logs = [e for e in events if e.kind == "log"]
    assert logs[0].data == {"type": "herder", "subtype": "log_gap", "missed": 3}
    assert [e.data["n"] for e in logs[1:]] == [6, 7, 8, 9] and logs[-1].cursor == 10


async def test_removed_job_ends_the_feed(client: HerderClient) -> None:
    keys = client.keys("default")
    job = await client.enqueue("default", "echo", {}, id="j3")
    reader = JobEventReader(client.redis, keys, job.id)
    await reader.poll()
    await client.remove(job.id, "default")
    events = await reader.poll()
    assert [e.kind for e in events] == ["gone"] and reader.done


def test_next_number_continues_the_tail_or_counts_the_list() -> None:
    assert next_number(None, 0) == 0
    assert next_number('{"type":"x","_n":41}', 7) == 42
    assert next_number('{"type":"x"}', 7) == 7  # an unnumbered (older) log: its length
    assert next_number('{"_n": -5}', 3) == 3 and next_number("{bad", 3) == 3


async def test_worker_numbers_log_events_across_trims(client: HerderClient) -> None:
    """The worker's event-log writer numbers events; after the log is trimmed from the left a
    reader still holds absolute positions: a gap is reported, then the kept events follow."""
    from herder.worker.progress import LOG_EVENTS_KEPT, Reporter

    keys = client.keys("default")
    job = await client.enqueue("default", "echo", {}, id="j4")
    reporter = Reporter(client.redis, client.scripts, keys, "w1")
    reader = JobEventReader(client.redis, keys, job.id)
    await reporter.log(job.id, [{"type": "herder", "i": i} for i in range(10)])
    seen = [e for e in await reader.poll() if e.kind == "log"]
    assert [e.data["_n"] for e in seen] == list(range(10)) and reader.cursor == 10
    for start in range(10, LOG_EVENTS_KEPT + 500, 500):
        await reporter.log(job.id, [{"type": "herder", "i": i} for i in range(start, start + 500)])
    total = 10 + len(range(10, LOG_EVENTS_KEPT + 500, 500)) * 500
    assert await client.redis.llen(keys.log(job.id)) == LOG_EVENTS_KEPT
    got = []
    while reader.cursor < total:
        got += [e for e in await reader.poll() if e.kind == "log"]
    assert got[0].data == {"type": "herder", "subtype": "log_gap", "missed": total - LOG_EVENTS_KEPT - 10}
    assert [e.data["i"] for e in got[1:]] == list(range(total - LOG_EVENTS_KEPT, total))
    assert got[-1].cursor == total
