"""Prometheus metrics of a worker process (served on --metrics-port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

UNKNOWN_TASK = "<unknown>"  # the one label value every unregistered task name folds into
JOBS = Counter("herder_jobs_total", "Finished job attempts by outcome", ["queue", "task", "outcome"])
JOB_SECONDS = Histogram(
    "herder_job_duration_seconds",
    "Wall time of job attempts",
    ["queue", "task"],
    buckets=(0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600, 7200),
)
IN_FLIGHT = Gauge("herder_worker_in_flight", "Jobs running in this worker", ["queue"])
CAPACITY = Gauge("herder_worker_capacity", "Concurrent job slots of this worker", ["queue"])
DRAINING = Gauge("herder_worker_draining", "1 while this worker drains", ["queue"])
REDIS_UP = Gauge("herder_worker_redis_up", "1 while Redis answers this worker", ["queue"])
REDIS_ERRORS = Counter("herder_worker_redis_errors_total", "Redis calls that failed", ["queue"])
LOOP_BLOCKED = Counter(
    "herder_event_loop_blocked_total", "Times a task blocked the worker's event loop for over 1 s", ["queue"]
)
LOOP_LAG = Gauge("herder_event_loop_lag_seconds", "Last measured event-loop lag", ["queue"])
STALE_FINISH = Counter(
    "herder_worker_stale_finish_total",
    "Results rejected because the lease had moved to another worker",
    ["queue"],
)
