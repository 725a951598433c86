"""Reply decoding: what each Lua script returns, turned into typed results in one place."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from herder.errors import Conflict, IdConflict, InvalidInput, NotFound
from herder.models import EnqueueResult, JobState, QueueStatus, WorkerInfo


def _is_int(v: object) -> bool:
    return isinstance(v, str) and v.lstrip("-").isdigit() and len(v) < 20


def enqueue_rows(rows: list[list[Any]]) -> list[EnqueueResult]:
    return [EnqueueResult(id=r[0], state=JobState(r[1]), created=bool(int(r[2]))) for r in rows]


def invalid_from_error(msg: str) -> InvalidInput | None:
    """A script refusing input raises `INVALID <reason>`; anything else is a real error."""
    if "INVALID " in msg:
        return InvalidInput(msg.split("INVALID ", 1)[1])
    if "CONFLICT " in msg:
        return IdConflict(msg.split("CONFLICT ", 1)[1])
    return None


def worker_info(flat: list[str], queue: str) -> WorkerInfo:
    h = dict(zip(flat[::2], flat[1::2], strict=True))
    return WorkerInfo(
        id=h.get("id", ""),
        queue=h.get("queue", queue),
        host=h.get("host", ""),
        pod=h.get("pod", ""),
        pid=int(h.get("pid") or 0),
        capacity=int(h.get("capacity") or 0),
        in_flight=int(h.get("in_flight") or 0),
        jobs=json.loads(h.get("jobs") or "[]"),
        capabilities=json.loads(h.get("capabilities") or "[]"),
        draining=h.get("draining") == "1",
        drained=h.get("drained") == "1",
        started_at=float(h["started_at"]) if h.get("started_at") else None,
        last_seen=int(h["last_seen"]) / 1000 if h.get("last_seen") else None,
        version=h.get("version", ""),
    )


def queue_status(queue: str, reply: list[Any]) -> QueueStatus:
    now, ready, sched, waiting, active, dead, paused, workers, stats = reply
    infos = [worker_info(flat, queue) for flat in workers]
    return QueueStatus(
        queue=queue,
        ready=int(ready),
        scheduled=int(sched),
        waiting=int(waiting),
        active=int(active),
        dead=int(dead),
        paused=bool(int(paused)),
        workers=sorted(infos, key=lambda w: w.id),
        # A non-integer field (the stats hash is producer-writable) is skipped, not fatal.
        counters={k: int(v) for k, v in zip(stats[::2], stats[1::2], strict=True) if _is_int(v)},
        now=int(now) / 1000,
    )


def cancel_state(job_id: str, reply: list[str]) -> str:
    """cancel.lua -> the job's new state: cancelled, or cancelling (its worker was asked)."""
    code, detail = reply
    if code == "notfound":
        raise NotFound(f"no job with id {job_id!r}")
    if code == "final":
        raise Conflict(f"job {job_id} is already {detail}")
    return str(code)


def check_removed(job_id: str, reply: list[str]) -> None:
    code, _ = reply
    if code == "notfound":
        raise NotFound(f"no job with id {job_id!r}")
    if code == "active":
        raise Conflict(f"job {job_id} is running; cancel it instead")


@dataclass(frozen=True)
class ReplayResult:
    """What replaying one job did. code: ok (detail: its new state), notfound, state (detail:
    its current, not replayable state), blocked (detail: the dead parent), unknown_task (detail:
    the task this client does not know; decided in Python)."""

    code: str
    detail: str = ""

    @property
    def text(self) -> str:
        """The one-word summary the CLI and dashboard show: the new state, or why not."""
        if self.code == "ok":
            return self.detail
        if self.code == "notfound":
            return "notfound"
        if self.code == "unknown_task":
            return f"unknown task '{self.detail}'"
        return f"{self.code}:{self.detail}"


def replay_results(reply: list[list[str]]) -> list[ReplayResult]:
    return [ReplayResult(str(code), str(detail)) for code, detail in reply]


def retry_state(job_id: str, r: ReplayResult) -> str:
    if r.code == "notfound":
        raise NotFound(f"no job with id {job_id!r}")
    if r.code == "unknown_task":
        raise InvalidInput(f"cannot retry {job_id}: {r.text} (not registered in this app)")
    if r.code == "state":
        raise Conflict(f"job {job_id} is {r.detail}; only dead or cancelled jobs can be retried")
    if r.code == "blocked":
        raise Conflict(f"job {job_id} depends on dead job {r.detail}: retry that one first")
    return r.detail


@dataclass(frozen=True)
class ClaimReply:
    # one row per claimed job: {id, task, payload, attempt (= lease token), timeout, max_attempts,
    # backoff}; decoded per job by herder.worker.claimed.decode_row, which must never fail the
    # batch for one corrupt job.
    rows: list[list[Any]]
    now_ms: int  # Redis's clock
    next_due_ms: int | None  # the earliest scheduled job
    next_expiry_ms: int | None  # the earliest lease expiry
    paused: bool
    draining: int  # 0 no, 1 draining, 2 draining and exit when drained
    lost: list[str]  # jobs this worker no longer holds: stop them
    cancels: list[str]  # jobs whose cancel was requested
    expired: int  # leases reaped by this call


def claim_reply(raw: list[Any]) -> ClaimReply:
    jobs, now, next_due, next_expiry, paused, draining, lost, cancels, expired = raw
    return ClaimReply(
        rows=list(jobs),
        now_ms=int(now),
        next_due_ms=int(next_due) if next_due else None,
        next_expiry_ms=int(next_expiry) if next_expiry else None,
        paused=bool(int(paused)),
        draining=int(draining),
        lost=list(lost),
        cancels=list(cancels),
        expired=int(expired),
    )
