"""Reconnection backoff: exponential, capped, full jitter, and starting over after a healthy connection."""

from __future__ import annotations

import random

import pytest

from fog_agent.connection import BACKOFF_CAP_S, STABLE_AFTER_S, Backoff, backoff_s


class Ceiling(random.Random):
    """Always the top of the range: shows the ceiling that the jitter draws under."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_the_ceiling_doubles_from_half_a_second_up_to_the_cap() -> None:
    ceilings = [backoff_s(attempt, Ceiling()) for attempt in range(10)]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]
    assert backoff_s(10_000, Ceiling()) == BACKOFF_CAP_S  # no overflow however long the outage


def test_every_delay_is_within_zero_and_the_ceiling() -> None:
    rng = random.Random(7)
    for attempt in range(12):
        ceiling = min(BACKOFF_CAP_S, 0.5 * 2**attempt)
        delays = [backoff_s(attempt, rng) for _ in range(500)]
        assert all(0.0 <= delay <= ceiling for delay in delays)


def test_full_jitter_spreads_delays_over_the_whole_range() -> None:
    rng = random.Random(11)
    delays = [backoff_s(8, rng) for _ in range(1000)]
    assert min(delays) < 0.1 * BACKOFF_CAP_S  # full jitter: near zero happens
    assert max(delays) > 0.9 * BACKOFF_CAP_S
    assert len(set(delays)) > 990  # agents cut off together do not come back together


def test_a_negative_attempt_is_a_bug() -> None:
    with pytest.raises(ValueError, match="attempt"):
        backoff_s(-1, random.Random(1))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_in_a_row_grow_and_a_connection_that_held_starts_over() -> None:
    clock = Clock()
    backoff = Backoff(Ceiling(), clock)
    assert [backoff.next_delay() for _ in range(4)] == [0.5, 1.0, 2.0, 4.0]

    backoff.connected()
    clock.now += 5  # a short-lived connection is not a recovery
    assert backoff.next_delay() == 8.0

    backoff.connected()
    clock.now += STABLE_AFTER_S + 1
    assert backoff.next_delay() == 0.5
    assert backoff.next_delay() == 1.0  # and counts up again from there


def test_once_welcomed_retries_are_never_further_apart_than_the_heartbeat_interval() -> None:
    """A node is declared down after four silent intervals: a gateway back within three must see it in time."""
    clock = Clock()
    backoff = Backoff(Ceiling(), clock)
    assert [backoff.next_delay() for _ in range(8)][-1] == BACKOFF_CAP_S  # never welcomed: the usual cap

    backoff.connected(heartbeat_interval_s=5.0)
    clock.now += STABLE_AFTER_S + 1
    assert [backoff.next_delay() for _ in range(8)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0]
