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


# Every fixed key of a queue, in one place: name -> what it holds. Lua scripts receive the ones
# they touch as KEYS, in the order of their header's `-- KEYS:` line (see scripts.py), and see
# each as K_<NAME> (e.g. K_READY). All carry the queue's hash tag: one Redis Cluster slot.
QUEUE_KEYS: dict[str, str] = {
    "ready": "zset: ready jobs without capability requirements (score: priority, then FIFO)",
    "readyc": "zset: ready jobs that require capabilities (same scores)",
    "scheduled": "zset: jobs waiting for their run-at or retry time (score: due, ms)",
    "waiting": "set: jobs waiting on their parents",
    "active": "zset: running jobs (score: lease expiry, ms)",
    "dead": "zset: the dead-letter queue (score: time of death, ms)",
    "stats": "hash: event counters (enqueued, succeeded, retried, dead, ...); enqueued is also the FIFO sequence",
    "wake": "list: wake-up tokens idle workers block on",
    "workers": "zset: live workers (score: last heartbeat, ms)",
    "paused": "string: present while the queue is paused",
    "trend": "hash: minute -> trend sample (lua/trend.lua), bounded, with a TTL",
    "cron-secret": "string: the workers' secret keying cron tick ids (producers cannot read it)",
}
# Key families with one key per job or worker: `<base>:<family>:<id>`. Scripts derive these
# from ARGV[1] (the key base) through generated helpers (job_key(id), log_key(id), ...): ids
# are data, so they cannot be declared up front; the shared hash tag keeps them in the slot.
KEY_FAMILIES: dict[str, str] = {
    "job": "hash: one job (fields: see models.Job.from_hash)",
    "log": "list: a job's event log (capped)",
    "children": "set: jobs waiting on this job",
    "worker": "hash: one worker's registry entry (expires after 3 leases without heartbeat)",
    "ctl": "list: control messages to one worker (drain, cancel)",
    "recent": "zset, one per state (succeeded, cancelled): latest finished ids for browsing",
}


@dataclass(frozen=True)
class QueueKeys:
    prefix: str
    queue: str

    @property
    def base(self) -> str:
        return f"{self.prefix}:{{{self.queue}}}"

    def key(self, name: str) -> str:
        """A fixed key of the queue by its name in QUEUE_KEYS."""
        if name not in QUEUE_KEYS:
            raise KeyError(f"unknown queue key {name!r}")
        return f"{self.base}:{name}"

    def member(self, family: str, ident: str) -> str:
        if family not in KEY_FAMILIES:
            raise KeyError(f"unknown key family {family!r}")
        return f"{self.base}:{family}:{ident}"

    def job(self, job_id: str) -> str:
        return self.member("job", job_id)

    def log(self, job_id: str) -> str:
        return self.member("log", job_id)

    def children(self, job_id: str) -> str:
        return self.member("children", job_id)

    def worker(self, worker_id: str) -> str:
        return self.member("worker", worker_id)

    def control(self, worker_id: str) -> str:
        return self.member("ctl", worker_id)

    @property
    def ready(self) -> str:
        return self.key("ready")

    @property
    def readyc(self) -> str:
        return self.key("readyc")

    @property
    def scheduled(self) -> str:
        return self.key("scheduled")

    @property
    def waiting(self) -> str:
        return self.key("waiting")

    @property
    def active(self) -> str:
        return self.key("active")

    @property
    def dead(self) -> str:
        return self.key("dead")

    @property
    def stats(self) -> str:
        return self.key("stats")

    @property
    def wake(self) -> str:
        return self.key("wake")

    @property
    def workers(self) -> str:
        return self.key("workers")

    @property
    def paused(self) -> str:
        return self.key("paused")

    def recent(self, state: str) -> str:
        """Zset: id -> finish time (ms) of the latest `succeeded` or `cancelled` jobs, for
        browsing (those states have no index of their own); bounded by RECENT_KEPT, advisory
        (an entry may outlive its job: readers check the job's state)."""
        return self.member("recent", state)

    @property
    def cron_secret(self) -> str:
        """The workers' shared secret for cron tick ids (herder.cron.cron_tick_id); producers'
        ACL does not cover it (herder.acl), so they cannot predict a tick's id."""
        return self.key("cron-secret")

    @property
    def trend(self) -> str:
        """Hash: minute (epoch // 60) -> one trend sample (see lua/trend.lua); bounded, with a TTL."""
        return self.key("trend")


def queues_key(prefix: str) -> str:
    """The set of known queue names (the only key outside a queue's slot)."""
    return f"{prefix}:queues"


def api_tokens_key(prefix: str) -> str:
    """The HTTP API's token records (a hash: token id -> JSON with the token's sha256, scopes)."""
    return f"{prefix}:api:tokens"
