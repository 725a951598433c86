"""Per-minute trend samples in Redis: written once a minute, bounded, corrupt-tolerant; series math."""

from __future__ import annotations

from helpers import running_worker, wait_state
from herder import trends
from herder.client import HerderClient
from herder.settings import HerderSettings


def _row(**kw: int) -> str:
    return ",".join(str(kw.get(c, 0)) for c in trends.COLUMNS)


def test_series_rates_levels_gaps_and_resets() -> None:
    samples = {
        9: _row(enqueued=10, succeeded=5),
        10: _row(enqueued=14, succeeded=6, ready=3, capacity=4, in_flight=2),
        12: _row(enqueued=20, succeeded=9, ready=1),  # minute 11 missing: a gap
        13: _row(enqueued=2, succeeded=1),  # counters reset (Redis flushed): no negative rate
        14: "garbage,1",
    }
    s = trends.series(samples, until_minute=14, minutes=5)
    assert s["t"] == [600.0, 660.0, 720.0, 780.0, 840.0]
    assert s["enqueued"] == [4.0, None, None, None, None]
    assert s["succeeded"] == [1.0, None, None, None, None]
    assert s["ready"] == [3.0, None, 1.0, 0.0, None]
    assert s["utilisation"] == [0.5, None, None, None, None]


async def test_record_once_a_minute_with_real_counters(
    client: HerderClient, settings: HerderSettings
) -> None:
    keys = client.keys("default")
    for i in range(3):
        await client.enqueue("default", "echo", {"i": i}, id=f"t{i}")
    assert await trends.record(client.redis, keys, lease_ms=2000) is True
    assert await trends.record(client.redis, keys, lease_ms=2000) is False  # same minute: no-op
    raw = await client.redis.hgetall(keys.trend)
    assert len(raw) == 1
    sample = trends.parse_sample(next(iter(raw.values())))
    assert sample is not None and sample["enqueued"] == 3 and sample["ready"] == 3
    assert sample["wait_max_ms"] >= sample["wait_p50_ms"] >= 0
    assert 0 < await client.redis.pttl(keys.trend) <= trends.RETENTION_MINUTES * 60_000
    # with the jobs done, a fresh sample counts them (the worker records its own once a minute
    # too; whichever writes this minute's sample, it is taken after the jobs finished)
    async with running_worker(settings, "default") as w:
        for i in range(3):
            await wait_state(client, f"t{i}", "succeeded")
        await client.redis.delete(keys.trend)
        await trends.record(client.redis, keys, lease_ms=2000)
        sample = trends.parse_sample(next(iter((await client.redis.hgetall(keys.trend)).values())))
        assert sample is not None and sample["workers"] == 1 and sample["capacity"] == w.max_jobs
        assert sample["succeeded"] == 3 and sample["ready"] == 0


async def test_samples_stay_bounded_and_old_or_corrupt_fields_go(client: HerderClient) -> None:
    keys = client.keys("default")
    sec, _ = await client.redis.time()
    minute = int(sec) // 60
    old = {str(minute - k): _row() for k in range(trends.RETENTION_MINUTES, trends.RETENTION_MINUTES + 20)}
    await client.redis.hset(keys.trend, mapping={**old, "junk": "x"})
    await trends.record(client.redis, keys, lease_ms=2000, retention=trends.RETENTION_MINUTES)
    left = await client.redis.hkeys(keys.trend)
    assert len(left) == 1 and int(left[0]) >= minute
    series = await trends.read(client.redis, keys, 10)
    assert len(series["t"]) == 10 and 0.0 in series["ready"][-2:]


async def test_a_running_worker_records_the_queue_sample(
    client: HerderClient, settings: HerderSettings
) -> None:
    from helpers import wait_for

    keys = client.keys("default")
    async with running_worker(settings, "default"):
        raw = await wait_for(lambda: client.redis.hgetall(keys.trend), lambda r: bool(r))
    sample = trends.parse_sample(next(iter(raw.values())))
    assert sample is not None and sample["workers"] == 1 and sample["capacity"] > 0
