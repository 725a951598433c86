"""Sentinel failover, proven against real processes: a master, two replicas and three
redis-sentinel processes (tests/sentinel_proc.py), `herder worker` processes and a producer that
know only HERDER_REDIS_SENTINELS and the master's name. The master is killed with SIGKILL while
work runs; the sentinels promote a replica; workers and producer resume on it; every
acknowledged job ends succeeded or dead, or is counted as lost to asynchronous replication."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import running_worker, wait_state
from herder.client import HerderClient
from herder.settings import HerderSettings
from herder.tasks import TaskSet
from redis_proc import free_port
from sentinel_proc import MASTER_NAME, SentinelGroup

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(420)]

LEASE = 2.0


def _apps_tasks() -> TaskSet:
    sys.path.insert(0, str(Path(__file__).parent / "apps"))
    from chaos_app import tasks

    return tasks


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    g = SentinelGroup(tmp_path / "sentinel").start()
    try:
        yield g
    finally:
        g.stop()


def sentinel_env(g: SentinelGroup) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERDER_")}
    env["HERDER_REDIS_SENTINELS"] = g.env_value
    env["HERDER_REDIS_SENTINEL_MASTER"] = MASTER_NAME
    # A port nobody listens on: a process that ignored the Sentinel settings would fail loudly
    # (the default URL would reach the machine's own Redis instead).
    env["HERDER_REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    env["HERDER_LEASE_SECONDS"] = str(LEASE)
    return env


def sentinel_settings(g: SentinelGroup) -> HerderSettings:
    return HerderSettings(
        redis_sentinels=g.env_value,
        redis_sentinel_master=MASTER_NAME,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        lease_seconds=LEASE,
    )


# ---- a sentinel that does not answer -----------------------------------------------------------


async def test_a_hung_sentinel_is_skipped(group: SentinelGroup) -> None:
    """The first sentinel of the list accepts connections but never replies (SIGSTOP): clients
    and workers must ask the next one instead of waiting for ever."""
    hung = group.sentinels[0]
    assert hung.proc is not None
    os.kill(hung.proc.pid, signal.SIGSTOP)
    try:
        s = sentinel_settings(group)
        async with HerderClient(s) as c, running_worker(s):
            r = await asyncio.wait_for(c.enqueue("default", "echo", {"via": "second sentinel"}), 30)
            assert (await wait_state(c, r.id, "succeeded")).result == {"via": "second sentinel"}
    finally:
        os.kill(hung.proc.pid, signal.SIGCONT)
