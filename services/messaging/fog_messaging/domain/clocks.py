"""Vector clocks: validation, happened-before and concurrency, and a deterministic total order."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum

from fog_messaging.domain.common import DEVICE_ID, MAX_CLOCK_COUNTER, MAX_CLOCK_DEVICES, Rejected

VectorClock = Mapping[str, int]


class Causality(Enum):
    BEFORE = "before"
    AFTER = "after"
    EQUAL = "equal"
    CONCURRENT = "concurrent"


def check_clock(clock: VectorClock, device_id: str | None) -> dict[str, int]:
    """A clock a device attached to its message: the author's own device counts in it.

    Returns it as a plain dict; raises :class:`Rejected` (``invalid_clock``) when malformed."""
    if device_id is None:
        raise Rejected("invalid_clock", "a vector clock needs the device_id of the device that wrote the message")
    if not clock:
        raise Rejected("invalid_clock", "a vector clock names at least the author's device")
    if len(clock) > MAX_CLOCK_DEVICES:
        raise Rejected("invalid_clock", f"a vector clock names at most {MAX_CLOCK_DEVICES} devices")
    for device, counter in clock.items():
        if not isinstance(device, str) or not DEVICE_ID.match(device):
            raise Rejected("invalid_clock", f"{device!r} is not a device id")
        if isinstance(counter, bool) or not isinstance(counter, int) or not 1 <= counter <= MAX_CLOCK_COUNTER:
            raise Rejected("invalid_clock", f"the counter of {device} must be an integer from 1 to 2^53")
    if device_id not in clock:
        raise Rejected("invalid_clock", f"the clock does not count the author's device {device_id}")
    return dict(clock)


def check_device_counter(clock: VectorClock, device_id: str, *, used_by_another: bool, previous: int | None) -> None:
    """A device belongs to one sender in a conversation, and its own counter grows with every
    message it writes: otherwise the clock would claim another's writes or rewrite history."""
    if used_by_another:
        raise Rejected("invalid_clock", f"device {device_id} writes for another member of this conversation")
    if previous is not None and clock[device_id] <= previous:
        raise Rejected("stale_clock", f"device {device_id} already wrote with counter {previous}; counters only grow")


def compare(a: VectorClock, b: VectorClock) -> Causality:
    """How the event stamped ``a`` relates to the one stamped ``b`` (a missing device counts 0)."""
    a_less = b_less = False
    for device in a.keys() | b.keys():
        x, y = a.get(device, 0), b.get(device, 0)
        a_less |= x < y
        b_less |= y < x
    if a_less and b_less:
        return Causality.CONCURRENT
    if a_less:
        return Causality.BEFORE
    if b_less:
        return Causality.AFTER
    return Causality.EQUAL


def happened_before(a: VectorClock, b: VectorClock) -> bool:
    return compare(a, b) is Causality.BEFORE


def concurrent(a: VectorClock, b: VectorClock) -> bool:
    return compare(a, b) is Causality.CONCURRENT


def merge(a: VectorClock, b: VectorClock) -> dict[str, int]:
    """The least clock at or after both."""
    return {device: max(a.get(device, 0), b.get(device, 0)) for device in a.keys() | b.keys()}


def clock_weight(clock: VectorClock) -> int:
    """The sum of a clock's counters. If ``a`` happened before ``b``, ``a``'s weight is strictly
    smaller (every counter ≤, one <), so sorting by weight never puts an effect before its cause."""
    return sum(clock.values())


CausalKey = tuple[int, str, str, str]


def causal_key(weight: int, device_id: str, sender_id: str, client_msg_id: str) -> CausalKey:
    """A total order of messages that extends happened-before: by weight, then (for concurrent
    messages of equal weight) by device, sender and the client's message id — all chosen by the
    authors, so every reader, whatever order the messages arrived in, sees the same order."""
    return (weight, device_id, sender_id, client_msg_id)


def concurrent_with(clock: VectorClock, earlier: Iterable[tuple[int, VectorClock]]) -> list[int]:
    """The seqs of ``earlier`` messages (seq, clock) that are concurrent with ``clock``."""
    return sorted(seq for seq, other in earlier if concurrent(clock, other))
