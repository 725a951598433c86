from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

sys.path.insert(0, str(Path(__file__).parent))

from herder.client import HerderClient
from herder.settings import HerderSettings
from redis_proc import RedisProc

# Hypothesis' default 200 ms per-example deadline is a timing assertion: on a loaded machine a
# pure-function example can take longer. Property tests assert behaviour, never speed.
hypothesis_settings.register_profile("herder", deadline=None)
hypothesis_settings.load_profile("herder")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProc]:
    """A fresh redis-server on a free port for this test only."""
    proc = RedisProc(tmp_path / "redis").start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def settings(redis_server: RedisProc) -> HerderSettings:
    return HerderSettings(redis_url=redis_server.url, lease_seconds=2.0)


@pytest.fixture
async def client(settings: HerderSettings) -> AsyncIterator[HerderClient]:
    async with HerderClient(settings) as c:
        yield c


@pytest.fixture
def worker_env(redis_server: RedisProc) -> dict[str, str]:
    """Environment for `herder` subprocesses pointed at the test's Redis."""
    env = dict(os.environ)
    env["HERDER_REDIS_URL"] = redis_server.url
    env["HERDER_LEASE_SECONDS"] = "2"
    env.pop("HERDER_APP", None)
    return env
