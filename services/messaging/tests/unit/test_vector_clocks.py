"""Vector clocks: validation, happened-before and concurrency, and the deterministic total order
that extends happened-before (properties checked with hypothesis)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fog_messaging import domain
from fog_messaging.domain import Causality, Rejected

devices = st.sampled_from(["phone", "laptop", "tablet", "node-1"])
clocks = st.dictionaries(devices, st.integers(min_value=1, max_value=20), min_size=1, max_size=4)


@pytest.mark.parametrize(
    ("clock", "device"),
    [
        ({}, "phone"),
        ({"phone": 0}, "phone"),
        ({"phone": -1}, "phone"),
        ({"phone": 1.5}, "phone"),
        ({"phone": True}, "phone"),
        ({"phone": 2**53 + 1}, "phone"),
        ({"phone": 1}, "laptop"),  # the author's own device is missing
        ({"phone": 1}, None),
        ({"bad device!": 1, "phone": 1}, "phone"),
        ({f"d{i}": 1 for i in range(domain.MAX_CLOCK_DEVICES + 1)}, "d0"),
    ],
)
def test_malformed_clocks_are_refused(clock: dict[str, Any], device: str | None) -> None:
    with pytest.raises(Rejected) as refusal:
        domain.check_clock(clock, device)
    assert refusal.value.code == "invalid_clock"


def test_a_well_formed_clock_is_kept_as_it_is() -> None:
    assert domain.check_clock({"phone": 3, "laptop": 1}, "phone") == {"phone": 3, "laptop": 1}


def test_the_four_relations() -> None:
    assert domain.compare({"a": 1}, {"a": 2}) is Causality.BEFORE
    assert domain.compare({"a": 2, "b": 1}, {"a": 1}) is Causality.AFTER
    assert domain.compare({"a": 1, "b": 0}, {"a": 1}) is Causality.EQUAL
    assert domain.compare({"a": 2}, {"b": 1}) is Causality.CONCURRENT
    assert domain.happened_before({"a": 1}, {"a": 1, "b": 1})
    assert domain.concurrent({"a": 2, "b": 1}, {"a": 1, "b": 2})


@given(clocks, clocks)
def test_compare_is_antisymmetric(a: dict[str, int], b: dict[str, int]) -> None:
    mirrored = {Causality.BEFORE: Causality.AFTER, Causality.AFTER: Causality.BEFORE}
    relation = domain.compare(a, b)
    assert domain.compare(b, a) is mirrored.get(relation, relation)


@given(clocks, clocks)
def test_a_merge_happened_after_or_equals_both(a: dict[str, int], b: dict[str, int]) -> None:
    merged = domain.merge(a, b)
    assert domain.compare(a, merged) in (Causality.BEFORE, Causality.EQUAL)
    assert domain.compare(b, merged) in (Causality.BEFORE, Causality.EQUAL)


@given(clocks, clocks)
def test_weight_respects_happened_before(a: dict[str, int], b: dict[str, int]) -> None:
    if domain.happened_before(a, b):
        assert domain.clock_weight(a) < domain.clock_weight(b)


def _offline_history(seed: int) -> list[tuple[str, dict[str, int], str]]:
    """Two devices writing offline, each now and then seeing the other's messages: (device, clock, id)."""
    rng = random.Random(seed)
    seen = {"phone": {"phone": 0, "laptop": 0}, "laptop": {"phone": 0, "laptop": 0}}
    history = []
    for index in range(30):
        device = rng.choice(["phone", "laptop"])
        other = "laptop" if device == "phone" else "phone"
        if rng.random() < 0.3:  # the devices met: this one learns what the other had written
            seen[device] = domain.merge(seen[device], seen[other])
        seen[device] = {**seen[device], device: seen[device][device] + 1}
        clock = {name: count for name, count in seen[device].items() if count > 0}
        history.append((device, clock, f"{device}-{index}"))
    return history


@given(st.integers(min_value=0, max_value=10_000), st.randoms())
def test_every_arrival_order_gives_one_order_that_keeps_causes_first(seed: int, shuffler: random.Random) -> None:
    history = _offline_history(seed)
    arrived = list(history)
    shuffler.shuffle(arrived)

    def ordered(messages: list[tuple[str, dict[str, int], str]]) -> list[str]:
        keyed = sorted(messages, key=lambda m: domain.causal_key(domain.clock_weight(m[1]), m[0], "alice", m[2]))
        return [m[2] for m in keyed]

    assert ordered(arrived) == ordered(history)
    position = {ident: index for index, ident in enumerate(ordered(history))}
    for _, cause, cause_id in history:
        for _, effect, effect_id in history:
            if domain.happened_before(cause, effect):
                assert position[cause_id] < position[effect_id]


def test_concurrent_messages_are_reported_by_seq() -> None:
    earlier = [(1, {"phone": 1}), (2, {"phone": 2}), (3, {"laptop": 1}), (4, {"phone": 2, "laptop": 2})]
    assert domain.concurrent_with({"phone": 3}, earlier) == [3, 4]
    assert domain.concurrent_with({"phone": 2, "laptop": 3}, earlier) == []


def test_a_device_counts_up_and_writes_for_one_sender_only() -> None:
    domain.check_device_counter({"phone": 3}, "phone", used_by_another=False, previous=None)
    domain.check_device_counter({"phone": 3}, "phone", used_by_another=False, previous=2)
    with pytest.raises(Rejected) as stale:
        domain.check_device_counter({"phone": 2, "laptop": 9}, "phone", used_by_another=False, previous=2)
    assert stale.value.code == "stale_clock"
    with pytest.raises(Rejected) as borrowed:
        domain.check_device_counter({"phone": 3}, "phone", used_by_another=True, previous=None)
    assert borrowed.value.code == "invalid_clock"
