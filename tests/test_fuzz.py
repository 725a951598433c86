"""Seeded fuzzing of the client against a real redis-server: thousands of hostile calls, and
every one either succeeds or fails with one of Herder's own errors, having written nothing."""

from __future__ import annotations

import math
import random
from typing import Any

from herder.client import HerderClient, JobRequest
from herder.errors import Conflict, InvalidInput, NotFound

SEED = 10
CASES = 2000

ODD_STRINGS = [
    "",
    " ",
    "a",
    "default",
    "q\n",
    "q\r",
    "\x00",
    "a b",
    "ü",
    "💥",
    "..",
    "-x",
    "{q}",
    "a*",
    "herder-cron-x",
    "x" * 129,
    "x" * 201,
    "x" * 100_000,
    "job:1",
    "a@b",
]
ODD_NUMBERS: list[Any] = [
    0,
    -1,
    1,
    2**63,
    -(2**63),
    10**30,
    0.5,
    -0.0,
    math.nan,
    math.inf,
    -math.inf,
    1e308,
    1e-308,
]


def odd_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9)
    if kind == 0:
        return rng.choice(ODD_STRINGS)
    if kind == 1:
        return rng.choice(ODD_NUMBERS)
    if kind == 2:
        return rng.choice([None, True, False])
    if kind == 3 and depth < 3:
        return [odd_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 4 and depth < 3:
        return {rng.choice(ODD_STRINGS)[:50]: odd_value(rng, depth + 1) for _ in range(rng.randrange(4))}
    if kind == 5:
        deep: Any = "leaf"
        for _ in range(rng.choice([10, 1000, 5000])):
            deep = [deep]
        return deep
    if kind == 6:
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(40)))
    if kind == 7:
        return {f"k{i}": "v" * rng.choice([1, 300, 100_000]) for i in range(rng.choice([1, 5, 40]))}
    return rng.random() * rng.choice([1, 1e6, 1e12])


OPTIONS = [*JobRequest.model_fields, "bogus_option"]


def odd_options(rng: random.Random) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rng.random() < 0.5:
        return out
    for name in rng.sample(OPTIONS, rng.randrange(1, 3)):
        if name in ("task", "payload"):
            continue
        out[name] = odd_value(rng)
    return out


async def snapshot(c: HerderClient) -> dict[str, Any]:
    return {k: await c.redis.dump(k) for k in sorted(await c.redis.keys("*"))}


async def test_fuzzed_client_calls_raise_only_herder_errors_and_never_half_write(
    client: HerderClient,
) -> None:
    rng = random.Random(SEED)
    tally = {"ok": 0, "rejected": 0}
    for case in range(CASES):
        before = await snapshot(client)
        op = rng.randrange(6)
        queue = "default" if rng.random() < 0.8 else rng.choice(ODD_STRINGS)
        task = rng.choice(["echo", "sleep", "fail"]) if rng.random() < 0.8 else rng.choice(ODD_STRINGS)
        try:
            if op <= 2:
                await client.enqueue(queue, task, odd_value(rng) if op else None, **odd_options(rng))
            elif op == 3:
                reqs = [
                    JobRequest(task=rng.choice(["echo", "nope"]), id=rng.choice([None, "dup", "a", "b"]))
                    for _ in range(rng.randrange(1, 4))
                ]
                await client.enqueue_many(queue, reqs)
            elif op == 4:
                await client.get_job(rng.choice(ODD_STRINGS))
            else:
                await rng.choice([client.cancel, client.remove, client.retry])(rng.choice(ODD_STRINGS))
        except (InvalidInput, NotFound, Conflict):
            tally["rejected"] += 1
            after = await snapshot(client)
            assert after == before, f"case {case}: a rejected call changed Redis"
        except Exception as exc:  # anything else is a traceback a user would see
            raise AssertionError(
                f"case {case} (seed {SEED}): {type(exc).__name__}: {str(exc)[:300]}"
            ) from exc
        else:
            tally["ok"] += 1
            await client.redis.flushall()  # keep snapshots cheap
            client._known_queues.clear()
    # The generator reaches both outcomes often; a fuzz that only ever fails proves little.
    assert tally["ok"] > CASES // 10 and tally["rejected"] > CASES // 10, tally
