"""The connection pool, TLS and Sentinel through settings, against a real redis-server (TLS build) and a real
Sentinel process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import TimeoutError as RedisTimeoutError

from helpers import running_worker, wait_for, wait_state
from herder import connection
from herder.client import HerderClient
from herder.connection import HandOutPool
from herder.settings import HerderSettings
from redis_proc import RedisProc, free_port


def _certs(d: Path) -> tuple[Path, Path, Path]:
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, crt = d / "ca.key", d / "ca.crt", d / "r.key", d / "r.csr", d / "r.crt"
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run(
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        ca_key,
        "-out",
        ca,
        "-days",
        "1",
        "-subj",
        "/CN=herder-test-ca",
    )
    run(
        "openssl",
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        key,
        "-out",
        csr,
        "-subj",
        "/CN=localhost",
    )
    ext = d / "ext.cnf"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run(
        "openssl",
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        ca,
        "-CAkey",
        ca_key,
        "-CAcreateserial",
        "-out",
        crt,
        "-days",
        "1",
        "-extfile",
        ext,
    )
    return ca, crt, key


async def test_tls_connection(tmp_path: Path) -> None:
    ca, crt, key = _certs(tmp_path / "tls")
    tls_port = free_port()
    proc = RedisProc(
        tmp_path / "r",
        extra=[
            "--tls-port",
            str(tls_port),
            "--tls-cert-file",
            str(crt),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(ca),
            "--tls-auth-clients",
            "no",
        ],
    ).start()
    try:
        s = HerderSettings(
            redis_url=f"redis://127.0.0.1:{tls_port}/0", redis_tls=True, redis_tls_ca_certs=str(ca)
        )
        async with HerderClient(s) as c, running_worker(s):
            r = await c.enqueue("default", "echo", {"over": "tls"})
            assert (await wait_state(c, r.id, "succeeded")).result == {"over": "tls"}
        # without TLS the TLS port does not talk
        plain = HerderSettings(redis_url=f"redis://127.0.0.1:{tls_port}/0", redis_connect_timeout=1)
        async with HerderClient(plain) as c:
            with pytest.raises((redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
                await c.status("default")
    finally:
        proc.stop()


@pytest.fixture(params=[None], ids=["open"])
def sentinel(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[RedisProc, int]]:
    """A master and a real Sentinel monitoring it (as `herdermaster`); with a param, the
    sentinel itself requires that password (`requirepass`)."""
    password: str | None = request.param
    master = RedisProc(tmp_path / "master").start()
    sport = free_port()
    sdir = tmp_path / "sentinel"
    sdir.mkdir()
    conf = sdir / "sentinel.conf"
    conf.write_text(
        f"port {sport}\nbind 127.0.0.1\ndir {sdir}\nsentinel monitor herdermaster 127.0.0.1 {master.port} 1\n"
        + (f"requirepass {password}\n" if password else "")
    )
    proc = subprocess.Popen(
        ["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if redis.Redis(port=sport, password=password).sentinel_get_master_addr_by_name(
                    "herdermaster"
                ):
                    break
            except redis.RedisError:
                pass
            assert time.monotonic() < deadline, "sentinel did not come up"
            time.sleep(0.1)
        yield master, sport
    finally:
        proc.terminate()
        proc.wait(10)
        master.stop()


async def test_sentinel_connection(sentinel: tuple[RedisProc, int]) -> None:
    master, sport = sentinel
    s = HerderSettings(redis_sentinels=f"127.0.0.1:{sport}", redis_sentinel_master="herdermaster")
    async with HerderClient(s) as c, running_worker(s):
        r = await c.enqueue("default", "echo", {"via": "sentinel"})
        assert (await wait_state(c, r.id, "succeeded")).result == {"via": "sentinel"}
    assert redis.Redis(port=master.port).exists(f"herder:{{default}}:job:{r.id}")


async def test_an_arq_workers_ctx_redis_follows_sentinel_like_the_worker(
    sentinel: tuple[RedisProc, int],
) -> None:
    """herder.arq: ctx['redis'] (what arq tasks read, write and enqueue with) was built from the
    URL alone, so with Sentinel it talked to whatever the URL named (here: nothing listening).
    It shares the worker's connections now: found through the sentinels, like the worker."""
    from herder.arq import Worker, func

    master, sport = sentinel
    s = HerderSettings(
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        redis_sentinels=f"127.0.0.1:{sport}",
        redis_sentinel_master="herdermaster",
        redis_connect_timeout=1,
    )

    async def parent(ctx: dict[str, object], tag: str) -> str:
        redis_ = ctx["redis"]
        await redis_.set(f"from-task:{tag}", "yes")  # type: ignore[attr-defined]
        await redis_.enqueue_job("child", tag)  # type: ignore[attr-defined]
        return tag

    async def child(ctx: dict[str, object], tag: str) -> str:
        return tag

    w = Worker(
        [func(parent, name="parent"), func(child, name="child")],
        herder_settings=s,
        burst=True,
        handle_signals=False,
    )
    await w._pool.enqueue_job("parent", "a")
    assert await w.run_check() == 2  # the parent and the child it enqueued
    assert redis.Redis(port=master.port).get("from-task:a") == b"yes"


@pytest.mark.parametrize("sentinel", ["s3ntinel-pw"], ids=["requirepass"], indirect=True)
async def test_sentinel_with_its_own_password(sentinel: tuple[RedisProc, int]) -> None:
    """Sentinels with `requirepass`: HERDER_REDIS_SENTINEL_PASSWORD reaches them; without it the
    master cannot be found (redis-py says which), and nothing is written."""
    master, sport = sentinel
    base = {"redis_sentinels": f"127.0.0.1:{sport}", "redis_sentinel_master": "herdermaster"}
    async with HerderClient(HerderSettings(**base, redis_connect_timeout=1)) as c:
        with pytest.raises(redis.exceptions.ConnectionError, match="herdermaster"):
            await c.enqueue("default", "echo", {"via": "sentinel"})
    assert not redis.Redis(port=master.port).keys("herder:*")
    s = HerderSettings(**base, redis_sentinel_password="s3ntinel-pw")
    async with HerderClient(s) as c, running_worker(s):
        r = await c.enqueue("default", "echo", {"via": "sentinel"})
        assert (await wait_state(c, r.id, "succeeded")).result == {"via": "sentinel"}


async def test_a_pooled_connection_the_server_closed_is_replaced_before_use(settings: HerderSettings) -> None:
    """HandOutPool does not poll a connection's socket when handing it out: one the server closed
    while it sat in the pool (a restart, CLIENT KILL, a failover) is seen closed from its stream
    and reconnected, so the next command does not fail."""
    async with HerderClient(settings) as c:
        pool = c.redis.connection_pool
        assert isinstance(pool, HandOutPool)
        await c.enqueue("pool", "echo", {"n": 1})
        (conn,) = pool._available_connections
        admin = redis.Redis.from_url(settings.redis_url)
        try:
            assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
        finally:
            admin.close()

        async def seen_closed() -> bool:
            return conn._reader is not None and conn._reader.at_eof()

        await wait_for(seen_closed, bool)  # the event loop has read the server's EOF
        assert (await c.enqueue("pool", "echo", {"n": 2})).created
        assert (await c.status("pool")).ready == 2


async def test_a_write_that_cannot_finish_times_out_and_drops_the_connection(
    redis_server: RedisProc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write bound (asyncio.timeout in place of redis-py's wait_for): a server that stops
    reading (SIGSTOP) makes a big write block once the socket buffers fill; it fails with redis'
    TimeoutError after the socket timeout, the connection is dropped, and the next command
    (server resumed) runs on a fresh one."""
    monkeypatch.setattr(connection, "SOCKET_TIMEOUT_S", 0.5)
    async with HerderClient(HerderSettings(redis_url=redis_server.url)) as c:
        await c.redis.ping()
        if sys.version_info < (3, 12):
            assert c.redis.connection_pool.connection_class.__name__ == "FastConnection"
        assert redis_server.proc is not None
        os.kill(redis_server.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(RedisTimeoutError, match="writing"):
                await c.redis.set("big", b"x" * (64 << 20))
        finally:
            os.kill(redis_server.proc.pid, signal.SIGCONT)
        assert await c.redis.ping()
        assert await c.redis.exists("big") == 0


async def test_commands_are_packed_by_hiredis_byte_for_byte_as_redis_py_packs_them(
    redis_server: RedisProc,
) -> None:
    """The pool's connections pack commands in C (hiredis); what hiredis refuses (lone
    surrogates from surrogateescape-decoded data, a command name with a space, None) goes
    through redis-py: the same bytes, the same DataError, and corrupt bytes still round-trip."""
    from redis.asyncio.connection import Connection
    from redis.exceptions import DataError

    async with HerderClient(HerderSettings(redis_url=redis_server.url)) as c:
        conn = c.redis.connection_pool.make_connection()
        assert type(conn).__name__ == "FastConnection"
        plain = Connection(encoding_errors="surrogateescape")
        cases: list[tuple[object, ...]] = [
            ("SET", "k", "v"),
            ("EVALSHA", "a" * 40, 1, "k", 2.5, 1e20, -3, b"\x00\xff", "\u00e9\u4e2d"),
            ("SET", "k", "\udcff"),
            ("CONFIG GET", "maxmemory"),
            (b"PING",),
        ]
        for args in cases:
            assert b"".join(conn.pack_command(*args)) == b"".join(plain.pack_command(*args)), args
        for bad in (None, True, [1]):
            with pytest.raises(DataError):
                conn.pack_command("SET", "k", bad)
        await c.redis.set("raw", "\udcff\u00e9")
        assert await c.redis.get("raw") == "\udcff\u00e9"
        async with redis.asyncio.Redis.from_url(redis_server.url) as raw:
            assert await raw.get("raw") == b"\xff\xc3\xa9"
