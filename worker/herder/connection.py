"""Builds the Redis client from settings: URL, ACL user/password, TLS, Sentinel and Cluster."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from contextvars import ContextVar
from typing import Any

import hiredis
from arq.connections import ArqRedis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, NodesManager, RedisCluster
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.cluster import PRIMARY
from redis.exceptions import (
    ClusterDownError,
    ClusterError,
    NoPermissionError,
    RedisClusterException,
    RedisError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from herder.settings import HerderSettings

# Set while redis-py runs a command or pipeline for us: an aclose() then is its internal
# "hard reinitialize" after an error, not the owner closing the client.
_IN_REDIS_PY_RETRY: ContextVar[bool] = ContextVar("herder_in_redis_py_retry", default=False)

# Blocking reads (BLPOP) wait at most a few seconds, so a socket silent for longer than this
# means the connection is dead (e.g. a network partition), not that Redis is busy.
SOCKET_TIMEOUT_S = 15.0


# What a cluster client raises while a master fails over (its slots unserved until a replica is
# promoted, the client's slot map stale, its retries spent): an outage like a lost connection,
# not a bug. SlotNotCoveredError is not even a RedisError.
CLUSTER_OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    ClusterDownError,
    ClusterError,
    TryAgainError,
    SlotNotCoveredError,
)


def _torn_down(exc: AttributeError) -> RedisConnectionError:
    return RedisConnectionError(f"connection closed by a cluster client reinitialize ({exc})")


async def _node_execute_command(self: ClusterNode, *args: Any, **kwargs: Any) -> Any:
    connection = self.acquire_connection()
    try:  # the send too: a connect or write error must not strand the connection
        await connection.send_packed_command(connection.pack_command(*args), False)
        return await self.parse_response(connection, args[0], **kwargs)
    except AttributeError as exc:
        raise _torn_down(exc) from exc
    finally:
        self._free.append(connection)


async def _node_execute_pipeline(self: ClusterNode, commands: Any) -> bool:
    connection = self.acquire_connection()
    try:
        try:
            await connection.send_packed_command(
                connection.pack_commands(cmd.args for cmd in commands), False
            )
        except AttributeError as exc:
            raise _torn_down(exc) from exc
        ret = False
        for cmd in commands:
            try:
                cmd.result = await self.parse_response(connection, cmd.args[0], **cmd.kwargs)
            except Exception as e:
                cmd.result = _torn_down(e) if isinstance(e, AttributeError) else e
                ret = True
        return ret
    finally:
        self._free.append(connection)


def _fix_cluster_nodes() -> None:
    """Two faults of redis-py 5.3's async cluster client that a master failover hits (found by
    tests/test_cluster_failover.py), fixed in its per-node execute_command/execute_pipeline:

    - The send happens outside the try/finally that frees the connection, so every connect or
      write error (each command sent to a master that just died) strands one connection; after
      max_connections of them that node object answers MaxConnectionsError forever
      (redis/redis-py#4110, fixed upstream by #4111 with ClusterNode.release).
    - On any connection error the client reinitializes by disconnecting every node's
      connections, in-flight ones of other tasks included; a command caught mid-connect then
      fails with AttributeError ('NoneType' object has no attribute 'writelines'). It is a lost
      connection, and is raised as one, so callers retry it like any outage."""
    if hasattr(ClusterNode, "release"):  # a redis-py with #4111: check the second fault there
        return
    ClusterNode.execute_command = _node_execute_command  # type: ignore[method-assign]
    ClusterNode.execute_pipeline = _node_execute_pipeline  # type: ignore[method-assign]


class HerderRedisCluster(RedisCluster):
    """redis-py's async cluster client with four fixes that a master failover needs (each found
    by tests/test_cluster_failover.py; redis-py 5.3):

    - (Re)initializing reads the slot map, then runs COMMAND on the map's first master. While a
      killed master's slots are not yet failed over, the map still names it; when it comes first
      every reinitialize fails, so the whole client, every queue, is down until the failover
      ends. Here the parser runs on the first master that answers, which becomes the default
      node (keyless commands: TIME, PING, INFO).
    - EVALSHA_RO is routed by asking that node for the command's keys (COMMAND GETKEYS): one
      extra round trip per read-only script call, and a connection error there never refreshed
      the slot map, so once that node died every later call failed. Here EVAL_RO/EVALSHA_RO route
      by their declared keys like EVAL/EVALSHA.
    - Every connection error removes the node from the startup nodes the client re-reads the
      slot map from; during a failover the in-flight commands of other tasks fail too (the
      reinitialize disconnects them), so healthy nodes are removed as well, until none is left
      and the client can never connect again. Here each reinitialize starts from the URL's node
      plus every node of the last slot map read.
    - No reachable startup node raised RedisClusterException, not a connection error; callers
      now see the outage they can wait out."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Every node's connections (those of nodes found later too) pack with hiredis.
        nodes = self.nodes_manager
        nodes.connection_kwargs["connection_class"] = _fast_connection(
            nodes.connection_kwargs["connection_class"]
        )
        for node in nodes.startup_nodes.values():
            node.connection_class = nodes.connection_kwargs["connection_class"]
        self._url_seeds = {n.name: (n.host, n.port) for n in self.nodes_manager.startup_nodes.values()}
        self._seeds = dict(self._url_seeds)
        self.nodes_manager.__class__ = _KeepingNodesManager  # same slots: only set_nodes differs
        # redis-py pops a failed node from the startup nodes in one task while another iterates
        # them to re-read the slot map ("dictionary changed size during iteration").
        self.nodes_manager.startup_nodes = _SnapshotDict(self.nodes_manager.startup_nodes)

    async def aclose(self) -> None:
        if _IN_REDIS_PY_RETRY.get():
            # redis-py's own reaction to an error inside a command ("hard reinitialize": close
            # every connection of every node, in-flight ones of other tasks included). Re-read
            # the slot map on the next command instead; a dead node's connections fail by
            # themselves, and the nodes still in the map keep theirs (_KeepingNodesManager).
            self._initialize = True
            return
        await super().aclose()

    async def _execute_command(self, target_node: ClusterNode, *args: Any, **kwargs: Any) -> Any:
        token = _IN_REDIS_PY_RETRY.set(True)
        try:
            return await super()._execute_command(target_node, *args, **kwargs)
        finally:
            _IN_REDIS_PY_RETRY.reset(token)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        super().pipeline(transaction, shard_hint)  # its checks (no transactions)
        return _HerderClusterPipeline(self)  # type: ignore[abstract]

    def _reseed(self) -> None:
        manager = self.nodes_manager
        for name, (host, port) in self._seeds.items():
            if name not in manager.startup_nodes:
                manager.startup_nodes[name] = ClusterNode(host, port, **manager.connection_kwargs)

    async def initialize(self) -> HerderRedisCluster:
        if not self._initialize:
            return self
        if not self._lock:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self._initialize:
                return self
            try:
                self._reseed()
                await self.nodes_manager.initialize()
                self._seeds = {
                    **self._url_seeds,
                    **{n.name: (n.host, n.port) for n in self.nodes_manager.nodes_cache.values()},
                }
                await self._parser_on_a_live_master()
                self._initialize = False
            except BaseException as exc:
                # redis-py closes every connection here; the next command tries again anyway,
                # and closing would break other tasks' commands on healthy nodes.
                if isinstance(exc, RedisClusterException) and "cannot be connected" in str(exc):
                    root = _root_cause(exc)
                    if isinstance(root, NoPermissionError):
                        raise NoPermissionError(
                            f"{root} (the cluster client reads the slot map with CLUSTER SLOTS: "
                            "give the ACL user `herder acl ROLE --cluster`)"
                        ) from exc
                    if isinstance(root, RedisConnectionError | RedisTimeoutError | OSError):
                        raise RedisConnectionError(str(exc)) from exc  # no startup node answered
                raise
        return self

    async def _parser_on_a_live_master(self) -> None:
        manager = self.nodes_manager
        first = manager.default_node
        masters = [first, *(n for n in manager.get_nodes_by_server_type(PRIMARY) if n is not first)]
        error: Exception | None = None
        for node in masters:
            if node is None:
                continue
            try:
                if self.commands_parser.commands:  # the command table does not change: probe only
                    await node.execute_command("PING")
                    self.commands_parser.node = node
                else:
                    await self.commands_parser.initialize(node)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                error = exc
                continue
            manager.default_node = node
            return
        raise RedisConnectionError(f"no master of the cluster answers: {error}")

    async def _determine_slot(self, command: str, *args: Any) -> int:
        if command.upper() in ("EVAL_RO", "EVALSHA_RO") and len(args) >= 2 and int(args[1]) > 0:
            slots = {self.keyslot(k) for k in args[2 : 2 + int(args[1])]}
            if len(slots) != 1:
                raise RedisClusterException(f"{command}: all keys must map to the same key slot")
            return slots.pop()
        try:
            return await super()._determine_slot(command, *args)
        except (RedisConnectionError, RedisTimeoutError):
            self._initialize = True
            raise


def _fast_connection(base: type[AbstractConnection]) -> type[AbstractConnection]:
    """`base` with commands packed by hiredis, in C, and (before Python 3.12) writes bounded in
    the calling task. Both are per-command client costs a busy worker pays on every claim and
    finish call: redis-py packs a command in Python (~7 µs for a 100-job finish call's 600
    arguments against hiredis' 0.7 µs), and bounds each write with asyncio.wait_for, which
    before 3.12 runs the write in a new task (one more round of the event loop per command)."""
    name = f"Fast{base.__name__}"

    class Packed(base):  # type: ignore[valid-type,misc]
        def pack_command(self, *args: Any) -> list[bytes]:
            # As redis-py's own hiredis serializer (the sync client's): command words split
            # off, one buffer. Anything hiredis refuses (None, bool, lone surrogates from
            # surrogateescape-decoded data) goes through redis-py, which encodes what it can and
            # raises its own DataError for the rest.
            head = args[0]
            if isinstance(head, str) and " " not in head:
                try:
                    return [hiredis.pack_command(args)]
                except (TypeError, UnicodeEncodeError):
                    pass
            return super().pack_command(*args)  # type: ignore[no-any-return]

    cls: type[AbstractConnection] = Packed
    if sys.version_info < (3, 12):

        class InPlace(Packed):
            async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
                limit: float | None = self.socket_timeout  # type: ignore[has-type]
                if not limit:
                    await super().send_packed_command(command, check_health)
                    return
                self.socket_timeout = None  # redis-py's own bound off for this call: ours holds
                try:
                    async with asyncio.timeout(limit) as bound:
                        await super().send_packed_command(command, check_health)
                except TimeoutError:
                    if not bound.expired():
                        raise
                    raise RedisTimeoutError("Timeout writing to socket") from None
                finally:
                    self.socket_timeout = limit

        cls = InPlace
    cls.__name__ = cls.__qualname__ = name
    return cls


class HandOutPool(ConnectionPool):
    """redis-py's pool, without its socket poll each time a connection leaves the pool.

    redis-py polls the socket of every connection it hands out (a read under a zero timeout:
    two rounds of the event loop, 2 of the 5 a command takes, the largest client-side cost of a
    single enqueue) to find one the server closed, or one returned with unread data. redis-py 5
    disconnects a connection whenever a command on it fails or is cancelled between send and
    reply, so a pooled connection never holds unread data; one the server closed while it sat
    in the pool has seen EOF (or a reset) once the event loop ran, which its stream shows
    without a poll: it is reconnected before use, as redis-py would. (The cluster client's
    per-node pools never poll.)"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connection_class = _fast_connection(self.connection_class)

    async def ensure_connection(self, connection: AbstractConnection) -> None:
        reader = getattr(connection, "_reader", None)
        if not isinstance(reader, asyncio.StreamReader):  # not connected yet, or other internals
            await super().ensure_connection(connection)
            return
        # EOF seen (at_eof alone is False while a last message is buffered), a reset, or data
        # no command asked for: stale
        eof = reader.at_eof() or getattr(reader, "_eof", False)
        if eof or reader.exception() is not None or getattr(reader, "_buffer", None):
            await connection.disconnect()
        await connection.connect()  # type: ignore[no-untyped-call]  # a no-op when connected


# How often a Sentinel-backed client in use asks the sentinels again who the master is.
MASTER_CHECK_S = 1.0


class FollowingSentinelPool(SentinelConnectionPool):
    """redis-py asks the sentinels for the master only when it opens a connection and keeps
    using open ones. After a failover that leaves the old master up (SENTINEL FAILOVER, a
    partition) a busy client so wrote to the old master until the sentinels demoted it, about
    10 s later, and every such write was lost. This pool asks again at most every
    MASTER_CHECK_S while in use, in the background (sentinels that hang delay no command), and
    reconnects a connection that is not to the current master."""

    _next_check = 0.0
    _check: asyncio.Task[None] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self.connection_class = _fast_connection(self.connection_class)

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        now = time.monotonic()
        if now >= self._next_check and (self._check is None or self._check.done()):
            self._next_check = now + MASTER_CHECK_S
            self._check = asyncio.create_task(self._recheck_master())
        conn = await super().get_connection(command_name, *keys, **options)
        if self.master_address is not None and (conn.host, conn.port) != tuple(self.master_address):
            try:  # it was in use when the master changed: still to the old one
                await conn.disconnect()
                await conn.connect()
            except BaseException:
                await self.release(conn)
                raise
        return conn

    async def _recheck_master(self) -> None:
        # No sentinel answers: keep the connections we have (the master may be fine).
        with contextlib.suppress(RedisError, OSError):
            await self.get_master_address()  # type: ignore[no-untyped-call]  # drops idle ones if moved

    async def disconnect(self, inuse_connections: bool = True) -> None:
        check = self._check
        if check is not None and check is not asyncio.current_task():  # closing: stop asking
            check.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await check
        await super().disconnect(inuse_connections)


async def at_key_node(redis: Any, key: str) -> dict[str, Any]:
    """Keyword arguments that send a keyless command (TIME, CONFIG GET) to the master serving
    `key` on a cluster (it would go to any node otherwise); none on one Redis."""
    if not is_cluster(redis):
        return {}
    await redis.initialize()  # the slot map, which get_node_from_key reads
    return {"target_nodes": redis.get_node_from_key(key)}


class _SnapshotDict(dict[str, ClusterNode]):
    """A dict whose values() is a list taken now: safe to iterate across awaits while other
    tasks add or pop entries."""

    def values(self) -> list[ClusterNode]:  # type: ignore[override]
        return list(super().values())


class _KeepingNodesManager(NodesManager):
    __slots__ = ()

    def set_nodes(
        self, old: dict[str, ClusterNode], new: dict[str, ClusterNode], remove_old: bool = False
    ) -> None:
        """A node still in a freshly read slot map keeps its ClusterNode (and the connections
        other tasks are using) instead of being replaced by a new one and closed."""
        if old is self.nodes_cache:
            for name, node in list(new.items()):
                kept = old.get(name)
                if kept is not None and kept is not node:
                    kept.server_type = node.server_type
                    new[name] = kept
            for slot, nodes in self.slots_cache.items():
                self.slots_cache[slot] = [new.get(n.name, n) for n in nodes]
        super().set_nodes(old, new, remove_old)


class _HerderClusterPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        token = _IN_REDIS_PY_RETRY.set(True)  # see HerderRedisCluster.aclose
        try:
            return await super().execute(raise_on_error, allow_redirections)
        finally:
            _IN_REDIS_PY_RETRY.reset(token)


def _root_cause(exc: BaseException) -> BaseException:
    while (nxt := exc.__cause__ or exc.__context__) is not None:
        exc = nxt
    return exc


def is_cluster(redis: Any) -> bool:
    """True for redis-py's async cluster client (what `redis_client` builds with redis_cluster)."""
    return isinstance(redis, RedisCluster)


def redis_client(settings: HerderSettings) -> Any:
    """An ArqRedis (a redis.asyncio.Redis) with decoded responses, so arq's Worker accepts it;
    with `redis_cluster`, a redis.asyncio.cluster.RedisCluster with the same options.

    Typed Any: the two clients share the commands Herder uses but no base class."""
    kwargs: dict[str, Any] = {
        "decode_responses": True,
        # Anything in Redis may be corrupt: non-UTF-8 bytes decode to lone surrogates (and encode
        # back unchanged) instead of failing a whole reply, e.g. a claim of several jobs; the
        # readers then reject the one bad value (see models.Job.from_hash).
        "encoding_errors": "surrogateescape",
        "socket_connect_timeout": settings.redis_connect_timeout,
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_keepalive": True,
        # One quick transparent retry of an idempotent reconnect; longer outages are handled by
        # the callers' own back-off loops, which log each state change.
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 1),
        "max_connections": 64,
    }
    if settings.redis_username:
        kwargs["username"] = settings.redis_username
    if settings.redis_password is not None:
        kwargs["password"] = settings.redis_password.get_secret_value()
    url = settings.redis_url
    if settings.redis_tls and url.startswith("redis://"):
        url = "rediss://" + url[len("redis://") :]
    if url.startswith("rediss://"):
        kwargs.update(
            ssl_ca_certs=settings.redis_tls_ca_certs,
            ssl_certfile=settings.redis_tls_certfile,
            ssl_keyfile=settings.redis_tls_keyfile,
            ssl_check_hostname=settings.redis_tls_check_hostname,
            ssl_cert_reqs="required" if settings.redis_tls_ca_certs else "none",
        )
    if settings.redis_cluster:
        _fix_cluster_nodes()
        # The URL names any node; the client reads the slot map from it and routes each command
        # to the master of its key's slot. max_connections is per node here. require_full_coverage
        # (the default) refuses to start on a cluster with an unserved slot instead of failing
        # later on some queues only.
        return HerderRedisCluster.from_url(url, **kwargs)
    if settings.redis_sentinels:
        sentinels = []
        for part in settings.redis_sentinels.split(","):
            host, _, port = part.strip().rpartition(":")
            sentinels.append((host, int(port)))
        kwargs.pop("max_connections")
        if settings.redis_tls:
            kwargs["ssl"] = True
        # A sentinel that accepts but never answers (stopped, partitioned) must not hang every
        # new connection: past the timeout the next sentinel is asked.
        sentinel_kwargs: dict[str, Any] = {
            "socket_connect_timeout": settings.redis_connect_timeout,
            "socket_timeout": settings.redis_connect_timeout,
        }
        if settings.redis_sentinel_username:
            sentinel_kwargs["username"] = settings.redis_sentinel_username
        if settings.redis_sentinel_password is not None:
            sentinel_kwargs["password"] = settings.redis_sentinel_password.get_secret_value()
        sentinel = Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
        master: ArqRedis = sentinel.master_for(
            settings.redis_sentinel_master,
            redis_class=ArqRedis,
            connection_pool_class=FollowingSentinelPool,
            **kwargs,
        )
        return master
    # as ArqRedis.from_url, with the pool above
    client = ArqRedis(connection_pool=HandOutPool.from_url(url, **kwargs))
    client.auto_close_connection_pool = True  # aclose() closes the pool's connections too
    return client
