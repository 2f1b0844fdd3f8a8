"""A timeline push too big for one message goes in parts, each a whole run of positions."""

from __future__ import annotations

import itertools

from fog_messaging.timeline_push import push_bodies
from fog_shared.commands.gateway import TimelinePush


def entry(position: int, size: int = 10) -> dict[str, object]:
    return {"position": position, "audience": ["ann"], "text": "x" * size}


def test_a_push_that_fits_goes_whole() -> None:
    [body] = push_bodies(3, 6, [entry(4), entry(6)], ["e-1"])
    push = TimelinePush.model_validate_json(body)
    assert (push.after, push.through, [e.position for e in push.entries], push.event_ids) == (3, 6, [4, 6], ["e-1"])


def test_a_push_over_budget_is_split_into_consecutive_runs_and_the_event_ids_ride_with_the_last() -> None:
    entries = [entry(position, size=400) for position in range(11, 19)]
    parts = [TimelinePush.model_validate_json(body) for body in push_bodies(10, 18, entries, ["e-1"], budget=1000)]
    assert len(parts) > 1
    assert parts[0].after == 10
    assert parts[-1].through == 18
    for before, after in itertools.pairwise(parts):
        assert after.after == before.through, "no position lost or repeated between parts"
    assert [e.position for part in parts for e in part.entries] == list(range(11, 19))
    assert all(part.after < e.position <= part.through for part in parts for e in part.entries)
    assert [part.event_ids for part in parts] == [[]] * (len(parts) - 1) + [["e-1"]]


def test_one_entry_bigger_than_the_budget_still_goes_alone() -> None:
    [body] = push_bodies(0, 1, [entry(1, size=5000)], [], budget=1000)
    assert TimelinePush.model_validate_json(body).through == 1
