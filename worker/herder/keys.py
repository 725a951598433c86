"""Redis key names. Every key of one queue carries the queue's hash tag ``{queue}``,
so a whole queue lives in one Redis Cluster slot and its Lua scripts stay legal there."""

from __future__ import annotations

import re
from dataclasses import dataclass

QUEUE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$")


@dataclass(frozen=True)
class QueueKeys:
    prefix: str
    queue: str

    @property
    def base(self) -> str:
        return f"{self.prefix}:{{{self.queue}}}"

    def job(self, job_id: str) -> str:
        return f"{self.base}:job:{job_id}"

    def log(self, job_id: str) -> str:
        return f"{self.base}:log:{job_id}"

    def worker(self, worker_id: str) -> str:
        return f"{self.base}:worker:{worker_id}"

    def control(self, worker_id: str) -> str:
        return f"{self.base}:ctl:{worker_id}"

    @property
    def ready(self) -> str:
        return f"{self.base}:ready"

    @property
    def wake(self) -> str:
        return f"{self.base}:wake"

    @property
    def workers(self) -> str:
        return f"{self.base}:workers"


def queues_key(prefix: str) -> str:
    """The set of known queue names (the only key outside a queue's slot)."""
    return f"{prefix}:queues"
