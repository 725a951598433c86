"""What a caller may ask for: the enqueue request model and name checks, validated before
anything touches Redis."""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from herder.backoff import Backoff
from herder.errors import InvalidInput
from herder.keys import valid_id, valid_queue
from herder.models import MAX_PRIORITY, MIN_PRIORITY

MAX_BATCH = 10_000
MAX_LABELS = 32
MAX_LABEL_KEY_CHARS = 63  # as Kubernetes label names
MAX_LABEL_VALUE_CHARS = 256
# `at` within a year back (a run-at in the past just runs now) and ten years ahead.
MIN_AT_SECONDS = 946_684_800  # 2000-01-01: catches seconds-vs-milliseconds mistakes too
MAX_AT_AHEAD_SECONDS = 10 * 365 * 86_400


def check_queue(queue: str) -> str:
    if not valid_queue(queue):
        raise InvalidInput(f"invalid queue name {queue!r}: use letters, digits, '.', '_', '-' (max 128)")
    return queue


class JobRequest(BaseModel):
    """What a caller may ask for when enqueueing; validated before anything touches Redis."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    task: str
    payload: Any = None
    id: str | None = None
    priority: int = Field(default=0, ge=MIN_PRIORITY, le=MAX_PRIORITY)
    delay: float | None = Field(default=None, ge=0, le=365 * 86_400)
    at: datetime | float | None = None
    after: list[str] = Field(default_factory=list, max_length=1000)
    run_regardless: bool = False
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    backoff: Backoff | None = None
    timeout: float | None = Field(default=None, gt=0, le=7 * 86_400)
    capabilities: list[str] = Field(default_factory=list, max_length=32)
    labels: dict[str, str] = Field(default_factory=dict, max_length=MAX_LABELS)

    @field_validator("id")
    @classmethod
    def _id_ok(cls, v: str | None) -> str | None:
        if v is not None and not valid_id(v):
            raise ValueError("job id must match [A-Za-z0-9][A-Za-z0-9._:@-]{0,199}")
        return v

    @field_validator("after")
    @classmethod
    def _parents_ok(cls, v: list[str]) -> list[str]:
        for p in v:
            if not valid_id(p):
                raise ValueError(f"invalid parent job id {p!r}")
        return list(dict.fromkeys(v))

    @field_validator("labels")
    @classmethod
    def _labels_ok(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not key or len(key) > MAX_LABEL_KEY_CHARS:
                raise ValueError(f"label name {key[:80]!r} must be 1-{MAX_LABEL_KEY_CHARS} characters")
            if len(value) > MAX_LABEL_VALUE_CHARS:
                raise ValueError(f"label {key!r} is {len(value)} characters; limit {MAX_LABEL_VALUE_CHARS}")
        return v

    @field_validator("at")
    @classmethod
    def _at_ok(cls, v: datetime | float | None) -> datetime | float | None:
        if isinstance(v, float | int) and not isinstance(v, bool):
            if not math.isfinite(v) or not MIN_AT_SECONDS <= v <= time.time() + MAX_AT_AHEAD_SECONDS:
                raise ValueError("'at' must be epoch seconds between 2000 and ten years from now")
        elif isinstance(v, datetime) and v.tzinfo is not None:
            ts = v.timestamp()
            if not MIN_AT_SECONDS <= ts <= time.time() + MAX_AT_AHEAD_SECONDS:
                raise ValueError("'at' must be between 2000 and ten years from now")
        return v

    @field_validator("capabilities")
    @classmethod
    def _caps_ok(cls, v: list[str]) -> list[str]:
        for c in v:
            if not c or len(c) > 64 or not c.replace("-", "").replace("_", "").replace(".", "").isalnum():
                raise ValueError(f"invalid capability {c!r}")
        return sorted(set(v))

    @model_validator(mode="after")
    def _one_time(self) -> JobRequest:
        if self.delay is not None and self.at is not None:
            raise ValueError("give either delay or at, not both")
        if self.id is not None and self.id in self.after:
            raise ValueError("a job cannot depend on itself")
        return self

    def at_ms(self) -> int | None:
        if self.at is None:
            return None
        if isinstance(self.at, datetime):
            if self.at.tzinfo is None:
                raise ValueError("'at' needs a timezone (e.g. 2026-01-01T00:00:00Z)")
            return int(self.at.timestamp() * 1000)
        return int(self.at * 1000)


def error_text(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'request'}: {e['msg']}" for e in exc.errors())
