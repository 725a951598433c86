"""Per-minute trends of a queue, kept in Redis by Herder itself (no Prometheus needed).

Every worker calls `record` with its heartbeat; the first call in a minute writes one sample
(lua/trend.lua: cumulative counters, depth by state, workers, capacity, in flight, and how long
the next jobs to run have waited), later calls that minute are no-ops. Samples live in one hash
per queue, at most `retention` of them, and the hash expires when no worker writes any more.
`series` turns samples into per-minute rates and levels for charts. Pure where it can be.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from herder.connection import at_key_node, is_cluster
from herder.keys import QueueKeys

COLUMNS = (
    "enqueued",
    "succeeded",
    "retried",
    "dead",
    "cancelled",
    "ready",
    "scheduled",
    "waiting",
    "active",
    "deadq",
    "workers",
    "capacity",
    "in_flight",
    "wait_p50_ms",
    "wait_p95_ms",
    "wait_max_ms",
)
COUNTERS = COLUMNS[:5]  # cumulative: charted as per-minute differences
RETENTION_MINUTES = 360
WAIT_SAMPLE = 200


@cache
def _source() -> str:
    return (resources.files("herder") / "lua" / "trend.lua").read_text()


def trend_keys(keys: QueueKeys) -> list[str]:
    b = keys.base
    return [keys.trend, f"{b}:stats", keys.ready, f"{b}:readyc", f"{b}:scheduled", f"{b}:waiting",
            f"{b}:active", f"{b}:dead", keys.workers]  # fmt: skip


async def record(
    redis: Any, keys: QueueKeys, lease_ms: int, retention: int = RETENTION_MINUTES, sample: int = WAIT_SAMPLE
) -> bool:
    """Write this minute's sample unless one exists. One round trip (EVALSHA, EVAL on a miss)."""
    script = redis.register_script(_source())
    wrote = await script(keys=trend_keys(keys), args=[keys.base, lease_ms, retention, sample])
    return bool(int(wrote))


def parse_sample(raw: str) -> dict[str, int] | None:
    """One stored sample; None when it is corrupt (anything in Redis may be)."""
    parts = raw.split(",")
    if len(parts) != len(COLUMNS):
        return None
    try:
        return dict(zip(COLUMNS, (int(float(p)) for p in parts), strict=True))
    except ValueError:
        return None


def series(samples: dict[int, str], until_minute: int, minutes: int) -> dict[str, list[float | None]]:
    """Chart series over [until-minutes+1, until]: x in epoch seconds; counters as per-minute
    rates (difference to the previous minute's sample; None across a gap or a counter reset),
    levels as sampled; utilisation = in flight / capacity."""
    out: dict[str, list[float | None]] = {"t": []}
    for c in (*COLUMNS, "utilisation"):
        out[c] = []
    prev: dict[str, int] | None = None
    first = until_minute - minutes + 1
    before = samples.get(first - 1)
    if before is not None:
        prev = parse_sample(before)
    for m in range(first, until_minute + 1):
        raw = samples.get(m)
        cur = parse_sample(raw) if raw is not None else None
        out["t"].append(float(m * 60))
        for c in COLUMNS:
            if cur is None:
                out[c].append(None)
            elif c in COUNTERS:
                d = cur[c] - prev[c] if prev is not None else None
                out[c].append(float(d) if d is not None and d >= 0 else None)
            else:
                out[c].append(float(cur[c]))
        util = cur["in_flight"] / cur["capacity"] if cur and cur["capacity"] > 0 else None
        out["utilisation"].append(util)
        prev = cur
    return out


async def read(redis: Any, keys: QueueKeys, minutes: int) -> dict[str, list[float | None]]:
    """The last `minutes` minutes of a queue (bounded by the caller), by Redis' clock."""
    if is_cluster(redis):  # a cluster pipeline refuses TIME: ask the queue's master apart
        sec, _ = await redis.time(**await at_key_node(redis, keys.trend))
        raw = await redis.hgetall(keys.trend)
    else:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.hgetall(keys.trend)
            (sec, _), raw = await pipe.execute()
    samples: dict[int, str] = {}
    for k, v in raw.items():
        try:
            samples[int(k)] = v
        except ValueError:
            continue
    return series(samples, int(sec) // 60, minutes)
