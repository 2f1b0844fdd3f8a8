"""Token buckets per key (client address, principal): how the gateway sheds abusive request rates.

Pure and clock-free: the caller passes ``now`` (a monotonic clock), so tests never wait. Each key
holds ``burst`` tokens refilled at ``rate_per_s``; a request takes one. Memory is bounded by
keeping only the ``max_keys`` most recently seen keys: a key dropped to make room comes back
with a full bucket, which at worst lets one forgotten client burst once more — better than
letting random source addresses grow the table without limit.

One process, one event loop: :meth:`RateLimiter.take` never awaits, so it needs no lock. Limits
are per gateway process, not global across replicas.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from prometheus_client import Counter

#: refusals of every limiter, labelled ``scope`` = "source" (client address) or "principal"
RATE_LIMITED = Counter("fog_gateway_rate_limited_total", "Requests refused by a rate limiter", ["scope"])

# Refills are float sums: a caller that waits exactly the advised time must get its token even
# when ``elapsed * rate`` lands a hair under 1.0.
_EPSILON = 1e-9


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: int, max_keys: int = 100_000) -> None:
        if rate_per_s > 0 and burst < 1:
            raise ValueError("burst must be at least 1")
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.rate_per_s, self.burst, self.max_keys = rate_per_s, burst, max_keys
        # key -> (tokens left, when they were counted); order = least recently used first
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    @property
    def unlimited(self) -> bool:
        return self.rate_per_s <= 0

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float) -> float:
        """Take a token for ``key``: 0.0 when allowed, else the seconds until one is available."""
        if self.unlimited:
            return 0.0
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            tokens, at = float(self.burst), now
        else:
            tokens, at = bucket
            # max(): a clock that steps back must not drain (or, later, double-refill) a bucket
            tokens = min(float(self.burst), tokens + max(0.0, now - at) * self.rate_per_s)
            at = max(at, now)
        allowed = tokens >= 1.0 - _EPSILON
        if allowed:
            tokens = max(0.0, tokens - 1.0)
        self._buckets[key] = (tokens, at)  # re-inserted last: most recently used
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return 0.0 if allowed else (1.0 - tokens) / self.rate_per_s


def retry_after_s(wait_s: float) -> int:
    """The ``Retry-After`` value for a wait: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(wait_s))
