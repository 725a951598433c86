"""How to confirm a submission is durable before answering, given what the server supports.

`plan` is pure: server facts + what the caller asked for -> the command to run after the write
(on the same connection), or the reason it cannot be confirmed (then nothing is written).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from redis.exceptions import ResponseError

from herder.connection import is_cluster


class Durability(StrEnum):
    ack = "ack"  # answer once Redis has the job in memory (the default: lowest latency)
    fsync = "fsync"  # answer once Redis has fsynced the job to its append-only file


@dataclass(frozen=True)
class ServerFacts:
    version: tuple[int, int]
    aof_enabled: bool
    appendfsync: str | None  # None when CONFIG GET is not allowed to this ACL user
    cluster: bool = False  # Redis Cluster through redis-py's cluster client

    @property
    def has_waitaof(self) -> bool:
        return self.version >= (7, 2)


@dataclass(frozen=True)
class Plan:
    command: tuple[Any, ...] | None  # run after the write; None: the ack is already enough
    fsync_local: bool  # what the answer will promise
    replicas: int


class CannotConfirm(Exception):
    """The server cannot confirm what the caller asked for."""


def plan(facts: ServerFacts, mode: Durability, replicas: int, timeout_ms: int) -> Plan:
    p = _plan(facts, mode, replicas, timeout_ms)
    if p.command is not None and facts.cluster:
        # WAIT/WAITAOF count the writes of the connection they run on; redis-py's cluster client
        # gives no way to keep one connection to the queue's master for the write and the wait.
        raise CannotConfirm(
            f"{p.command[0]} (replicas={replicas}) is not available on Redis Cluster "
            "(HERDER_REDIS_CLUSTER): submit without replicas; see docs/runtime.md for the loss window"
        )
    return p


def _plan(facts: ServerFacts, mode: Durability, replicas: int, timeout_ms: int) -> Plan:
    if mode is Durability.ack:
        if replicas == 0:
            return Plan(None, False, 0)
        return Plan(("WAIT", replicas, timeout_ms), False, replicas)
    if not facts.aof_enabled:
        raise CannotConfirm("durability=fsync needs the Redis append-only file (appendonly yes)")
    if facts.has_waitaof:
        return Plan(("WAITAOF", 1, replicas, timeout_ms), True, replicas)
    if facts.appendfsync == "always":
        # Before Redis 7.2 there is no WAITAOF, but with appendfsync always the server fsyncs
        # before it replies, so the write's own ack is the confirmation.
        return Plan(("WAIT", replicas, timeout_ms) if replicas else None, True, replicas)
    raise CannotConfirm(
        "durability=fsync needs Redis >= 7.2 (WAITAOF) or appendfsync always; this server is "
        f"{facts.version[0]}.{facts.version[1]} with appendfsync {facts.appendfsync or 'unknown'}"
    )


def confirmed(p: Plan, reply: Any) -> bool:
    """Did the WAIT / WAITAOF reply meet the plan?"""
    if p.command is None:
        return True
    if p.command[0] == "WAITAOF":
        local, reps = int(reply[0]), int(reply[1])
        return local >= 1 and reps >= p.replicas
    return int(reply) >= p.replicas


def parse_version(text: str) -> tuple[int, int]:
    parts = [*text.split("."), "0", "0"][:2]
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        return (0, 0)


async def server_facts(redis: Any) -> ServerFacts:
    info = await redis.info("server")
    persistence = await redis.info("persistence")
    try:
        cfg = await redis.config_get("appendfsync")
        fsync: str | None = cfg.get("appendfsync")
    except ResponseError:  # NOPERM under a least-privilege ACL: treat as unknown
        fsync = None
    return ServerFacts(
        version=parse_version(str(info.get("redis_version", "0.0"))),
        aof_enabled=str(persistence.get("aof_enabled", "0")) == "1",
        appendfsync=fsync,
        cluster=is_cluster(redis),
    )
