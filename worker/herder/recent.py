"""The browse index of recently finished jobs (`succeeded`, `cancelled`): neither state has a
set of its own in the queue's schema. The worker's finish script writes it with the outcomes
(lua/finish.lua); a cancel of a job no worker holds adds the id here after its script, in a
separate pipeline step. The index is advisory and bounded: trimmed back to RECENT_KEPT ids per
state (newest kept) now and then; readers skip ids whose job is gone or has moved on to another
state."""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from typing import Any

from herder.keys import QueueKeys

RECENT_STATES = ("succeeded", "cancelled")
RECENT_KEPT = 10_000
TRIM_EVERY = 1 / 32  # chance per write to trim back to RECENT_KEPT


async def note_finished(redis: Any, keys: QueueKeys, finished: Iterable[tuple[str, str]]) -> None:
    """Record (job id, state) pairs; states other than RECENT_STATES are ignored."""
    by_state: dict[str, dict[str, int]] = {}
    now = int(time.time() * 1000)
    for job_id, state in finished:
        if state in RECENT_STATES:
            by_state.setdefault(state, {})[job_id] = now
    if not by_state:
        return
    trim = random.random() < TRIM_EVERY  # amortised: a soft bound, one command per job mostly
    async with redis.pipeline(transaction=False) as pipe:
        for state, members in by_state.items():
            pipe.zadd(keys.recent(state), members)
            if trim:
                pipe.zremrangebyrank(keys.recent(state), 0, -RECENT_KEPT - 1)
        await pipe.execute()
