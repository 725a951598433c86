"""arq on Herder: change `from arq import ...` to `from herder.arq import ...`.

Same names and signatures as arq 0.28 (WorkerSettings classes, func, cron, Retry,
create_pool/ArqRedis.enqueue_job, Job), with Herder's queue underneath: jobs are JSON,
leases and heartbeats recover crashed workers in seconds, failed jobs go to a dead-letter
queue, and `herder up` or the operator autoscales the workers. See docs/migrating-from-arq.md.
"""

from arq.version import VERSION

from herder.arq import logs, typing
from herder.arq.connections import ArqRedis, RedisSettings, create_pool
from herder.arq.cron import cron
from herder.arq.jobs import Job, JobStatus
from herder.arq.worker import Retry, Worker, check_health, func, run_worker

__version__ = VERSION

__all__ = [
    "VERSION",
    "ArqRedis",
    "Job",
    "JobStatus",
    "RedisSettings",
    "Retry",
    "Worker",
    "check_health",
    "create_pool",
    "cron",
    "func",
    "logs",
    "run_worker",
    "typing",
]
