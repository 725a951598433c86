"""Queue metrics collector against a real redis-server: values per queue, workers, events, and
Redis outages (never raises; herder_queue_redis_up 0)."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from helpers import running_worker, wait_for
from herder.client import HerderClient
from herder.errors import InvalidInput
from herder.queue_metrics import EVENTS, QueueCollector, serve
from herder.settings import HerderSettings
from redis_proc import RedisProc, free_port

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def scrape(registry: CollectorRegistry) -> Samples:
    return parse(generate_latest(registry).decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture
def settings(request: pytest.FixtureRequest) -> HerderSettings:
    """One redis-server; tests parametrized with `settings` = "cluster" (indirect) read the shared
    Redis Cluster through HERDER_REDIS_CLUSTER's client instead."""
    if getattr(request, "param", "single") == "cluster":
        return request.getfixturevalue("cluster_settings")  # type: ignore[no-any-return]
    server: RedisProc = request.getfixturevalue("redis_server")
    return HerderSettings(redis_url=server.url, lease_seconds=2.0)


BOTH = pytest.mark.parametrize("settings", ["single", "cluster"], indirect=True)


@pytest.fixture
def collector_for() -> Iterator[list[QueueCollector]]:
    made: list[QueueCollector] = []
    yield made
    for c in made:
        c.close()


def registry_with(made: list[QueueCollector], *args: object, **kw: object) -> CollectorRegistry:
    c = QueueCollector(*args, **kw)  # type: ignore[arg-type]
    made.append(c)
    reg = CollectorRegistry()
    reg.register(c)
    return reg


@BOTH
async def test_depth_paused_and_events(
    settings: HerderSettings, client: HerderClient, collector_for: list[QueueCollector]
) -> None:
    parent = await client.enqueue("alpha", "echo", {"n": 0})
    await client.enqueue("alpha", "echo", {"n": 1})
    await client.enqueue("alpha", "echo", {"n": 2}, delay=3600)
    await client.enqueue("alpha", "echo", {"n": 3}, after=[parent.id])
    await client.enqueue("beta", "echo", {"n": 4})
    await client.pause("beta")

    reg = registry_with(collector_for, settings)
    s = await asyncio.to_thread(scrape, reg)

    assert value(s, "herder_queue_redis_up") == 1
    expected = {"ready": 2, "scheduled": 1, "waiting": 1, "active": 0, "dead": 0}
    for state, n in expected.items():
        assert value(s, "herder_queue_jobs", queue="alpha", state=state) == n, state
    assert value(s, "herder_queue_jobs", queue="beta", state="ready") == 1
    assert value(s, "herder_queue_paused", queue="alpha") == 0
    assert value(s, "herder_queue_paused", queue="beta") == 1
    assert value(s, "herder_queue_workers", queue="alpha") == 0
    assert value(s, "herder_queue_capacity", queue="alpha") == 0
    assert value(s, "herder_queue_events_total", queue="alpha", event="enqueued") == 4
    assert value(s, "herder_queue_events_total", queue="beta", event="enqueued") == 1
    # Every known event is exported from the start, so increase() sees the first one.
    for event in EVENTS:
        assert ("herder_queue_events_total", frozenset({("queue", "alpha"), ("event", event)})) in s
    assert value(s, "herder_queue_events_total", queue="alpha", event="dead") == 0

    # A queue list restricts the scrape to those queues.
    only = registry_with(collector_for, settings, ["beta"])
    s2 = await asyncio.to_thread(scrape, only)
    assert value(s2, "herder_queue_jobs", queue="beta", state="ready") == 1
    assert not any(dict(labels).get("queue") == "alpha" for _, labels in s2)


@BOTH
async def test_workers_capacity_and_outcomes(
    settings: HerderSettings, client: HerderClient, collector_for: list[QueueCollector]
) -> None:
    reg = registry_with(collector_for, settings, ["default"])
    async with running_worker(settings, "default", concurrency=3, name="w1"):
        long = await client.enqueue("default", "sleep", {"seconds": 30})
        await client.enqueue("default", "echo", {"x": 1})
        await client.enqueue("default", "fail", {"message": "boom"}, max_attempts=1)

        def settled(s: Samples) -> bool:
            return (
                value(s, "herder_queue_jobs", queue="default", state="active") == 1
                and value(s, "herder_queue_events_total", queue="default", event="succeeded") == 1
                and value(s, "herder_queue_jobs", queue="default", state="dead") == 1
            )

        s = await wait_for(lambda: asyncio.to_thread(scrape, reg), settled, timeout=20)
        assert value(s, "herder_queue_workers", queue="default") == 1
        assert value(s, "herder_queue_workers_draining", queue="default") == 0
        assert value(s, "herder_queue_capacity", queue="default") == 3
        assert value(s, "herder_queue_events_total", queue="default", event="dead") == 1

        # A draining worker still counts as a worker, but its slots are no longer capacity.
        await client.drain_worker("default", "w1", exit=False)
        s = await wait_for(
            lambda: asyncio.to_thread(scrape, reg),
            lambda s: value(s, "herder_queue_workers_draining", queue="default") == 1,
        )
        assert value(s, "herder_queue_workers", queue="default") == 1
        assert value(s, "herder_queue_capacity", queue="default") == 0
        await client.undrain_worker("default", "w1")
        await client.cancel(long.id)


async def test_redis_down_reports_zero_and_never_raises(
    redis_server: RedisProc,
    settings: HerderSettings,
    client: HerderClient,
    collector_for: list[QueueCollector],
) -> None:
    await client.enqueue("default", "echo", {})
    reg = registry_with(collector_for, settings, timeout=3.0)
    s = await asyncio.to_thread(scrape, reg)
    assert value(s, "herder_queue_redis_up") == 1

    redis_server.stop()
    started = time.monotonic()
    s = await asyncio.to_thread(scrape, reg)
    assert time.monotonic() - started < 3.5
    assert value(s, "herder_queue_redis_up") == 0
    assert not any(name == "herder_queue_jobs" for name, _ in s)

    # Back again: the same collector recovers without a restart.
    redis_server.start()
    s = await wait_for(
        lambda: asyncio.to_thread(scrape, reg), lambda s: value(s, "herder_queue_redis_up") == 1, timeout=10
    )


def test_unreachable_from_the_start_and_timeout(collector_for: list[QueueCollector]) -> None:
    closed = HerderSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    s = scrape(registry_with(collector_for, closed, ["default"]))
    assert value(s, "herder_queue_redis_up") == 0

    # A server that accepts but never answers: the scrape gives up at the timeout.
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        hung = HerderSettings(redis_url=f"redis://127.0.0.1:{port}/0")
        reg = registry_with(collector_for, hung, ["default"], timeout=1.0)
        started = time.monotonic()
        s = scrape(reg)
        assert time.monotonic() - started < 2.0
        assert value(s, "herder_queue_redis_up") == 0


async def test_several_targets_with_extra_labels(
    tmp_path_factory: pytest.TempPathFactory,
    settings: HerderSettings,
    client: HerderClient,
    collector_for: list[QueueCollector],
) -> None:
    await client.enqueue("default", "echo", {})
    other = RedisProc(tmp_path_factory.mktemp("other")).start()
    try:
        other_settings = HerderSettings(redis_url=other.url)
        async with HerderClient(other_settings) as c2:
            await c2.enqueue("default", "echo", {})
            await c2.enqueue("default", "echo", {})
        down = HerderSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
        collector = QueueCollector(timeout=3.0)
        collector_for.append(collector)
        collector.set_target("a", settings, ["default"], {"taskqueue": "ns1/a"})
        collector.set_target("b", other_settings, None, {"taskqueue": "ns2/b"})
        collector.set_target("c", down, ["default"], {"taskqueue": "ns3/c"})
        reg = CollectorRegistry()
        reg.register(collector)
        s = await asyncio.to_thread(scrape, reg)
        assert value(s, "herder_queue_jobs", queue="default", taskqueue="ns1/a", state="ready") == 1
        assert value(s, "herder_queue_jobs", queue="default", taskqueue="ns2/b", state="ready") == 2
        assert value(s, "herder_queue_redis_up", taskqueue="ns1/a") == 1
        assert value(s, "herder_queue_redis_up", taskqueue="ns3/c") == 0

        await asyncio.to_thread(collector.remove_target, "c")
        s = await asyncio.to_thread(scrape, reg)
        assert ("herder_queue_redis_up", frozenset({("taskqueue", "ns3/c")})) not in s
        assert collector.targets() == ["a", "b"]
    finally:
        other.stop()


def test_bad_input_is_rejected_up_front(settings: HerderSettings) -> None:
    with pytest.raises(InvalidInput):
        QueueCollector(settings, ["no spaces allowed"])
    with pytest.raises(ValueError, match="reserved"):
        QueueCollector(settings, labels={"queue": "x"})


def test_registering_does_not_touch_redis() -> None:
    down = HerderSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    c = QueueCollector(down)
    try:
        reg = CollectorRegistry(auto_describe=True)
        started = time.monotonic()
        reg.register(c)
        assert time.monotonic() - started < 0.5
        assert c._loop is None  # no event loop thread until the first scrape
    finally:
        c.close()


async def test_serve_http(settings: HerderSettings, client: HerderClient) -> None:
    await client.enqueue("default", "echo", {})
    port = free_port()
    stop = threading.Event()
    t = threading.Thread(
        target=serve, args=(settings, None, port), kwargs={"addr": "127.0.0.1", "stop": stop}
    )
    t.start()
    try:

        async def fetch() -> str:
            def get() -> str:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                        return str(r.read().decode())
                except OSError:
                    return ""

            return await asyncio.to_thread(get)

        text = await wait_for(fetch, lambda t: "herder_queue_redis_up" in t, timeout=10)
        s = parse(text)
        assert value(s, "herder_queue_redis_up") == 1
        assert value(s, "herder_queue_jobs", queue="default", state="ready") == 1
        assert any(name.startswith("process_") for name, _ in s)
    finally:
        stop.set()
        await asyncio.to_thread(t.join, 15)
    assert not t.is_alive()
