"""Browsing a queue's jobs by state, page by page, with filters; bounded work per request.

Each state has an index in Redis (see keys.QUEUE_KEYS and lua/lib/state.lua): ready (two zsets: plain and with
capability requirements), scheduled (zset by due time), waiting (a set), active (zset by lease
expiry), dead (zset by time of death). Lists come newest first where the index has a time.
A filter walks the index in pages and stops after `MAX_SCAN` ids, returning a cursor to go on:
a filter over a million jobs is never one request's work.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

from herder.errors import InvalidInput
from herder.keys import QueueKeys
from herder.recent import RECENT_STATES

BROWSABLE = ("ready", "scheduled", "waiting", "active", "dead", "succeeded", "cancelled")
MAX_PAGE = 200
MAX_SCAN = 5_000
STEP = 1_000
SUMMARY_FIELDS = (
    "id",
    "task",
    "state",
    "priority",
    "attempts",
    "max_attempts",
    "worker",
    "labels",
    "enqueued_at",
    "started_at",
    "finished_at",
    "run_at",
    "dead_reason",
)


@dataclass(frozen=True)
class JobFilter:
    task: str | None = None
    label: str | None = None  # "key=value" or "key"
    worker: str | None = None
    text: str | None = None  # substring of the id

    @property
    def active(self) -> bool:
        return any((self.task, self.label, self.worker, self.text))

    def matches(self, row: dict[str, Any]) -> bool:
        """Pure: does one job summary pass the filter?"""
        if self.text and self.text not in row["id"]:
            return False
        if self.task and row.get("task") != self.task:
            return False
        if self.worker and self.worker not in (row.get("worker") or ""):
            return False
        if self.label:
            key, eq, value = self.label.partition("=")
            labels = row.get("labels") or {}
            if key not in labels or (eq and labels[key] != value):
                return False
        return True


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: int | None
    total: int  # jobs in this state (unfiltered)
    scanned: int


def summary(values: list[str | None]) -> dict[str, Any] | None:
    """A job row from HMGET of SUMMARY_FIELDS; None for a job that vanished meanwhile."""
    row = dict(zip(SUMMARY_FIELDS, values, strict=True))
    if row["id"] is None or row["state"] is None:
        return None
    try:
        labels = json.loads(row["labels"] or "{}")
    except ValueError:
        labels = {}
    out: dict[str, Any] = {
        "id": row["id"],
        "task": row["task"] or "",
        "state": row["state"],
        "priority": _int(row["priority"]),
        "attempts": _int(row["attempts"]),
        "max_attempts": _int(row["max_attempts"]),
        "worker": row["worker"] or None,
        "labels": labels if isinstance(labels, dict) else {},
        "dead_reason": (row["dead_reason"] or "")[:500] or None,
    }
    for k in ("enqueued_at", "started_at", "finished_at", "run_at"):
        v = row[k]
        try:
            out[k] = float(v) / 1000 if v else None
        except ValueError:
            out[k] = None
    return out


@cache
def _match_source() -> str:
    return (resources.files("herder") / "lua" / "match.lua").read_text()


@cache
def _match_sha() -> str:
    return hashlib.sha1(_match_source().encode()).hexdigest()


def _int(v: str | None) -> int:
    try:
        return int(v or 0)
    except ValueError:
        return 0


class Browser:
    def __init__(self, redis: Any, keys: QueueKeys) -> None:
        self.redis = redis
        self.keys = keys

    def _key(self, name: str) -> str:
        return f"{self.keys.base}:{name}"

    async def counts(self) -> dict[str, int]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self._key("ready"))
            pipe.zcard(self._key("readyc"))
            pipe.zcard(self._key("scheduled"))
            pipe.scard(self._key("waiting"))
            pipe.zcard(self._key("active"))
            pipe.zcard(self._key("dead"))
            pipe.zcard(self.keys.recent("succeeded"))
            pipe.zcard(self.keys.recent("cancelled"))
            r, rc, s, w, a, d, ok, c = await pipe.execute()
        # succeeded/cancelled: the recent-jobs index (bounded, may hold expired ids)
        return {
            "ready": r + rc,
            "scheduled": s,
            "waiting": w,
            "active": a,
            "dead": d,
            "succeeded": ok,
            "cancelled": c,
        }

    async def _ids(self, state: str, offset: int, count: int) -> tuple[list[str], int]:
        """`count` ids of a state from position `offset` (newest first), and the state's total."""
        ids: list[str]
        if state == "waiting":
            # A set has no order: page through it sorted lexically (SORT ... ALPHA LIMIT),
            # which is stable between pages unlike SSCAN cursors across changes.
            total = int(await self.redis.scard(self._key("waiting")))
            # SORT_RO itself (redis-py's sort_ro sends SORT, a write command for ACLs).
            waiting = await self.redis.execute_command(
                "SORT_RO", self._key("waiting"), "LIMIT", offset, count, "ALPHA", "DESC"
            )
            return list(waiting), total
        if state == "ready":
            plain = int(await self.redis.zcard(self._key("ready")))
            capped = int(await self.redis.zcard(self._key("readyc")))
            ids = []
            if offset < plain:
                ids = list(await self.redis.zrange(self._key("ready"), offset, offset + count - 1))
            if len(ids) < count:
                start = max(0, offset - plain)
                ids += list(await self.redis.zrange(self._key("readyc"), start, start + count - len(ids) - 1))
            return ids, plain + capped
        key = self.keys.recent(state) if state in RECENT_STATES else self._key(state)
        total = int(await self.redis.zcard(key))
        if state in ("dead", "scheduled", *RECENT_STATES):
            ids = list(await self.redis.zrevrange(key, offset, offset + count - 1))
        else:
            ids = list(await self.redis.zrange(key, offset, offset + count - 1))
        return ids, total

    async def _match(self, flt: JobFilter, ids: list[str]) -> list[str]:
        key, eq, value = (flt.label or "").partition("=")
        args = [self.keys.base, flt.task or "", key, value, flt.worker or "", "1" if eq else "0", *ids]
        # EVALSHA_RO: a read-only script needs only read access to its keys (least-privilege ACL).
        sha = _match_sha()
        try:
            return list(await self.redis.evalsha_ro(sha, 1, self.keys.job(ids[0]), *args))
        except NoScriptError:
            await self.redis.script_load(_match_source())
            return list(await self.redis.evalsha_ro(sha, 1, self.keys.job(ids[0]), *args))

    async def rows(self, ids: list[str]) -> list[dict[str, Any]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hmget(self.keys.job(i), list(SUMMARY_FIELDS))
            raw = await pipe.execute()
        return [r for r in (summary(v) for v in raw) if r is not None]

    async def page(
        self,
        state: str,
        cursor: int = 0,
        limit: int = 50,
        flt: JobFilter | None = None,
        max_scan: int = MAX_SCAN,
    ) -> Page:
        if state not in BROWSABLE:
            raise InvalidInput(f"unknown state {state!r}: one of {', '.join(BROWSABLE)}")
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be 1..{MAX_PAGE}")
        if cursor < 0:
            raise InvalidInput("cursor must be >= 0")
        flt = flt or JobFilter()
        items: list[dict[str, Any]] = []
        pos, scanned, total = cursor, 0, 0
        while True:
            step = limit if not flt.active else STEP
            ids, total = await self._ids(state, pos, step)
            if not ids:
                return Page(items, None, total, scanned)
            if flt.text:  # cheap pre-filter on the id before reading hashes
                ids_kept = [(n, i) for n, i in enumerate(ids) if flt.text in i]
            else:
                ids_kept = list(enumerate(ids))
            if flt.active and (flt.task or flt.label or flt.worker) and ids_kept:
                # Match in Redis (one script call) and read full rows for the matches only.
                keep = set(await self._match(flt, [i for _, i in ids_kept]))
                ids_kept = [(n, i) for n, i in ids_kept if i in keep]
            rows = await self.rows([i for _, i in ids_kept])
            by_id = {r["id"]: r for r in rows}
            for n, i in ids_kept:
                r = by_id.get(i)
                # An index entry whose job moved on (replayed, removed, expired) is skipped.
                if r is not None and r["state"] == state and flt.matches(r):
                    items.append(r)
                    if len(items) == limit:
                        nxt = pos + n + 1
                        return Page(items, nxt if nxt < total else None, total, scanned + n + 1)
            pos += len(ids)
            scanned += len(ids)
            if len(ids) < step:
                return Page(items, None, total, scanned)
            if scanned >= max_scan:
                return Page(items, pos, total, scanned)
