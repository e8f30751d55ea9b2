"""Per-client token buckets, with a clock the test moves."""

from __future__ import annotations

import pytest

from rciots.controller import ratelimit


def test_a_burst_is_allowed_then_the_rate_holds():
    limiter = ratelimit.RateLimiter(rate=2, burst=3)
    assert [limiter.take("a", 0.0) for _ in range(3)] == [0, 0, 0]
    assert limiter.take("a", 0.0) == pytest.approx(0.5)
    assert limiter.take("a", 0.5) == 0  # one more after half a second at 2/s
    assert limiter.take("a", 0.5) > 0


def test_clients_have_buckets_of_their_own():
    limiter = ratelimit.RateLimiter(rate=1, burst=1)
    assert limiter.take("a", 0.0) == 0
    assert limiter.take("b", 0.0) == 0
    assert limiter.take("a", 0.0) > 0


def test_peek_takes_nothing():
    limiter = ratelimit.RateLimiter(rate=1, burst=1)
    assert limiter.peek("a", 0.0) == 0
    assert limiter.peek("a", 0.0) == 0
    assert limiter.take("a", 0.0) == 0
    assert limiter.peek("a", 0.0) == pytest.approx(1.0)


def test_retry_after_is_whole_seconds_and_none_when_allowed():
    assert ratelimit.retry_after(0) is None
    assert ratelimit.retry_after(0.2) == 1
    assert ratelimit.retry_after(2.5) == 3


def test_refilled_buckets_are_forgotten_and_their_number_is_capped():
    limiter = ratelimit.RateLimiter(rate=1, burst=2, max_keys=10)
    for index in range(50):
        limiter.take(f"client-{index}", 0.0)
    assert len(limiter) == 10
    limiter.take("late", 100.0)  # everyone else has refilled long ago
    assert len(limiter) == 1


def test_nonsense_settings_are_refused():
    with pytest.raises(ValueError, match="rate must be"):
        ratelimit.RateLimiter(rate=0, burst=1)
