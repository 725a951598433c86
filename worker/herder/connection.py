"""Builds the Redis client from settings: URL, ACL user/password, TLS, Sentinel and Cluster."""

from __future__ import annotations

from typing import Any

from arq.connections import ArqRedis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import ClusterDownError, ClusterError, SlotNotCoveredError, TryAgainError
from redis.retry import Retry

from herder.settings import HerderSettings

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
        # The URL names any node; the client reads the slot map from it and routes each command
        # to the master of its key's slot. max_connections is per node here. require_full_coverage
        # (the default) refuses to start on a cluster with an unserved slot instead of failing
        # later on some queues only.
        return RedisCluster.from_url(url, **kwargs)
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
        timeouts = {"socket_connect_timeout": settings.redis_connect_timeout}
        timeouts["socket_timeout"] = settings.redis_connect_timeout
        sentinel = Sentinel(sentinels, sentinel_kwargs=timeouts)  # type: ignore[no-untyped-call]
        master: ArqRedis = sentinel.master_for(settings.redis_sentinel_master, redis_class=ArqRedis, **kwargs)
        return master
    client: ArqRedis = ArqRedis.from_url(url, **kwargs)
    return client
