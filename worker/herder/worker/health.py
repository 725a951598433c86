"""Health of the worker's link to Redis and of its event loop: outage detection and bounded
reconnect back-off, the persistence warning, and the blocked-loop watchdog."""

from __future__ import annotations

import asyncio
import contextlib
import time

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from herder import metrics
from herder.connection import CLUSTER_OUTAGE_ERRORS, at_key_node, is_cluster
from herder.logs import get_logger
from herder.worker.state import WorkerState

log = get_logger("herder.worker")

# Errors that mean "Redis is unreachable right now", as opposed to a bug in a script.
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    asyncio.TimeoutError,
    *CLUSTER_OUTAGE_ERRORS,
)
# Replies of a server that takes no writes for now: a master demoted in a failover (READONLY;
# a blocked BLPOP gets UNBLOCKED), one short of the replicas `min-replicas-to-write` asks for
# (NOREPLICAS), a replica cut off from its master (MASTERDOWN). An outage too, not a bug.
UNAVAILABLE_REPLIES = ("NOREPLICAS", "MASTERDOWN", "UNBLOCKED")


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` means Redis cannot serve us right now (retry with back-off)."""
    if isinstance(exc, (*OUTAGE_ERRORS, ReadOnlyError)):
        return True
    return isinstance(exc, ResponseError) and str(exc).startswith(UNAVAILABLE_REPLIES)


LOOP_BLOCK_THRESHOLD_S = 1.0


class HealthMixin(WorkerState):
    async def _check_persistence(self) -> None:
        try:
            at = await at_key_node(self.redis, self.keyspace.ready)  # on a cluster: this queue's master
            cfg = await self.redis.config_get("appendonly", **at)
            cfg.update(await self.redis.config_get("save", **at))
        except OUTAGE_ERRORS:
            raise
        except RedisError as exc:  # CONFIG is often denied to least-privilege ACL users
            log.info("cannot read Redis persistence settings", error=str(exc))
            return
        if cfg.get("appendonly") != "yes" and not cfg.get("save"):
            self.persistence_warning = (
                "Redis persistence is off: pending jobs will be lost if Redis restarts; "
                "enable AOF (appendonly yes, appendfsync everysec)"
            )
            log.warning(self.persistence_warning, appendonly=cfg.get("appendonly"), save=cfg.get("save"))

    async def _redis_down(self, exc: BaseException) -> None:
        metrics.REDIS_UP.labels(self.herder_queue).set(0)
        metrics.REDIS_ERRORS.labels(self.herder_queue).inc()
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = now
            log.error("redis unreachable; jobs keep running, retrying", error=f"{type(exc).__name__}: {exc}")
        self._healthy_since = None
        self._next_hb = 0.0
        if isinstance(exc, ReadOnlyError) and not is_cluster(self.redis):
            # A plain URL (a DNS name that moves to the new master) still connected to the old
            # one: new connections resolve it again. (Sentinel pools do this themselves.)
            with contextlib.suppress(RedisError, OSError):
                await self.redis.connection_pool.disconnect()
        # Bounded back-off: 0.1 s doubling to 2 s, so Redis is retried well within 10 s of returning.
        down_for = now - self._outage_since
        await self._sleep_or_stop(min(2.0, 0.1 * 2 ** min(down_for, 5)))

    def _redis_up(self) -> None:
        now = time.monotonic()
        if self._outage_since is not None:
            log.warning("redis reachable again", down_s=round(now - self._outage_since, 2))
            self._outage_since = None
        if self._healthy_since is None:
            self._healthy_since = now
        metrics.REDIS_UP.labels(self.herder_queue).set(1)

    async def _sleep_or_stop(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stop_event.wait(), seconds)

    async def _loop_watchdog(self) -> None:
        """A task that blocks the event loop delays every other job: report it."""
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(0.25)
            lag = time.monotonic() - t0 - 0.25
            metrics.LOOP_LAG.labels(self.herder_queue).set(max(lag, 0))
            if lag > LOOP_BLOCK_THRESHOLD_S:
                metrics.LOOP_BLOCKED.labels(self.herder_queue).inc()
                log.warning(
                    "event loop blocked: a task ran synchronous code; run it in a thread",
                    blocked_s=round(lag, 2),
                    jobs=list(self.running),
                )
