"""The enqueue fast lane: one persistent, pipelined connection per client for the enqueue
script only (docs/queue.md "The enqueue fast lane").

redis-py spends most of a single enqueue's latency in its per-command machinery (pool
checkout, connection health checks, a read task per reply); a bare asyncio.Protocol with
hiredis's reader answers a round trip in well under half the time. Only a plain single-node
`redis://` client gets one (no TLS, Sentinel, Cluster or unix socket, no external client);
every other command, and every other setup, stays on redis-py.

Replies match the decoded client (UTF-8, surrogateescape) and errors are redis-py's exception
types with the same messages, so callers cannot tell the two paths apart."""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from herder.connection import SOCKET_TIMEOUT_S
from herder.keys import QueueKeys
from herder.scripts import QueueScript
from herder.settings import HerderSettings

CLIENT_NAME = "herder-fastlane"
# Bench/diagnostics hook: called with the number of commands in each write (one write = one
# round trip), handshake included, so the counts of bench/benchlib.py stay honest.
on_send: Callable[[int], None] | None = None


def _parse_error(message: str) -> Exception:
    return BaseParser.parse_error(message)  # type: ignore[no-untyped-call,no-any-return]


class _Protocol(asyncio.Protocol):
    """Requests are written in order and Redis answers in order: a FIFO of futures. One timer
    per connection bounds the wait for the oldest unanswered request (`timeout` seconds from
    its send), not a timer per request: a silent server fails the connection, and every
    request on it, with TimeoutError."""

    def __init__(self, timeout: float = SOCKET_TIMEOUT_S) -> None:
        self.timeout = timeout
        self._timer: asyncio.TimerHandle | None = None
        self.reader = hiredis.Reader(
            encoding="utf-8",
            errors="surrogateescape",
            protocolError=InvalidResponse,
            replyError=_parse_error,
        )
        # per request sent and not yet answered: its future and its deadline (send time + timeout)
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.error: Exception | None = None  # why the connection is unusable, once it is

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not False:
                fut = self.waiting.popleft()[0] if self.waiting else None
                if fut is None or fut.done():  # a caller that gave up (cancelled): drop its reply
                    continue
                if isinstance(reply, Exception):
                    fut.set_exception(reply)
                else:
                    fut.set_result(reply)
        except InvalidResponse as exc:  # the stream cannot be trusted any more
            self.fail(RedisConnectionError(f"protocol error from Redis: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"connection to Redis lost: {exc or 'closed by server'}"))
        if not self.lost.done():
            self.lost.set_result(None)

    def fail(self, error: Exception) -> None:
        """Mark the connection unusable, close it and fail every request still waiting."""
        if self.error is None:
            self.error = error
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self.waiting:
            fut, _ = self.waiting.popleft()
            if not fut.done():
                fut.set_exception(error)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def send(self, commands: list[tuple[Any, ...]]) -> list[asyncio.Future[Any]]:
        if self.error is not None or self.transport is None or self.transport.is_closing():
            raise self.error or RedisConnectionError("connection to Redis closed")
        if not commands:
            return []
        loop = asyncio.get_running_loop()
        futs = [loop.create_future() for _ in commands]
        self.transport.write(b"".join(hiredis.pack_command(c) for c in commands))
        deadline = loop.time() + self.timeout
        self.waiting.extend((fut, deadline) for fut in futs)
        if self._timer is None:
            self._timer = loop.call_at(self.waiting[0][1], self._check_deadline)
        if on_send is not None:
            on_send(len(commands))
        return futs

    def _check_deadline(self) -> None:
        self._timer = None
        if not self.waiting:
            return
        loop = asyncio.get_running_loop()
        deadline = self.waiting[0][1]
        if loop.time() >= deadline:
            # a late reply would be taken for the next request's: drop the connection
            self.fail(RedisTimeoutError("timeout reading from Redis"))
        else:
            self._timer = loop.call_at(deadline, self._check_deadline)


class FastLane:
    """One lazily (re)opened connection; `call` pipelines: concurrent callers share it."""

    def __init__(
        self,
        host: str,
        port: int,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        connect_timeout: float = 2.0,
        timeout: float = SOCKET_TIMEOUT_S,
    ) -> None:
        self.host, self.port, self.db = host, port, db
        self.username, self.password = username, password
        self.connect_timeout, self.timeout = connect_timeout, timeout
        self._proto: _Protocol | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @classmethod
    def for_settings(cls, settings: HerderSettings) -> FastLane | None:
        """A fast lane for a plain single-node TCP redis:// URL; None for anything else."""
        url = settings.redis_url
        if settings.redis_cluster or settings.redis_sentinels or settings.redis_tls:
            return None
        if not url.startswith("redis://"):
            return None
        try:
            opts = parse_url(url)
        except ValueError:
            return None  # the normal client reports it
        if set(opts) - {"host", "port", "db", "username", "password"} or "host" not in opts:
            return None  # URL options (timeouts, ...) only redis-py understands
        # as redis-py's from_url: what the URL says wins over the keyword arguments
        username = opts.get("username") or settings.redis_username
        password = opts.get("password")
        if password is None and settings.redis_password is not None:
            password = settings.redis_password.get_secret_value()
        return cls(
            opts["host"],
            int(opts.get("port") or 6379),
            int(opts.get("db") or 0),
            username,
            password,
            settings.redis_connect_timeout,
        )

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        proto: _Protocol | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                transport, proto = await loop.create_connection(
                    lambda: _Protocol(self.timeout), self.host, self.port
                )
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                hello: list[tuple[Any, ...]] = []
                if self.password is not None:
                    auth = (
                        ("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)
                    )
                    hello.append(auth)
                if self.db:
                    hello.append(("SELECT", self.db))
                required = len(hello)
                if not self.username:  # an ACL role need not allow CLIENT (and would log a denial)
                    hello.append(("CLIENT", "SETNAME", CLIENT_NAME))
                replies = await asyncio.gather(*proto.send(hello), return_exceptions=True)
            # AUTH and SELECT must succeed; the name is a nicety
            for reply in replies[:required]:
                if isinstance(reply, BaseException):
                    raise reply
        except BaseException as exc:
            if proto is not None:  # not half-open: close it (cancelled callers included)
                proto.fail(RedisConnectionError("handshake failed"))
            where = f"{self.host}:{self.port}"
            if isinstance(exc, TimeoutError):
                raise RedisTimeoutError(f"timeout connecting to Redis at {where}") from None
            if isinstance(exc, OSError):
                raise RedisConnectionError(f"error connecting to Redis at {where}: {exc}") from None
            raise
        return proto

    async def _connection(self) -> tuple[_Protocol, bool]:
        """The live connection and whether this call opened it."""
        proto = self._proto
        if proto is not None and proto.error is None:
            return proto, False
        async with self._lock:
            if self._closed:
                raise RedisConnectionError("client closed")
            proto = self._proto
            if proto is not None and proto.error is None:
                return proto, False
            self._proto = await self._open()
            return self._proto, True

    async def _round_trip(self, proto: _Protocol, args: tuple[Any, ...]) -> Any:
        (fut,) = proto.send([args])  # bounded by the connection's deadline timer
        return await fut

    async def call(self, *args: Any) -> Any:
        """One command. A reused connection that turns out dead (Redis restarted since) gets one
        transparent retry on a new one, as the redis-py client's single retry; errors on a
        connection this call opened go to the caller."""
        proto, fresh = await self._connection()
        try:
            return await self._round_trip(proto, args)
        except RedisConnectionError:
            if fresh or self._closed:
                raise
        await asyncio.sleep(0.05)
        proto, _ = await self._connection()
        return await self._round_trip(proto, args)

    async def script(self, script: QueueScript, qk: QueueKeys, *args: Any) -> Any:
        """`script(qk, *args)` over the fast lane; NOSCRIPT loads it (normal client) and retries."""
        argv = [qk.base, *args]
        keys = script._resolve(qk, argv)
        command = ("EVALSHA", script.sha, len(keys), *keys, *argv)
        try:
            return await self.call(*command)
        except NoScriptError:  # first call on this server (or after SCRIPT FLUSH / a restart)
            await script.redis.script_load(script.spec.source)
            return await self.call(*command)

    async def aclose(self) -> None:
        self._closed = True
        proto, self._proto = self._proto, None
        if proto is not None:
            proto.fail(RedisConnectionError("client closed"))
            if proto.transport is not None:
                try:  # let the transport release its socket before the loop may end
                    async with asyncio.timeout(1.0):
                        await asyncio.shield(proto.lost)
                except TimeoutError:
                    proto.transport.abort()
