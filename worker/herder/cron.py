"""Cron ticks: a pure function from an expression and a time window to the ticks inside it.

Every worker enqueues each tick under the same id, ``herder-cron-<task>-<epoch>-<mac>`` (the mac
keyed by a secret only workers read); the enqueue is idempotent, so a tick runs exactly once
however many workers see it, and nobody else can predict the id to squat it."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

from croniter import CroniterError, croniter

from herder.errors import InvalidInput


def check_cron(expr: str) -> str:
    """Reject what croniter cannot parse and what parses but never fires (e.g. Feb 30)."""
    if not isinstance(expr, str) or not croniter.is_valid(expr):
        raise InvalidInput(f"invalid cron expression {expr!r}")
    try:
        croniter(expr, datetime.now(UTC)).get_next(float)
    except CroniterError:
        raise InvalidInput(f"cron expression {expr!r} never fires") from None
    return expr


def due_ticks(expr: str, after: float, until: float, limit: int = 100) -> list[float]:
    """Epoch seconds of ticks t with after < t <= until (UTC), at most `limit` of them."""
    it = croniter(expr, datetime.fromtimestamp(after, UTC))
    out: list[float] = []
    while len(out) < limit:
        t = float(it.get_next(float))
        if t > until:
            break
        out.append(t)
    return out


def tick_job_id(task: str, tick: float, secret: str) -> str:
    """Same as `cron_tick_id` (kept for readers that list a task's recent ticks)."""
    return cron_tick_id(task, tick, secret)


CRON_ID_PREFIX = "herder-cron-"  # under keys.RESERVED_ID_PREFIX: clients cannot enqueue it


def cron_tick_id(task: str, tick: float, secret: str) -> str:
    """The id every worker of a queue gives one tick of one cron task.

    Deterministic for the workers (they share `secret`, kept in a worker-only key), so the
    idempotent enqueue still runs each tick once; unpredictable for anyone without the secret,
    so nobody can pre-create (squat) a tick's id to suppress it or run it with their payload."""
    mac = hmac.new(secret.encode(), f"{task}\n{int(tick)}".encode(), hashlib.sha256).hexdigest()[:20]
    return f"{CRON_ID_PREFIX}{task}-{int(tick)}-{mac}"
