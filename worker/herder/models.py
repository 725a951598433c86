"""The job model and the read models returned by the client (status, workers)."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from herder.backoff import Backoff
from herder.errors import CorruptData

MIN_PRIORITY = -1000
MAX_PRIORITY = 1000


class JobState(StrEnum):
    scheduled = "scheduled"  # due in the future (delay, run-at, or retry backoff)
    waiting = "waiting"  # on parents
    ready = "ready"
    active = "active"
    succeeded = "succeeded"
    dead = "dead"  # in the dead-letter queue
    cancelled = "cancelled"


PENDING_STATES = frozenset({JobState.scheduled, JobState.waiting, JobState.ready})
FINAL_STATES = frozenset({JobState.succeeded, JobState.dead, JobState.cancelled})


class AttemptError(BaseModel):
    """One failed (or interrupted) attempt, kept on the job."""

    attempt: int
    kind: str = "error"  # error | timeout | lease_expired | handed_back | cancelled | permanent
    type: str
    message: str
    traceback: str = ""
    worker: str = ""
    started_at: float | None = None
    ended_at: float | None = None


class Job(BaseModel):
    """A job as stored in Redis (one hash per job)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    queue: str
    task: str
    payload: Any = None
    state: JobState
    priority: int = 0
    attempts: int = 0
    # None until a worker claims it: a producer that does not know the task leaves the limit to
    # the claiming worker's task (claim.lua stamps it), so no number shown before is a guess.
    max_attempts: int | None = None
    backoff: Backoff = Field(default_factory=Backoff)
    timeout: float | None = None
    parents: list[str] = Field(default_factory=list)
    run_regardless: bool = False
    capabilities: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    enqueued_at: float | None = None
    run_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    result: Any = None
    errors: list[AttemptError] = Field(default_factory=list)
    worker: str | None = None
    progress: dict[str, Any] | None = None
    dead_reason: str | None = None
    cancel_requested: bool = False
    replays: int = 0

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> Job:
        """Decode a job hash. Anything in Redis may be corrupt: every failure is a CorruptData
        naming the job and the field, never a bare decoding exception."""
        job_id = raw.get("id") if isinstance(raw.get("id"), str) else None
        who = f"job {job_id[:200]!r}" if job_id and not has_surrogates(job_id) else "a job"
        for k, v in raw.items():
            if has_surrogates(k) or has_surrogates(v):
                raise CorruptData(f"{who}: field {k[:64]!r} is not valid UTF-8")
        try:
            return cls._decode(raw)
        except _DecodeFailed as exc:
            raise CorruptData(f"{who}: field {exc.field!r}: {exc.reason}") from None
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            raise CorruptData(f"{who}: {type(exc).__name__}: {str(exc)[:200]}") from None

    @classmethod
    def _decode(cls, raw: dict[str, str]) -> Job:
        def num(key: str) -> float | None:
            v = raw.get(key)
            try:
                return float(v) / 1000.0 if v not in (None, "") else None
            except (TypeError, ValueError):
                raise _DecodeFailed(key, "not a number") from None

        def js(key: str, default: Any) -> Any:
            v = raw.get(key)
            try:
                return json.loads(v) if v not in (None, "") else default
            except (ValueError, RecursionError):
                raise _DecodeFailed(key, "not valid JSON") from None

        for required in ("id", "queue", "task", "state"):
            if not raw.get(required):
                raise _DecodeFailed(required, "missing")
        return cls(
            id=raw["id"],
            queue=raw["queue"],
            task=raw["task"],
            payload=js("payload", None),
            state=JobState(raw["state"]),
            priority=int(raw.get("priority") or 0),
            attempts=int(raw.get("attempts") or 0),
            max_attempts=int(raw["max_attempts"]) if raw.get("max_attempts") else None,
            backoff=Backoff(**js("backoff", {})),
            timeout=float(raw["timeout"]) if raw.get("timeout") else None,
            parents=js("parents", []),
            run_regardless=raw.get("run_regardless") == "1",
            capabilities=js("caps", []),
            labels=js("labels", {}),
            enqueued_at=num("enqueued_at"),
            run_at=num("run_at"),
            started_at=num("started_at"),
            finished_at=num("finished_at"),
            result=js("result", None),
            errors=js("errors", []),
            worker=raw.get("worker") or None,
            progress=js("progress", None),
            dead_reason=raw.get("dead_reason") or None,
            cancel_requested=raw.get("cancel") == "1",
            replays=int(raw.get("replays") or 0),
        )


class _DecodeFailed(Exception):
    def __init__(self, field: str, reason: str) -> None:
        self.field, self.reason = field, reason


def has_surrogates(v: object) -> bool:
    """True for text decoded from non-UTF-8 bytes (the client uses surrogateescape)."""
    if not isinstance(v, str):
        return False
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class WorkerInfo(BaseModel):
    """A worker's registry entry, refreshed with its heartbeat."""

    id: str
    queue: str
    host: str = ""
    pod: str = ""
    pid: int = 0
    capacity: int = 0
    in_flight: int = 0
    jobs: list[str] = Field(default_factory=list)
    capabilities: list[str] = Field(default_factory=list)
    draining: bool = False
    drained: bool = False
    started_at: float | None = None
    last_seen: float | None = None
    version: str = ""


class QueueStatus(BaseModel):
    """One consistent snapshot of a queue (read by one Lua script)."""

    queue: str
    ready: int  # due now: ready plus scheduled jobs whose time has come
    scheduled: int  # due in the future
    waiting: int
    active: int
    dead: int
    paused: bool
    workers: list[WorkerInfo] = Field(default_factory=list)
    counters: dict[str, int] = Field(default_factory=dict)
    now: float = 0.0


class EnqueueResult(BaseModel):
    id: str
    state: JobState
    created: bool  # False when the id already existed (idempotent enqueue)
