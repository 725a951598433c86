"""Hardening at the edges (issue 10): hostile names, odd values and bounded input, each rejected
with a clear error before anything is written to Redis."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from herder.client import HerderClient, JobRequest, check_queue
from herder.errors import InvalidInput
from herder.tasks import JobContext, TaskSet


async def snapshot(client: HerderClient) -> dict[str, Any]:
    """Every key's value. Hashes by content: DUMP lists a hashtable-encoded hash (a job with a
    long field) in bucket order, which a mere read moves on (an incremental rehash step)."""
    out: dict[str, Any] = {}
    for k in sorted(await client.redis.keys("*")):
        if await client.redis.type(k) == "hash":
            out[k] = sorted((await client.redis.hgetall(k)).items())
        else:
            out[k] = await client.redis.dump(k)
    return out


async def _noop(ctx: JobContext, p: Any) -> None:
    return None


# ---- full-match names and ids ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["q\n", "default\n", "a" * 128 + "\n"])
def test_queue_name_with_trailing_newline_rejected(name: str) -> None:
    with pytest.raises(InvalidInput):
        check_queue(name)


@pytest.mark.parametrize("field", ["id", "after"])
def test_job_id_with_trailing_newline_rejected(field: str) -> None:
    value: Any = "job-1\n" if field == "id" else ["job-1\n"]
    with pytest.raises(ValueError, match="id"):
        JobRequest(task="echo", **{field: value})


async def test_reserved_id_prefix_rejected_and_nothing_written(client: HerderClient) -> None:
    before = await snapshot(client)
    for job_id in ("herder-cron-tick-1700000000", "HERDER-x"):
        with pytest.raises(InvalidInput, match="reserved"):
            await client.enqueue("default", "echo", id=job_id)
    assert await snapshot(client) == before


# ---- values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"payload": {"x": math.nan}},
        {"payload": [math.inf]},
        {"at": 1e308},
        {"at": math.nan},
        {"at": -1.0},
        {"at": 1_700_000_000_000.0},  # milliseconds given as seconds
        {"delay": math.nan},
        {"timeout": math.inf},
        {"labels": {f"k{i}": "v" for i in range(33)}},
        {"labels": {"k": "v" * 10_000_000}},
        {"labels": {"k" * 1000: "v"}},
        {"labels": {"": "v"}},
    ],
    ids=lambda o: next(iter(o)) + ":" + repr(next(iter(o.values())))[:30],
)
async def test_bad_values_rejected_cleanly_and_nothing_written(
    client: HerderClient, options: dict[str, Any]
) -> None:
    before = await snapshot(client)
    with pytest.raises(InvalidInput):
        await client.enqueue("default", "echo", **options)
    assert await snapshot(client) == before


async def test_deeply_nested_payload_is_invalid_input(client: HerderClient) -> None:
    deep: Any = []
    for _ in range(50_000):
        deep = [deep]
    before = await snapshot(client)
    with pytest.raises(InvalidInput, match="nested too deeply"):
        await client.enqueue("default", "echo", payload=deep)
    assert await snapshot(client) == before


async def test_at_within_bounds_still_accepted(client: HerderClient) -> None:
    r = await client.enqueue("default", "echo", at=2_000_000_000.0)
    assert (await client.get_job(r.id)).state == "scheduled"


# ---- TaskSet declaration ------------------------------------------------------------------


@pytest.mark.parametrize("expr", ["bogus", "61 * * * *", "0 0 30 2 *", ""])
def test_taskset_rejects_bad_cron_at_declaration(expr: str) -> None:
    ts = TaskSet()
    with pytest.raises(InvalidInput, match="cron"):
        ts.task("tick", cron=expr)(_noop)
    assert "tick" not in ts


@pytest.mark.parametrize("name", ["my tick", "tick\n", "1st", "x" * 200, "-dash", "a/b", "ü"])
def test_taskset_rejects_bad_task_names(name: str) -> None:
    ts = TaskSet()
    with pytest.raises(InvalidInput, match="task name"):
        ts.task(name, cron="* * * * *")(_noop)
    assert ts.names() == []


def test_taskset_rejects_cron_payload_its_model_refuses() -> None:
    from pydantic import BaseModel

    class P(BaseModel):
        n: int

    ts = TaskSet()
    with pytest.raises(InvalidInput, match="invalid payload"):
        ts.task("tick", payload=P, cron="* * * * *", cron_payload={"n": "not a number"})(_noop)
    ts.task("tock", payload=P, cron="* * * * *", cron_payload={"n": 1})(_noop)
    assert ts.names() == ["tock"]


def test_taskset_rejects_bad_capability() -> None:
    ts = TaskSet()
    with pytest.raises(InvalidInput, match="capability"):
        ts.task("t", capabilities=("gpu\n",))(_noop)


# ---- the queue index and the exporter ------------------------------------------------------

BAD_INDEX_MEMBERS: list[bytes | str] = ["bad name", "q\n", "x" * 300, "", b"\xff\xfe", "{q}"]


def _scrape(collector: Any) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    reg = CollectorRegistry()
    reg.register(collector)
    out = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


async def test_invalid_index_members_are_skipped_not_fatal(settings: Any, client: HerderClient) -> None:
    import asyncio

    from herder.queue_metrics import QueueCollector

    await client.enqueue("alpha", "echo")
    await client.enqueue("beta", "echo")
    await client.redis.sadd("herder:queues", *BAD_INDEX_MEMBERS)
    assert await client.queues() == ["alpha", "beta"]
    with pytest.raises(Exception, match="no job"):  # find_queue still works over the rest
        await client.get_job("nope")

    collector = QueueCollector(settings)
    try:
        s = await asyncio.to_thread(_scrape, collector)
    finally:
        collector.close()
    assert s[("herder_queue_redis_up", frozenset())] == 1
    queues = {dict(labels).get("queue") for name, labels in s if name == "herder_queue_jobs"}
    assert queues == {"alpha", "beta"}


async def test_exporter_bounds_labels_connections_and_queue_count(
    settings: Any, client: HerderClient
) -> None:
    import asyncio

    from herder.queue_metrics import EVENTS, QueueCollector

    await client.enqueue("alpha", "echo")
    # Producer-writable counters: unknown fields and non-numbers never become series or errors.
    await client.redis.hset("herder:{alpha}:stats", mapping={f"evil{i}": 1 for i in range(500)})
    await client.redis.hset("herder:{alpha}:stats", "succeeded", "not-a-number")
    # A queue whose worker hash is corrupt is skipped; the others are still exported.
    now_ms = int((await client.redis.time())[0]) * 1000
    await client.redis.hset("herder:{broken}:worker:w", mapping={"id": "w", "jobs": "{not json"})
    await client.redis.zadd("herder:{broken}:workers", {"w": now_ms + 60_000})
    await client.redis.sadd("herder:queues", "broken", *(f"q{i:05d}" for i in range(3000)))

    capped = QueueCollector(settings, concurrency=4, max_queues=1000)
    try:
        s = await asyncio.to_thread(_scrape, capped)
    finally:
        capped.close()
    assert s[("herder_queue_redis_up", frozenset())] == 1
    queues = {dict(labels)["queue"] for name, labels in s if name == "herder_queue_jobs"}
    assert 990 <= len(queues) <= 1000
    # The scrape held at most `concurrency` status reads (plus the index read) open at once.
    clients = await client.redis.client_list()
    assert len(clients) <= 4 + 2, len(clients)

    collector = QueueCollector(settings, ["alpha", "broken"])
    try:
        s = await asyncio.to_thread(_scrape, collector)
    finally:
        collector.close()
    assert s[("herder_queue_redis_up", frozenset())] == 1
    queues = {dict(labels)["queue"] for name, labels in s if name == "herder_queue_jobs"}
    assert queues == {"alpha"}
    events = {dict(labels)["event"] for name, labels in s if name == "herder_queue_events_total"}
    assert events == set(EVENTS)
    assert s[("herder_queue_events_total", frozenset({("queue", "alpha"), ("event", "enqueued")}))] == 1
    assert s[("herder_queue_events_total", frozenset({("queue", "alpha"), ("event", "succeeded")}))] == 0


# ---- corrupt data in Redis ----------------------------------------------------------------

CORRUPTIONS: list[dict[str, bytes | str]] = [
    {"payload": b"\xff\xfe not utf-8"},
    {"payload": "{not json"},
    {"errors": '{"not": "a list"}'},
    {"state": "exploded"},
    {"enqueued_at": "yesterday"},
    {"labels": "[" * 100_000},
]


@pytest.mark.parametrize(
    "bad", CORRUPTIONS, ids=lambda b: next(iter(b)) + ":" + repr(next(iter(b.values())))[:20]
)
async def test_corrupt_job_reads_as_one_clear_error(
    client: HerderClient, bad: dict[str, bytes | str]
) -> None:
    from herder.errors import CorruptData

    r = await client.enqueue("default", "echo")
    await client.redis.hset(f"herder:{{default}}:job:{r.id}", mapping=bad)
    with pytest.raises(CorruptData, match=f"job '{r.id}'"):
        await client.get_job(r.id)


async def test_dlq_listing_is_summaries_and_survives_a_corrupt_job(client: HerderClient) -> None:
    ids = [(await client.enqueue("default", "echo")).id for _ in range(3)]
    big = "x" * 2_000_000
    for n, i in enumerate(ids):
        k = f"herder:{{default}}:job:{i}"
        await client.redis.hset(k, mapping={"state": "dead", "result": f'"{big}"', "dead_reason": "boom"})
        await client.redis.zrem("herder:{default}:ready", i)
        await client.redis.zadd("herder:{default}:dead", {i: n})
    await client.redis.hset(f"herder:{{default}}:job:{ids[1]}", "errors", b"\xff")
    listed = await client.dlq_list("default")
    assert [j.id for j in listed] == ids
    assert all(j.result is None and j.payload is None for j in listed)
    assert listed[0].dead_reason == "boom" and listed[2].dead_reason == "boom"
    assert listed[1].dead_reason is not None and "not valid UTF-8" in listed[1].dead_reason


def test_cli_job_on_corrupt_hash_is_one_line(worker_env: dict[str, str], redis_server: Any) -> None:
    import subprocess
    import sys

    import redis

    r = redis.Redis(port=redis_server.port)
    r.sadd("herder:queues", "default")
    r.hset(
        "herder:{default}:job:j1", mapping={"id": "j1", "queue": "default", "task": "echo", "state": "ready"}
    )
    r.hset("herder:{default}:job:j1", "payload", b"\xff\xfe")
    r.close()
    p = subprocess.run(
        [sys.executable, "-m", "herder.cli", "job", "j1"],
        env=worker_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 1
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "not valid UTF-8" in p.stderr


# ---- size caps (pure) -----------------------------------------------------------------------


def test_caps_truncate_with_a_marker() -> None:
    import json

    from herder.limits import TRUNCATED_KEY, cap_text, encode_capped, encode_lenient

    assert cap_text("short", 100) == "short"
    capped = cap_text("x" * 10_000_000, 4096)
    assert len(capped) <= 4096 and "truncated: 10000000 characters" in capped
    assert encode_capped({"a": 1}, 1024) == '{"a":1}'
    big = json.loads(encode_capped("y" * 5_000_000, 1 << 20))
    assert big[TRUNCATED_KEY] is True and big["bytes"] == 5_000_002 and len(big["preview"]) == 1000
    with pytest.raises(ValueError):
        encode_capped(math.nan, 1024)
    assert json.loads(encode_lenient({"x": math.nan}, 1024)) == "{'x': nan}"
    assert len(encode_lenient(["z" * 100] * 1000, 2048)) < 2048


# ---- credentials in URLs --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://user:s3cret@h/1", "redis://user:***@h/1"),
        ("unix:///tmp/r.sock?password=s3cret&db=2", "unix:///tmp/r.sock?password=***&db=2"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("rediss://user@h", "rediss://user@h"),
    ],
)
def test_redis_url_password_is_redacted(url: str, shown: str) -> None:
    from herder.settings import redact_url, url_has_password

    assert redact_url(url) == shown
    assert url_has_password(url) == ("s3cret" in url)
    assert "s3cret" not in redact_url(url)


# ---- corrupt jobs in the worker -------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"payload": b'{"x": "\xff\xfe"}'},
        {"payload": b"\xff"},
        {"payload": "{not json"},
        {"attempts": "two"},
        {"attempts": "99999999999999999999"},
    ],
)
async def test_worker_dead_letters_a_corrupt_job_and_runs_its_batch_mates(
    settings: Any, client: HerderClient, bad: dict[str, bytes | str]
) -> None:
    from helpers import running_worker, wait_for, wait_state

    async def raw_state(job_id: str) -> list[Any]:  # get_job would (rightly) refuse the hash
        return list(
            await client.redis.hmget(f"herder:{{default}}:job:{job_id}", "state", "attempts", "dead_reason")
        )

    await client.pause("default")  # both jobs are claimed in one batch once resumed
    innocent = await client.enqueue("default", "echo", {"ok": 1})
    corrupt = await client.enqueue("default", "echo", {"ok": 2})
    await client.redis.hset(f"herder:{{default}}:job:{corrupt.id}", mapping=bad)
    async with running_worker(settings, concurrency=4) as w:
        await client.resume("default")
        dead = await wait_for(lambda: raw_state(corrupt.id), lambda r: r[0] in ("dead", "succeeded"))
        ok = await wait_state(client, innocent.id, "succeeded", "dead")
        later = await client.enqueue("default", "echo", {"ok": 3})
        assert (await wait_state(client, later.id, "succeeded", "dead")).state == "succeeded"
        assert not w.exit_code
    assert ok.state == "succeeded" and ok.attempts == 1
    field = next(iter(bad))
    assert dead[0] == "dead" and field in dead[2], dead
    if field == "payload":
        assert dead[1] == "1", dead  # claimed once, then refused by the worker


# ---- size caps in the worker ----------------------------------------------------------------

caps_app = TaskSet()


@caps_app.task(max_attempts=1)
async def big_result(ctx: JobContext, p: Any) -> str:
    return "r" * 5_000_000


@caps_app.task(max_attempts=1)
async def big_error(ctx: JobContext, p: Any) -> None:
    raise ValueError("e" * 10_000_000)


@caps_app.task(max_attempts=1)
async def chatty(ctx: JobContext, p: Any) -> str:
    await ctx.progress({"blob": "p" * 5_000_000})
    await ctx.log([{"n": i, "text": "l" * 50_000} for i in range(300)])
    return "done"


async def test_worker_caps_result_error_progress_and_log(settings: Any) -> None:
    import json

    from helpers import running_worker, wait_state
    from herder.limits import TRUNCATED_KEY

    capped = settings.model_copy(
        update={
            "max_result_bytes": 100_000,
            "max_error_chars": 1000,
            "max_traceback_chars": 2000,
            "max_progress_bytes": 10_000,
            "max_log_event_bytes": 1000,
            "max_log_events": 50,
        }
    )
    async with HerderClient(capped, caps_app) as c, running_worker(capped, tasks=caps_app):
        r = await c.enqueue("default", "big_result")
        e = await c.enqueue("default", "big_error")
        ch = await c.enqueue("default", "chatty")
        res = await wait_state(c, r.id, "succeeded", "dead")
        err = await wait_state(c, e.id, "dead", "succeeded")
        chat = await wait_state(c, ch.id, "succeeded", "dead")
        log = await c.job_log(ch.id)
        sizes = {f: await c.redis.hstrlen(f"herder:{{default}}:job:{r.id}", f) for f in ("result",)}
    assert res.state == "succeeded" and res.result[TRUNCATED_KEY] is True and res.result["bytes"] > 5_000_000
    assert sizes["result"] < 5000
    assert err.state == "dead" and len(err.errors[0].message) <= 1000 and "truncated" in err.errors[0].message
    assert len(err.errors[0].traceback) <= 2000
    assert err.dead_reason is not None and len(err.dead_reason) <= 1100  # + "out of attempts (1/1): "
    assert chat.state == "succeeded" and chat.progress is not None and chat.progress[TRUNCATED_KEY] is True
    assert len(log) == 50 and all(len(json.dumps(ev)) <= 1200 for ev in log)


async def test_unknown_task_names_fold_into_one_metric_label(settings: Any) -> None:
    from prometheus_client import REGISTRY

    from helpers import running_worker, wait_state

    ghosts = TaskSet()
    for i in range(30):
        ghosts.task(f"ghost{i}")(_noop)
    async with HerderClient(settings, ghosts) as c:
        ids = [(await c.enqueue("foldq", f"ghost{i}")).id for i in range(30)]
        async with running_worker(settings, "foldq", tasks=TaskSet()):
            for i in ids:
                await wait_state(c, i, "dead")
    labels = {
        s.labels["task"]
        for m in REGISTRY.collect()
        if m.name == "herder_jobs"
        for s in m.samples
        if s.labels.get("queue") == "foldq"
    }
    assert labels == {"<unknown>"}


# ---- cron tick ids cannot be squatted ---------------------------------------------------------


async def test_cron_ticks_cannot_be_predicted_or_squatted(settings: Any) -> None:
    import time

    from helpers import running_worker, wait_for
    from herder.cron import due_ticks

    ran: list[tuple[str, Any]] = []
    cron_app = TaskSet()

    @cron_app.task(cron="* * * * * *", cron_payload={"who": "herder"})
    async def tick(ctx: JobContext, p: Any) -> None:
        ran.append((ctx.job_id, p))

    async with HerderClient(settings, cron_app) as c:
        # An attacker pre-creates every id the old scheme would use for the next 30 s.
        now = time.time()
        for t in due_ticks("* * * * * *", now - 1, now + 30):
            await c.enqueue("default", "tick", {"who": "attacker"}, id=f"cron-tick-{int(t)}", at=t + 3600)
            with pytest.raises(InvalidInput, match="reserved"):
                await c.enqueue("default", "tick", {"who": "attacker"}, id=f"herder-cron-tick-{int(t)}")
        async with (
            running_worker(settings, tasks=cron_app, name="a"),
            running_worker(settings, tasks=cron_app, name="b"),
        ):
            await wait_for(lambda: asyncio.sleep(0, len(ran)), lambda n: n >= 3, timeout=15)
        secret = await c.redis.get("herder:{default}:cron-secret")
    assert secret and len(secret) == 64
    ids = [i for i, _ in ran]
    assert len(ids) == len(set(ids))  # two workers, each tick once
    assert all(p == {"who": "herder"} for _, p in ran)
    assert all(i.startswith("herder-cron-tick-") and len(i.rsplit("-", 1)[1]) == 20 for i in ids)


def test_cli_password_in_redis_url_is_warned_and_never_echoed(tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from herder.cli import app
    from redis_proc import RedisProc

    proc = RedisProc(tmp_path / "pw", extra=["--requirepass", "s3cret-pw"]).start()
    try:
        url = f"redis://:s3cret-pw@127.0.0.1:{proc.port}/0"
        ok = CliRunner().invoke(app, ["queues", "--redis-url", url], env={"HERDER_REDIS_URL": None})
        assert ok.exit_code == 0, ok.stderr
        assert "HERDER_REDIS_PASSWORD" in ok.stderr and "s3cret-pw" not in ok.stdout + ok.stderr
        bad = CliRunner().invoke(app, ["queues", "--redis-url", "redis://:s3cret-pw@127.0.0.1:1/0"])
        assert bad.exit_code == 1 and "s3cret-pw" not in bad.stdout + bad.stderr
    finally:
        proc.stop()


def test_cli_acl_prints_the_generated_rule() -> None:
    from typer.testing import CliRunner

    from herder.acl import acl_rule
    from herder.cli import app

    r = CliRunner().invoke(app, ["acl", "worker", "--queue", "q1"])
    assert r.exit_code == 0 and r.stdout.strip() == acl_rule("worker", ["q1"])
    bad = CliRunner().invoke(app, ["acl", "worker"])
    assert bad.exit_code == 2 and bad.stderr.count("\n") == 1 and "--queue" in bad.stderr


# ---- idempotent enqueue: same id, other task or payload -------------------------------------


async def test_same_id_other_task_or_payload_is_a_conflict_and_writes_nothing(client: HerderClient) -> None:
    from herder.errors import Conflict
    from herder.request import JobRequest as Req

    first = await client.enqueue("default", "echo", {"x": 1}, id="order-42")
    again = await client.enqueue("default", "echo", {"x": 1}, id="order-42")
    assert first.created and not again.created and again.id == first.id
    before = await snapshot(client)
    for task, payload in (("echo", {"x": 2}), ("sleep", {"seconds": 0}), ("echo", None)):
        with pytest.raises(Conflict, match="order-42"):
            await client.enqueue("default", task, payload, id="order-42")
    with pytest.raises(Conflict):  # a batch with one conflicting id writes none of the others
        await client.enqueue_many(
            "default", [Req(task="echo", id="new-1"), Req(task="echo", payload=3, id="order-42")]
        )
    assert await snapshot(client) == before


def test_cli_conflict_is_exit_2(worker_env: dict[str, str]) -> None:
    from typer.testing import CliRunner

    from herder.cli import app

    env = {"HERDER_REDIS_URL": worker_env["HERDER_REDIS_URL"]}
    ok = CliRunner().invoke(app, ["enqueue", "default", "echo", "--id", "c1", "--payload", "1"], env=env)
    assert ok.exit_code == 0, ok.stderr
    bad = CliRunner().invoke(app, ["enqueue", "default", "echo", "--id", "c1", "--payload", "2"], env=env)
    assert bad.exit_code == 2 and "another task or payload" in bad.stderr and bad.stderr.count("\n") == 1
