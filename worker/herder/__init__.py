"""Herder: Redis-backed task queues for long, expensive tasks, on arq workers."""

from __future__ import annotations

__version__ = "0.1.0"

from herder.backoff import Backoff
from herder.errors import InvalidInput, NotFound, PermanentError, RetryableError
from herder.models import Job, JobState, QueueStatus, WorkerInfo
from herder.settings import HerderSettings
from herder.tasks import JobContext, Task, TaskSet

__all__ = [
    "Backoff",
    "HerderSettings",
    "InvalidInput",
    "Job",
    "JobContext",
    "JobState",
    "NotFound",
    "PermanentError",
    "QueueStatus",
    "RetryableError",
    "Task",
    "TaskSet",
    "WorkerInfo",
    "__version__",
]
