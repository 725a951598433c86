"""Reply decoding: what each Lua script returns, turned into typed results in one place."""

from __future__ import annotations

import json
from typing import Any

from herder.errors import Conflict, InvalidInput, NotFound
from herder.models import EnqueueResult, JobState, QueueStatus, WorkerInfo


def _is_int(v: object) -> bool:
    return isinstance(v, str) and v.lstrip("-").isdigit() and len(v) < 20


def enqueue_rows(rows: list[list[Any]]) -> list[EnqueueResult]:
    return [EnqueueResult(id=r[0], state=JobState(r[1]), created=bool(int(r[2]))) for r in rows]


def invalid_from_error(msg: str) -> InvalidInput | None:
    """A script refusing input raises `INVALID <reason>`; anything else is a real error."""
    if "INVALID " in msg:
        return InvalidInput(msg.split("INVALID ", 1)[1])
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


def cancel_state(job_id: str, r: str) -> str:
    if r == "notfound":
        raise NotFound(f"no job with id {job_id!r}")
    if r.startswith("final:"):
        raise Conflict(f"job {job_id} is already {r[6:]}")
    return str(r)


def check_removed(job_id: str, r: str) -> None:
    if r == "notfound":
        raise NotFound(f"no job with id {job_id!r}")
    if r == "active":
        raise Conflict(f"job {job_id} is running; cancel it instead")


def retry_state(job_id: str, r: str) -> str:
    if r == "notfound":
        raise NotFound(f"no job with id {job_id!r}")
    if r.startswith("unknown task"):
        raise InvalidInput(f"cannot retry {job_id}: {r} (not registered in this app)")
    if r.startswith("state:"):
        raise Conflict(f"job {job_id} is {r[6:]}; only dead or cancelled jobs can be retried")
    if r.startswith("blocked:"):
        raise Conflict(f"job {job_id} depends on dead job {r[8:]}: retry that one first")
    return r
