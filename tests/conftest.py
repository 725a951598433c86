from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

sys.path.insert(0, str(Path(__file__).parent))

from cluster_proc import RedisClusterProc
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


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProc]:
    """One real Redis Cluster (3 masters, 1 replica each) shared by the session's tests, started
    on first use; tests that kill nodes start their own. Tests flush it before use."""
    c = RedisClusterProc(tmp_path_factory.mktemp("cluster"), masters=3, replicas=1).start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def cluster_settings(redis_cluster: RedisClusterProc) -> HerderSettings:
    """Settings for the shared cluster, emptied first (FLUSHALL on every master)."""
    redis_cluster.flushall()
    return HerderSettings(redis_url=redis_cluster.url, redis_cluster=True, lease_seconds=2.0)


@pytest.fixture(params=["single", "cluster"])
def single_or_cluster(request: pytest.FixtureRequest) -> HerderSettings:
    """Settings for one redis-server, then for the shared cluster: a module whose tests hold on
    both overrides `settings` with this (`def settings(single_or_cluster): ...`)."""
    if request.param == "cluster":
        return request.getfixturevalue("cluster_settings")  # type: ignore[no-any-return]
    server: RedisProc = request.getfixturevalue("redis_server")
    return HerderSettings(redis_url=server.url, lease_seconds=2.0)


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


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory an unprivileged uid (a Claude Code run's) can traverse: pytest's tmp_path is
    private to root."""
    d = Path(tempfile.mkdtemp(prefix="herder-shared-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def cc_env(worker_env: dict[str, str], shared_dir: Path) -> dict[str, str]:
    """worker_env for the Claude Code processor with the fake CLI (tests/fakes/claude)."""
    env = dict(worker_env)
    env.update(
        HERDER_CLAUDE_BIN=str(Path(__file__).parent / "fakes" / "claude"),
        HERDER_CLAUDE_WORKSPACE_ROOT=str(shared_dir / "workspaces"),
        ANTHROPIC_API_KEY="sk-test-not-a-real-key",
    )
    return env
