"""Token buckets: a burst, then waits that match the refill rate, in bounded memory."""

from __future__ import annotations

import pytest

from fog_gateway.ratelimit import RateLimiter, retry_after_s


def test_a_burst_is_allowed_then_refused_with_the_time_to_the_next_token() -> None:
    limiter = RateLimiter(rate_per_s=2.0, burst=3)
    assert [limiter.take("a", now=100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a", now=100.0) == pytest.approx(0.5)
    assert limiter.take("a", now=100.25) == pytest.approx(0.25)


def test_tokens_refill_with_time_up_to_the_burst() -> None:
    limiter = RateLimiter(rate_per_s=2.0, burst=3)
    for _ in range(3):
        limiter.take("a", now=0.0)
    assert limiter.take("a", now=0.5) == 0.0  # one token back after 1/rate
    assert limiter.take("a", now=0.5) > 0
    # a long pause refills only up to the burst
    assert [limiter.take("a", now=60.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a", now=60.0) > 0


def test_waiting_exactly_the_advised_time_is_enough() -> None:
    limiter = RateLimiter(rate_per_s=3.0, burst=1)  # 1/3 s per token: not exact in binary
    now = 0.1
    assert limiter.take("a", now) == 0.0
    for _ in range(10):
        wait = limiter.take("a", now)
        assert wait > 0
        now += wait
        assert limiter.take("a", now) == 0.0


def test_keys_have_their_own_buckets() -> None:
    limiter = RateLimiter(rate_per_s=1.0, burst=1)
    assert limiter.take("a", now=0.0) == 0.0
    assert limiter.take("a", now=0.0) > 0
    assert limiter.take("b", now=0.0) == 0.0


def test_least_recently_used_keys_are_dropped_beyond_max_keys() -> None:
    limiter = RateLimiter(rate_per_s=1.0, burst=1, max_keys=2)
    limiter.take("a", now=0.0)
    limiter.take("b", now=0.0)
    limiter.take("a", now=0.0)  # refused, but "a" is now the most recently used
    limiter.take("c", now=0.0)  # evicts "b"
    assert len(limiter) == 2
    assert limiter.take("a", now=0.0) > 0  # still remembered: still empty
    assert limiter.take("b", now=0.0) == 0.0  # forgotten: starts with a full bucket again


@pytest.mark.parametrize("rate", [0.0, -1.0])
def test_a_rate_of_zero_or_less_means_unlimited(rate: float) -> None:
    limiter = RateLimiter(rate_per_s=rate, burst=0)
    assert limiter.unlimited
    assert all(limiter.take("a", now=0.0) == 0.0 for _ in range(1000))
    assert len(limiter) == 0


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="burst"):
        RateLimiter(rate_per_s=1.0, burst=0)
    with pytest.raises(ValueError, match="max_keys"):
        RateLimiter(rate_per_s=1.0, burst=1, max_keys=0)


@pytest.mark.parametrize(("wait", "header"), [(0.001, 1), (0.5, 1), (1.0, 1), (1.2, 2), (59.99, 60)])
def test_retry_after_is_whole_seconds_rounded_up_at_least_one(wait: float, header: int) -> None:
    assert retry_after_s(wait) == header
