"""The operator's Prometheus endpoint (HERDER_METRICS_PORT, as the chart's Service expects).

It serves two things from one registry:
- the queue collector (herder.queue_metrics) with one Redis target per managed TaskQueue, added
  when the operator admits the TaskQueue and removed when it is deleted or refused;
- the operator's own metrics: reconcile duration and errors, desired/current/max replicas,
  draining workers and decisions by reason.

Series carry `taskqueue` ("namespace/name") and `queue`. Not `namespace`: Prometheus (and the
Prometheus Operator) set that target label to the operator's own namespace and would rename ours.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.process_collector import ProcessCollector

from herder.queue_metrics import QueueCollector
from herder.settings import HerderSettings

PORT_ENV = "HERDER_METRICS_PORT"
SCRAPE_TIMEOUT = 4.0  # per Redis target, under the chart's scrapeTimeout (10 s)

# Decision reasons are free text with numbers; the metric gets their kind (bounded).
_KINDS = (
    ("paused", r"^paused"),
    ("redis_unreachable", r"^Redis unreachable"),
    ("min_replicas", r"^raise to minReplicas"),
    ("max_replicas", r"^lower to maxReplicas"),
    ("scale_up_held", r"^scale-up to \d+ held"),
    ("scale_up", r"^scale up "),
    ("scale_down_held", r"^scale-down to \d+ held"),
    ("scale_down", r"^scale down "),
    ("scale_to_zero_held", r"^holding \d+: scale to zero"),
    ("steady", r"^steady at "),
)


def reason_kind(reason: str) -> str:
    """The bounded kind of a policy decision reason ("other" for anything unknown)."""
    for kind, pattern in _KINDS:
        if re.match(pattern, reason):
            return kind
    return "other"


def metrics_port(environ: dict[str, str] | None = None) -> int | None:
    """HERDER_METRICS_PORT as a port number; unset, empty or 0 turns the endpoint off."""
    raw = (os.environ if environ is None else environ).get(PORT_ENV, "").strip()
    if not raw:
        return None
    port = int(raw)  # a bad value fails the operator's start-up loudly, not silently
    if not 0 <= port <= 65535:
        raise ValueError(f"{PORT_ENV}={raw}: not a port number")
    return port or None


@dataclass(frozen=True)
class Identity:
    namespace: str
    name: str
    queue: str

    @property
    def taskqueue(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def labels(self) -> tuple[str, str]:
        return (self.taskqueue, self.queue)


class OperatorMetrics:
    """Registry, collectors and HTTP server of one operator process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        tq = ["taskqueue", "queue"]
        self.reconcile_seconds = Histogram(
            "herder_operator_reconcile_duration_seconds",
            "Time one reconcile step took (read queue, decide, act)",
            tq,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.reconcile_errors = Counter(
            "herder_operator_reconcile_errors_total",
            "Reconcile steps that failed, by exception type",
            [*tq, "error"],
            registry=r,
        )
        self.desired = Gauge(
            "herder_operator_desired_replicas", "Serving workers the policy wants", tq, registry=r
        )
        self.current = Gauge(
            "herder_operator_current_replicas",
            "Replicas of the worker pool (draining included)",
            tq,
            registry=r,
        )
        self.max = Gauge("herder_operator_max_replicas", "spec.maxReplicas", tq, registry=r)
        self.min = Gauge("herder_operator_min_replicas", "spec.minReplicas", tq, registry=r)
        self.draining = Gauge(
            "herder_operator_draining_workers", "Workers draining before removal", tq, registry=r
        )
        self.decisions = Counter(
            "herder_operator_decisions_total", "Policy decisions by kind", [*tq, "reason"], registry=r
        )
        self.managed = Gauge(
            "herder_operator_taskqueues", "TaskQueues the operator manages (admitted)", registry=r
        )
        self.queues = QueueCollector(timeout=SCRAPE_TIMEOUT)
        r.register(self.queues)
        ProcessCollector(registry=r)
        self._known: dict[str, Identity] = {}  # TaskQueue uid -> identity
        self._lock = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # ---- TaskQueues ------------------------------------------------------------------------------

    def track(self, uid: str, who: Identity, settings: HerderSettings) -> None:
        """Add (or update) a TaskQueue: its queue collector target and the operator series."""
        with self._lock:
            old = self._known.get(uid)
            self._known[uid] = who
            self.managed.set(len(self._known))
        if old is not None and old != who:
            self._drop_series(old)
        self.queues.set_target(uid, settings, [who.queue], {"taskqueue": who.taskqueue})

    def forget(self, uid: str) -> None:
        """A TaskQueue is gone (or refused): no more series for it."""
        with self._lock:
            who = self._known.pop(uid, None)
            self.managed.set(len(self._known))
        self.queues.remove_target(uid)
        if who is not None:
            self._drop_series(who)

    def _drop_series(self, who: Identity) -> None:
        for g in (self.desired, self.current, self.max, self.min, self.draining, self.reconcile_seconds):
            try:
                g.remove(*who.labels)
            except KeyError:
                pass
        for counter in (self.decisions, self.reconcile_errors):
            for labels in list(counter._metrics):  # prometheus_client keeps children by label tuple
                if labels[:2] == who.labels:
                    counter.remove(*labels)

    def step(
        self,
        who: Identity,
        seconds: float,
        *,
        replicas: int,
        desired: int,
        draining: int,
        reason: str,
        min_replicas: int,
        max_replicas: int,
    ) -> None:
        lv = who.labels
        self.reconcile_seconds.labels(*lv).observe(seconds)
        self.current.labels(*lv).set(replicas)
        self.desired.labels(*lv).set(desired)
        self.draining.labels(*lv).set(draining)
        self.min.labels(*lv).set(min_replicas)
        self.max.labels(*lv).set(max_replicas)
        self.decisions.labels(*lv, reason_kind(reason)).inc()

    def error(self, who: Identity, exc: BaseException) -> None:
        self.reconcile_errors.labels(*who.labels, type(exc).__name__).inc()

    # ---- HTTP ------------------------------------------------------------------------------------

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Serve /metrics in a daemon thread; returns the bound port (0 picks a free one)."""
        self._server, self._thread = start_http_server(port, addr=addr, registry=self.registry)
        return int(self._server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._server = None
        self.queues.close()


METRICS: OperatorMetrics | None = None  # set by the kopf start-up handler


def start(port: int | None) -> OperatorMetrics:
    """Create the process's metrics (once) and serve them when a port is given."""
    global METRICS
    if METRICS is None:
        METRICS = OperatorMetrics()
        if port is not None:
            METRICS.serve(port)
    return METRICS


def stop() -> None:
    global METRICS
    if METRICS is not None:
        METRICS.close()
        METRICS = None
