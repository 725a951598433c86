"""Cron ticks: a pure function from an expression and a time window to the ticks inside it.

Every worker enqueues each tick under the deterministic id ``cron-<task>-<epoch>``; the enqueue
is idempotent, so a tick runs exactly once however many workers see it."""

from __future__ import annotations

from datetime import UTC, datetime

from croniter import croniter

from herder.errors import InvalidInput


def check_cron(expr: str) -> str:
    if not croniter.is_valid(expr):
        raise InvalidInput(f"invalid cron expression {expr!r}")
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


def tick_job_id(task: str, tick: float) -> str:
    return f"cron-{task}-{int(tick)}"
