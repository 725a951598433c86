"""Wire encoding: a validated request becomes the job spec the enqueue script stores (strings
and numbers only, as Lua sees them)."""

from __future__ import annotations

import json
import secrets
from functools import lru_cache
from typing import Any

from herder.backoff import Backoff
from herder.errors import InvalidInput
from herder.request import JobRequest
from herder.tasks import Task


@lru_cache(maxsize=1024)
def _backoff_json(policy: Backoff) -> str:
    """Compact JSON, whole numbers without ".0": a usual policy stays within Redis's
    hash-max-listpack-value (64 bytes), so a queued job's hash keeps the compact listpack
    encoding (one longer value converts the whole hash to a hashtable, ~4x the memory).
    Backoff is frozen: each policy (mostly one per task) is encoded once."""
    fields = {k: int(v) if float(v).is_integer() else v for k, v in policy.model_dump().items()}
    return json.dumps(fields, separators=(",", ":"))


def _json_list(items: list[str]) -> str:
    return json.dumps(items) if items else "[]"


def encode_job(queue: str, req: JobRequest, task: Task) -> dict[str, Any]:
    """The spec of one job for enqueue.lua: the task's defaults filled in, the payload checked
    against the task's model."""
    payload = task.encode_payload(req.payload)
    caps = sorted(set(task.capabilities) | set(req.capabilities))
    try:
        at_ms = req.at_ms()
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    timeout = req.timeout if req.timeout is not None else task.timeout
    return {
        "id": req.id or secrets.token_hex(16),
        # a generated id (128 random bits) cannot name an existing job: the script skips the lookup
        "fresh": "0" if req.id else "1",
        "queue": queue,
        "task": req.task,
        "payload": payload,
        "priority": req.priority,
        # '' when neither says: the worker's task value is stamped at claim (claim.lua)
        "max_attempts": req.max_attempts or task.max_attempts or "",
        "backoff": _backoff_json(req.backoff or task.backoff),
        "timeout": "" if timeout is None else repr(float(timeout)),
        "parents": req.after,
        "parents_json": _json_list(req.after),
        "run_regardless": "1" if req.run_regardless else "0",
        "caps": json.dumps(caps) if caps else "",
        "labels": json.dumps(req.labels) if req.labels else "{}",
        "delay_ms": int((req.delay or 0) * 1000),
        "at_ms": "" if at_ms is None else str(at_ms),
    }
