"""Redis key names. Every key of one queue carries the queue's hash tag ``{queue}``,
so a whole queue lives in one Redis Cluster slot and its Lua scripts stay legal there."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# Always test with `fullmatch` (via the helpers below): `match` lets `$` accept a trailing newline.
QUEUE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$")
# Task names end up in job hashes, cron job ids and metric labels: same alphabet as ids, shorter.
TASK_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9._:-]{0,127}$")
# Ids Herder generates itself (cron ticks) start with this; clients may not enqueue under it.
RESERVED_ID_PREFIX = "herder-"


def valid_queue(name: object) -> bool:
    return isinstance(name, str) and QUEUE_RE.fullmatch(name) is not None


def split_queue_names(raw: Iterable[object]) -> tuple[list[str], list[object]]:
    """Split members read from the queue index into valid queue names and everything else."""
    valid: list[str] = []
    invalid: list[object] = []
    for name in raw:
        (valid if valid_queue(name) else invalid).append(name)  # type: ignore[arg-type]
    return valid, invalid


def valid_id(job_id: object) -> bool:
    return isinstance(job_id, str) and ID_RE.fullmatch(job_id) is not None


def valid_task_name(name: object) -> bool:
    return isinstance(name, str) and TASK_RE.fullmatch(name) is not None


def reserved_id(job_id: str) -> bool:
    return job_id.lower().startswith(RESERVED_ID_PREFIX)


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

    def recent(self, state: str) -> str:
        """Zset: id -> finish time (ms) of the latest `succeeded` or `cancelled` jobs, for
        browsing (those states have no index of their own); bounded by RECENT_KEPT, advisory
        (an entry may outlive its job: readers check the job's state)."""
        return f"{self.base}:recent:{state}"

    @property
    def trend(self) -> str:
        """Hash: minute (epoch // 60) -> one trend sample (see lua/trend.lua); bounded, with a TTL."""
        return f"{self.base}:trend"

    @property
    def ready(self) -> str:
        return f"{self.base}:ready"

    @property
    def wake(self) -> str:
        return f"{self.base}:wake"

    @property
    def cron_secret(self) -> str:
        """The workers' shared secret for cron tick ids (herder.cron.cron_tick_id); producers'
        ACL does not cover it (herder.acl), so they cannot predict a tick's id."""
        return f"{self.base}:cron-secret"

    @property
    def workers(self) -> str:
        return f"{self.base}:workers"


def queues_key(prefix: str) -> str:
    """The set of known queue names (the only key outside a queue's slot)."""
    return f"{prefix}:queues"


def api_tokens_key(prefix: str) -> str:
    """The HTTP API's token records (a hash: token id -> JSON with the token's sha256, scopes)."""
    return f"{prefix}:api:tokens"
