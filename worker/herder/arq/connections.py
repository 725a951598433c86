"""An arq-style producer over Herder's queue: `create_pool()` returns an `ArqRedis` whose
`enqueue_job()` writes a Herder job (one atomic script call), so a plain arq producer
moves to Herder by changing its import."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from arq.connections import RedisSettings, log_redis_info
from arq.constants import default_queue_name, expires_extra_ms
from arq.jobs import JobDef, JobResult
from pydantic import SecretStr
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import RedisError

from herder.arq.codec import arq_queue_of, datetime_ms, encode_call, herder_queue, to_ms
from herder.arq.jobs import Job, job_def
from herder.client import HerderClient
from herder.errors import IdConflict, InvalidInput
from herder.models import Job as HerderJob
from herder.settings import HerderSettings
from herder.tasks import Task, TaskSet

__all__ = [
    "ArqRedis",
    "ClusterArqRedis",
    "RedisSettings",
    "create_pool",
    "herder_client_for",
    "log_redis_info",
    "settings_for",
]

logger = logging.getLogger("arq.connections")
# arq counts tries itself (`max_tries`, checked by the worker before each run), so the job
# carries Herder's largest attempt budget and the worker's setting decides at run time.
OPEN_MAX_ATTEMPTS = 100


class OpenTaskSet(TaskSet):
    """A producer that does not import the worker's functions (as in arq) may enqueue any
    function name; the worker refuses unknown names when it claims the job."""

    def get(self, name: str) -> Task:
        if name in self:
            return super().get(name)
        if not name or len(name) > 200:
            raise InvalidInput(f"invalid function name {name[:50]!r}")
        return Task(name=name, fn=_never_run, max_attempts=OPEN_MAX_ATTEMPTS)


async def _never_run(_ctx: Any, _payload: Any) -> None:  # pragma: no cover - producer side only
    raise RuntimeError("producer-side placeholder task")


def settings_for(source: RedisSettings | Redis | None) -> HerderSettings:
    """Herder settings (environment first) pointed at the server an arq RedisSettings or an
    existing client points at."""
    base = HerderSettings()
    if source is None:
        return base
    if isinstance(source, Redis):
        kw = source.connection_pool.connection_kwargs
        host, port, db = kw.get("host", "localhost"), kw.get("port", 6379), kw.get("db", 0)
        username, password = kw.get("username"), kw.get("password")
        ssl = "SSL" in source.connection_pool.connection_class.__name__
    else:
        if source.sentinel or not isinstance(source.host, str):
            raise InvalidInput(
                "herder.arq: use HERDER_REDIS_SENTINELS for Sentinel, not RedisSettings.sentinel"
            )
        host, port, db = source.host, source.port, source.database
        username, password, ssl = source.username, source.password, source.ssl
    scheme = "rediss" if ssl else "redis"
    update: dict[str, Any] = {"redis_url": f"{scheme}://{quote(str(host))}:{port}/{db}"}
    if username:
        update["redis_username"] = username
    if password:
        update["redis_password"] = SecretStr(password)
    return base.model_copy(update=update)


_clients: weakref.WeakKeyDictionary[Redis, HerderClient] = weakref.WeakKeyDictionary()


def herder_client_for(redis: Redis) -> HerderClient:
    """A Herder client on the same server as `redis` (with decoded replies, which Herder's
    code expects), created once per client."""
    if isinstance(redis, ArqRedis | ClusterArqRedis):
        return redis.herder
    client = _clients.get(redis)
    if client is None:
        client = HerderClient(HerderSettings(), OpenTaskSet(), redis=_decoded(redis))
        _clients[redis] = client
    return client


def _decoded(redis: Redis) -> Redis:
    pool = redis.connection_pool
    kwargs = {**pool.connection_kwargs, "decode_responses": True}
    return Redis(connection_pool=ConnectionPool(connection_class=pool.connection_class, **kwargs))


class ArqRedis(Redis):
    """arq's ArqRedis (a redis client) whose jobs go to Herder.

    Jobs are JSON, not pickle: `job_serializer`/`job_deserializer` are accepted for
    signature compatibility and ignored (with a warning)."""

    def __init__(
        self,
        pool_or_conn: ConnectionPool | None = None,
        job_serializer: Any = None,
        job_deserializer: Any = None,
        default_queue_name: str = default_queue_name,
        expires_extra_ms: int = expires_extra_ms,
        *,
        herder_settings: HerderSettings | None = None,
        native_tasks: TaskSet | None = None,
        herder_client: HerderClient | None = None,
        **kwargs: Any,
    ) -> None:
        if pool_or_conn is not None:
            kwargs["connection_pool"] = pool_or_conn
        super().__init__(**kwargs)
        self.job_serializer = job_serializer
        self.job_deserializer = job_deserializer
        self.default_queue_name = default_queue_name
        self.expires_extra_ms = expires_extra_ms
        self._herder: HerderClient | None = herder_client
        self._owns_herder = herder_client is None
        self.herder_settings = herder_settings
        # Inside a native Herder worker: its tasks take their payload as keyword arguments.
        self.native_tasks = native_tasks
        if job_serializer is not None or job_deserializer is not None:
            logger.warning("herder.arq stores jobs as JSON: job_serializer/job_deserializer are ignored")

    @property
    def herder(self) -> HerderClient:
        if self._herder is None:
            tasks = OpenTaskSet(self.native_tasks) if self.native_tasks is not None else OpenTaskSet()
            settings = self.herder_settings or HerderSettings()
            self._herder = HerderClient(settings, tasks, redis=_decoded(self))
        return self._herder

    async def enqueue_job(
        self,
        function: str,
        *args: Any,
        _job_id: str | None = None,
        _queue_name: str | None = None,
        _defer_until: datetime | None = None,
        _defer_by: int | float | timedelta | None = None,
        _expires: int | float | timedelta | None = None,
        _job_try: int | None = None,
        **kwargs: Any,
    ) -> Job | None:
        """Enqueue `function(ctx, *args, **kwargs)`. Returns a Job, or None when a job with
        this id already exists (pending, running, or finished with its result kept)."""
        if _defer_until is not None and _defer_by is not None:
            raise InvalidInput("use either '_defer_until' or '_defer_by' or neither, not both")
        queue_name = _queue_name or self.default_queue_name
        enqueue_ms = _now_ms()
        defer_ms = to_ms(_defer_by)
        if _defer_until is not None:
            score = datetime_ms(_defer_until)
        elif defer_ms:
            score = enqueue_ms + defer_ms
        else:
            score = enqueue_ms
        at = score / 1000 if score > enqueue_ms else None
        if self.native_tasks is not None and function in self.native_tasks:
            # A Herder task: its payload is the keyword arguments, validated by its model.
            if args or _job_try is not None or _expires is not None:
                raise InvalidInput(
                    f"task '{function}' is a Herder task: pass its payload as keyword arguments "
                    "(no positional arguments, _job_try or _expires)"
                )
            try:
                res = await self.herder.enqueue(
                    herder_queue(queue_name), function, kwargs or None, id=_job_id, at=at
                )
            except IdConflict:  # arq's contract: an existing job id is "not enqueued", never an error
                return None
            return Job(res.id, self, _queue_name=queue_name) if res.created else None
        meta: dict[str, Any] = {"enqueue_ms": enqueue_ms, "score": score}
        if _job_try is not None:
            meta["job_try"] = int(_job_try)
        expires_ms = to_ms(_expires)
        if expires_ms is not None:
            meta["expires_at_ms"] = enqueue_ms + expires_ms
        payload = encode_call(function, args, kwargs, meta)
        try:
            res = await self.herder.enqueue(
                herder_queue(queue_name),
                function,
                payload,
                id=_job_id,
                at=at,
            )
        except IdConflict:  # the envelope carries enqueue time: a re-enqueue always differs
            return None
        if not res.created:
            return None
        return Job(res.id, self, _queue_name=queue_name)

    async def queued_jobs(self, *, queue_name: str | None = None) -> list[JobDef]:
        """Pending jobs of a queue (ready and scheduled), in no particular order."""
        client = self.herder
        keys = client.keys(herder_queue(queue_name or self.default_queue_name))
        async with client.redis.pipeline(transaction=False) as pipe:
            pipe.zrange(keys.ready, 0, -1)
            pipe.zrange(f"{keys.base}:scheduled", 0, -1)
            ready, sched = await pipe.execute()
        out = []
        for jid in [*ready, *sched]:
            info = await Job(jid, self, _queue_name=queue_name or self.default_queue_name).info()
            if info is not None:
                out.append(info)
        return out

    async def all_job_results(self) -> list[JobResult]:
        """Finished jobs (with their results) of every queue, oldest enqueue first. Scans job
        keys: meant for tests and small queues, as arq's is."""
        client = self.herder
        out: list[JobResult] = []
        for q in await client.queues():
            keys = client.keys(q)
            async for key in client.redis.scan_iter(match=f"{keys.base}:job:*", count=500):
                raw = await client.redis.hgetall(key)
                if raw.get("state") in ("succeeded", "dead", "cancelled"):
                    info = job_def(HerderJob.from_hash(raw), arq_queue_of(q))
                    if isinstance(info, JobResult):
                        out.append(info)
        return sorted(out, key=lambda r: r.enqueue_time)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        if self._herder is not None and self._owns_herder:
            await self._herder.close()
        self._herder = None
        await super().aclose(close_connection_pool)

    async def close(self, close_connection_pool: bool | None = None) -> None:
        await self.aclose(close_connection_pool)


class ClusterArqRedis:
    """ctx['redis'] of a Herder worker on Redis Cluster. arq's ArqRedis is a single-node client
    (a redis.asyncio.Redis), so this offers its job methods (enqueue_job, queued_jobs,
    all_job_results) over the worker's cluster client; any other attribute is the cluster
    client's, so raw commands route by key as usual."""

    enqueue_job = ArqRedis.enqueue_job
    queued_jobs = ArqRedis.queued_jobs
    all_job_results = ArqRedis.all_job_results

    def __init__(
        self, cluster: Any, herder_client: HerderClient, default_queue_name: str, native_tasks: TaskSet
    ):
        self._cluster = cluster
        self.herder = herder_client
        self.default_queue_name = default_queue_name
        self.native_tasks = native_tasks

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cluster, name)


CLUSTER_REFUSED = (
    "herder.arq's {what} is a single-node Redis client (arq's API) and HERDER_REDIS_CLUSTER is "
    "set: on Redis Cluster enqueue with herder.HerderClient and run `herder worker` (whose "
    "ctx['redis'] still offers enqueue_job)"
)


def refuse_cluster(settings: HerderSettings, what: str) -> None:
    if settings.redis_cluster:
        raise InvalidInput(CLUSTER_REFUSED.format(what=what))


def _now_ms() -> int:
    return int(time.time() * 1000)


async def create_pool(
    settings_: RedisSettings | None = None,
    *,
    retry: int = 0,
    job_serializer: Any = None,
    job_deserializer: Any = None,
    default_queue_name: str = default_queue_name,
    expires_extra_ms: int = expires_extra_ms,
) -> ArqRedis:
    """arq's create_pool: connect (retrying `conn_retries` times) and return an ArqRedis."""
    refuse_cluster(HerderSettings(), "create_pool")
    settings = settings_ or RedisSettings()
    if settings.sentinel or not isinstance(settings.host, str):
        raise InvalidInput("herder.arq: use HERDER_REDIS_SENTINELS for Sentinel, not RedisSettings.sentinel")
    while True:
        pool = ArqRedis(
            job_serializer=job_serializer,
            job_deserializer=job_deserializer,
            default_queue_name=default_queue_name,
            expires_extra_ms=expires_extra_ms,
            host=settings.host,
            port=settings.port,
            unix_socket_path=settings.unix_socket_path,
            socket_connect_timeout=settings.conn_timeout,
            ssl=settings.ssl,
            ssl_keyfile=settings.ssl_keyfile,
            ssl_certfile=settings.ssl_certfile,
            ssl_cert_reqs=settings.ssl_cert_reqs,
            ssl_ca_certs=settings.ssl_ca_certs,
            ssl_ca_data=settings.ssl_ca_data,
            ssl_check_hostname=settings.ssl_check_hostname,
            retry=settings.retry,
            retry_on_timeout=settings.retry_on_timeout,
            retry_on_error=settings.retry_on_error,
            max_connections=settings.max_connections,
            db=settings.database,
            username=settings.username,
            password=settings.password,
            encoding="utf8",
        )
        try:
            await pool.ping()
        except (TimeoutError, ConnectionError, OSError, RedisError) as exc:
            await pool.aclose()
            if retry >= settings.conn_retries:
                raise
            logger.warning(
                "redis connection error %s:%s %s, %s retries remaining",
                settings.host,
                settings.port,
                exc,
                settings.conn_retries - retry,
            )
            await asyncio.sleep(settings.conn_retry_delay)
            retry += 1
        else:
            if retry > 0:
                logger.info("redis connection successful")
            return pool
