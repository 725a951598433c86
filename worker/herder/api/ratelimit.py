"""Per-token rate limit: a token bucket per token id, kept in this process.

Pure apart from the clock, which is passed in. With N API replicas a token gets up to N times
the rate; the limit protects Redis and the workers from one runaway client, it is not billing.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def take(self, key: str, now: float, cost: float = 1.0) -> float:
        """Spend `cost` from `key`'s bucket. Returns 0 when allowed, else the seconds to wait."""
        b = self._buckets.get(key)
        if b is None:
            b = Bucket(self.burst, now)
            self._buckets[key] = b
            if len(self._buckets) > self.max_keys:  # bounded memory: forget the oldest key
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            b.tokens = min(self.burst, b.tokens + max(0.0, now - b.updated) * self.rate)
            b.updated = now
        if b.tokens >= cost:
            b.tokens -= cost
            return 0.0
        return (cost - b.tokens) / self.rate
