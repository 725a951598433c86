"""Queue-level Prometheus metrics, read from Redis at scrape time.

Worker processes export what they see themselves (herder.metrics); this collector exports what
only Redis knows: queue depth by state, paused flag, the live worker registry (workers, draining,
capacity) and the queue's event counters. Each scrape reads one consistent snapshot per queue
through the client's status Lua script (one round trip per queue), so the numbers match
`herder status` exactly.

The async HerderClient runs on a private event loop in a daemon thread: the collector is called
from prometheus_client's HTTP threads (or any other thread, with or without a running loop), and
the client code, including TLS, ACL and Sentinel settings, is reused instead of duplicated.
`collect` never raises: when Redis cannot be read in time, it yields herder_queue_redis_up 0.

One collector can read several Redis targets (the operator adds one per TaskQueue); a target's
extra labels (e.g. ``{"taskqueue": "ns/name"}``) tell apart queues of the same name.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import threading
import time
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from herder.client import HerderClient, check_queue
from herder.logs import get_logger
from herder.models import QueueStatus
from herder.settings import HerderSettings
from herder.tasks import TaskSet

log = get_logger("herder.queue_metrics")

T = TypeVar("T")

JOB_STATES = ("ready", "scheduled", "waiting", "active", "dead")
# Every counter the Lua scripts keep (lua/*.lua, HINCRBY on the queue's stats hash). Known events
# are exported as 0 before they first happen, so increase()/rate() see the first one.
EVENTS = (
    "enqueued",
    "succeeded",
    "retried",
    "dead",
    "lease_expired",
    "handed_back",
    "stale_finish",
    "cancelled",
    "removed",
    "replayed",
)
DEFAULT_TIMEOUT = 5.0  # seconds for one scrape; below Prometheus' default scrape_timeout (10 s)
DEFAULT_TARGET = "default"
# Status reads in flight per target: enough to hide round-trip latency, few enough that 10k
# queues neither exhaust the connection pool nor starve the workers sharing this Redis.
DEFAULT_CONCURRENCY = 16
# Series are per queue: past this many queues a scrape would be too slow and too large to be
# useful; the rest are left out (logged), not the whole scrape.
DEFAULT_MAX_QUEUES = 5000


@dataclass(frozen=True)
class _Target:
    settings: HerderSettings
    queues: tuple[str, ...] | None  # None: every queue in the queue index
    labels: tuple[tuple[str, str], ...]


@dataclass
class _Reading:
    target: _Target
    up: bool
    seconds: float
    statuses: list[QueueStatus] = field(default_factory=list)


class _LoopThread:
    """An asyncio event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="herder-queue-metrics", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()


class QueueCollector(Collector):
    """A prometheus_client collector of queue metrics read from Redis on every scrape.

    ``QueueCollector(settings)`` reads every known queue; pass ``queues`` to restrict it.
    ``set_target``/``remove_target`` manage further Redis targets. Call ``close()`` when done
    (it stops the private event-loop thread and closes the Redis connections).
    """

    def __init__(
        self,
        settings: HerderSettings | None = None,
        queues: Sequence[str] | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        concurrency: int = DEFAULT_CONCURRENCY,
        max_queues: int = DEFAULT_MAX_QUEUES,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        if concurrency < 1 or max_queues < 1:
            raise ValueError("concurrency and max_queues must be >= 1")
        self.timeout = timeout
        self.concurrency = concurrency
        self.max_queues = max_queues
        self._truncated: set[str] = set()  # targets whose index exceeded max_queues (logged once)
        self._lock = threading.Lock()
        self._targets: dict[str, _Target] = {}
        self._clients: dict[str, tuple[_Target, HerderClient]] = {}  # touched only on the loop
        self._loop: _LoopThread | None = None
        self._closed = False
        self._down: set[str] = set()  # targets whose last read failed
        if settings is not None:
            self.set_target(DEFAULT_TARGET, settings, queues, labels)

    # ---- targets -----------------------------------------------------------------------------

    def set_target(
        self,
        name: str,
        settings: HerderSettings,
        queues: Sequence[str] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        """Add or replace the Redis target `name`. Raises InvalidInput for a bad queue name."""
        checked = None if queues is None else tuple(dict.fromkeys(check_queue(q) for q in queues))
        extra = dict(labels or {})
        reserved = {"queue", "state", "event"} & set(extra)
        if reserved:
            raise ValueError(f"extra label names {sorted(reserved)} are reserved")
        target = _Target(settings=settings, queues=checked, labels=tuple(sorted(extra.items())))
        with self._lock:
            self._targets[name] = target

    def remove_target(self, name: str) -> None:
        with self._lock:
            self._targets.pop(name, None)
            loop = self._loop
        if loop is not None:
            try:
                loop.submit(self._drop_client(name)).result(self.timeout)
            except Exception:
                log.warning(
                    "queue metrics: closing a target's Redis client failed", target=name, exc_info=True
                )

    def targets(self) -> list[str]:
        with self._lock:
            return sorted(self._targets)

    # ---- reading -----------------------------------------------------------------------------

    def _loop_thread(self) -> _LoopThread:
        with self._lock:
            if self._closed:
                raise RuntimeError("collector is closed")
            if self._loop is None:
                self._loop = _LoopThread()
            return self._loop

    async def _drop_client(self, name: str) -> None:
        entry = self._clients.pop(name, None)
        if entry is not None:
            await entry[1].close()

    async def _client(self, name: str, target: _Target) -> HerderClient:
        entry = self._clients.get(name)
        if entry is not None and entry[0] == target:
            return entry[1]
        await self._drop_client(name)
        # Reading needs no task definitions: skip loading the app's (and the built-in) tasks.
        client = HerderClient(target.settings, TaskSet())
        self._clients[name] = (target, client)
        return client

    async def _queue_names(self, name: str, target: _Target, client: HerderClient) -> list[str]:
        if target.queues is not None:
            return list(target.queues)
        names: dict[str, None] = {}
        async for page in client.queue_pages():
            names.update(dict.fromkeys(page))
            if len(names) >= self.max_queues:
                if name not in self._truncated:
                    self._truncated.add(name)
                    log.warning(
                        "queue metrics: queue index larger than max_queues; exporting the first ones",
                        target=name,
                        max_queues=self.max_queues,
                    )
                return sorted(names)[: self.max_queues]
        self._truncated.discard(name)
        return sorted(names)

    async def _read(self, name: str, target: _Target) -> list[QueueStatus]:
        """Status of every queue, at most `concurrency` reads in flight (a pool of readers, not
        one task per queue, so 100k queues cost 16 coroutines, not 100k)."""
        client = await self._client(name, target)
        queues = await self._queue_names(name, target, client)
        out: dict[str, QueueStatus] = {}
        todo = iter(queues)

        async def reader() -> None:
            for q in todo:
                try:
                    out[q] = await client.status(q)
                except (RedisConnectionError, RedisTimeoutError, NoPermissionError):
                    raise  # the target is down (or the role lacks rights): report it as such
                except Exception as exc:  # one corrupt queue must not hide the others
                    log.warning(
                        "queue metrics: skipping a queue that cannot be read", queue=q, error=str(exc)[:200]
                    )

        await asyncio.gather(*(reader() for _ in range(min(self.concurrency, len(queues)))))
        return [out[q] for q in queues if q in out]

    def read(self) -> list[_Reading]:
        """Read every target concurrently; a target that fails or times out reads as down."""
        with self._lock:
            targets = dict(self._targets)
        if not targets:
            return []
        loop = self._loop_thread()
        started = time.monotonic()
        deadline = started + self.timeout
        futures = {name: loop.submit(self._read(name, t)) for name, t in targets.items()}
        readings = []
        for name, fut in futures.items():
            target = targets[name]
            try:
                statuses = fut.result(max(deadline - time.monotonic(), 0.0))
            except Exception as exc:
                fut.cancel()
                if name not in self._down:  # log state changes, not every scrape
                    self._down.add(name)
                    log.warning(
                        "queue metrics: cannot read Redis",
                        target=name,
                        error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
                    )
                readings.append(_Reading(target, False, time.monotonic() - started))
            else:
                if name in self._down:
                    self._down.discard(name)
                    log.info("queue metrics: Redis readable again", target=name)
                readings.append(_Reading(target, True, time.monotonic() - started, statuses))
        return readings

    # ---- prometheus_client interface ---------------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        # Names only: registering must not touch Redis (the registry calls describe, not collect).
        return _Families([]).all()

    def collect(self) -> Iterable[Metric]:
        try:
            readings = self.read()
        except Exception:  # never raise out of a scrape
            log.exception("queue metrics: collect failed")
            readings = []
        extra = sorted({k for r in readings for k, _ in r.target.labels})
        fam = _Families(extra)
        for r in readings:
            tl = dict(r.target.labels)
            ev = [tl.get(k, "") for k in extra]
            fam.up.add_metric(ev, 1.0 if r.up else 0.0)
            fam.seconds.add_metric(ev, r.seconds)
            for s in r.statuses:
                fam.add_status([s.queue, *ev], s)
        return fam.all()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            loop, self._loop = self._loop, None
        if loop is None:
            return

        async def close_all() -> None:
            for name in list(self._clients):
                await self._drop_client(name)

        try:
            loop.submit(close_all()).result(self.timeout)
        except Exception:
            log.warning("queue metrics: closing Redis clients failed", exc_info=True)
        finally:
            loop.stop()


class _Families:
    """The metric families of one scrape; `extra` are the targets' extra label names."""

    def __init__(self, extra: list[str]) -> None:
        q = ["queue", *extra]
        self.jobs = GaugeMetricFamily(
            "herder_queue_jobs",
            "Jobs in the queue by state (ready includes scheduled jobs that are due)",
            labels=[*q, "state"],
        )
        self.paused = GaugeMetricFamily("herder_queue_paused", "1 while the queue is paused", labels=q)
        self.workers = GaugeMetricFamily(
            "herder_queue_workers", "Live workers registered for the queue (draining included)", labels=q
        )
        self.draining = GaugeMetricFamily(
            "herder_queue_workers_draining", "Live workers of the queue that are draining", labels=q
        )
        self.capacity = GaugeMetricFamily(
            "herder_queue_capacity",
            "Job slots of the queue's workers that take new jobs (draining workers excluded)",
            labels=q,
        )
        self.in_flight = GaugeMetricFamily(
            "herder_queue_in_flight", "Jobs running on the queue's workers, as they report", labels=q
        )
        self.events = CounterMetricFamily(
            "herder_queue_events", "Job events counted by the queue's Lua scripts", labels=[*q, "event"]
        )
        self.up = GaugeMetricFamily(
            "herder_queue_redis_up", "1 when the last scrape could read the queues from Redis", labels=extra
        )
        self.seconds = GaugeMetricFamily(
            "herder_queue_scrape_duration_seconds", "Time the last scrape took to read Redis", labels=extra
        )

    def all(self) -> list[Metric]:
        return [
            self.jobs,
            self.paused,
            self.workers,
            self.draining,
            self.capacity,
            self.in_flight,
            self.events,
            self.up,
            self.seconds,
        ]

    def add_status(self, lv: list[str], s: QueueStatus) -> None:
        for state in JOB_STATES:
            self.jobs.add_metric([*lv, state], float(getattr(s, state)))
        self.paused.add_metric(lv, 1.0 if s.paused else 0.0)
        self.workers.add_metric(lv, float(len(s.workers)))
        self.draining.add_metric(lv, float(sum(1 for w in s.workers if w.draining)))
        self.capacity.add_metric(lv, float(sum(w.capacity for w in s.workers if not w.draining)))
        self.in_flight.add_metric(lv, float(sum(w.in_flight for w in s.workers)))
        # Only known events: the stats hash is writable by producers (docs/security.md), and an
        # arbitrary field must not become a new series.
        for event in EVENTS:
            self.events.add_metric([*lv, event], float(s.counters.get(event, 0)))


def serve(
    settings: HerderSettings,
    queues: list[str] | None,
    port: int,
    *,
    addr: str = "0.0.0.0",
    stop: threading.Event | None = None,
) -> None:
    """Serve the queue metrics on http://addr:port/metrics until SIGTERM/SIGINT (or `stop` is set)."""
    registry = CollectorRegistry()
    collector = QueueCollector(settings, queues)
    registry.register(collector)
    ProcessCollector(registry=registry)
    server, thread = start_http_server(port, addr=addr, registry=registry)
    log.info("serving queue metrics", port=port, queues=queues or "all")
    stop = stop or threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        collector.close()
