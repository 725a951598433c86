"""Retry delay policy: a pure function of the policy, the attempt number and a random draw."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field


class Backoff(BaseModel):
    """Exponential backoff with proportional jitter and a cap.

    delay(n) = min(max_seconds, base_seconds * factor ** (n - 1)) * (1 + jitter * u),  u ∈ [-1, 1]
    where n is the attempt that just failed (1-based). The cap is applied after jitter too.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_seconds: float = Field(default=1.0, ge=0, le=86_400)
    factor: float = Field(default=2.0, ge=1, le=100)
    max_seconds: float = Field(default=300.0, ge=0, le=7 * 86_400)
    jitter: float = Field(default=0.2, ge=0, le=1)


def retry_delay(policy: Backoff, attempt: int, u: float) -> float:
    """Seconds to wait before the next attempt after attempt `attempt` failed; `u` in [-1, 1]."""
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    u = max(-1.0, min(1.0, u))
    try:
        grown = policy.base_seconds * policy.factor ** (attempt - 1)
    except OverflowError:  # the cap wins long before a float overflows
        grown = math.inf
    raw = min(policy.max_seconds, grown)
    return max(0.0, min(policy.max_seconds, raw * (1 + policy.jitter * u)))
