"""Per-client rate limits: a token bucket per key (a client address).

Position in the flow: enrollment API (and other unauthenticated endpoints) -> **ratelimit** ->
429 with Retry-After. Pure: the clock is passed in, so tests need no sleeping. Memory is
bounded: buckets that have refilled are forgotten, and at most ``max_keys`` are kept (the
oldest go first), so a flood of spoofed-looking addresses cannot grow it without end.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["ClientLimits", "RateLimiter", "retry_after"]


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """``rate`` events per second per key on average, bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, not {rate} and {burst}")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str, now: float, cost: float = 1.0) -> float:
        """Take ``cost`` for ``key`` at time ``now`` (seconds, monotonic): 0 when allowed,
        else the seconds to wait before it would be (and nothing is taken)."""
        wait = self.peek(key, now, cost)
        if wait == 0:
            self._buckets[key].tokens -= cost
        return wait

    def peek(self, key: str, now: float, cost: float = 1.0) -> float:
        """Like ``take``, but takes nothing: would ``cost`` be allowed now?"""
        bucket = self._refill(key, now)
        return 0.0 if bucket.tokens >= cost else (cost - bucket.tokens) / self.rate

    def _refill(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
        else:
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        self._buckets[key] = bucket  # most recently used last
        self._forget(now)
        return bucket

    def _forget(self, now: float) -> None:
        full_after = self.burst / self.rate
        while self._buckets:
            oldest_key, oldest = next(iter(self._buckets.items()))
            if len(self._buckets) > self.max_keys or now - oldest.updated >= full_after:
                del self._buckets[oldest_key]
            else:
                break

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass(frozen=True)
class ClientLimits:
    """Per client address: requests (``rate`` per second, bursts of ``burst``) and failed
    requests (``failure_rate`` per second, bursts of ``failure_burst``)."""

    rate: float = 5.0
    burst: float = 20.0
    failure_rate: float = 1 / 6  # ten a minute
    failure_burst: float = 10.0
    max_body_bytes: int = 64 * 1024  # a CSR is ~0.5-2 KiB; labels and system info are small
    body_timeout: float = 60.0  # seconds for the whole body (httpbody.BODY_TIMEOUT)


def retry_after(wait: float) -> int | None:
    """Seconds for a Retry-After header from a ``take``/``peek`` result; None when allowed."""
    return None if wait == 0 else max(1, math.ceil(wait))
