"""The pure parts of event replay: subject patterns, cursors and the causal tree."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fog_shared.replay.causality import build_trace
from fog_shared.replay.history import CursorError, format_cursor, parse_cursor, subject_matches
from fog_shared.replay.rebuild import diff_rows
from fog_shared.replay.records import EventRecord, subjects_overlap, trace_id_of

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("left", "right", "overlap"),
    [
        ("fog.evt.>", "fog.evt.scheduler.>", True),
        ("fog.evt.scheduler.job.>", "fog.evt.scheduler.>", True),
        ("fog.evt.scheduler.>", "fog.evt.registry.>", False),
        ("fog.evt.*.job.completed.v1", "fog.evt.scheduler.>", True),
        ("fog.evt", "fog.evt.>", False),
        ("fog.dlq.>", "fog.evt.>", False),
    ],
)
def test_subject_patterns_overlap_when_one_subject_could_match_both(left: str, right: str, overlap: bool) -> None:
    assert subjects_overlap(left, right) is overlap
    assert subjects_overlap(right, left) is overlap


@pytest.mark.parametrize(
    ("subject", "pattern", "matches"),
    [
        ("fog.evt.scheduler.job.completed.v1", "fog.evt.>", True),
        ("fog.evt.scheduler.job.completed.v1", "fog.evt.*.job.completed.v1", True),
        ("fog.evt.scheduler.job.completed.v1", "fog.evt.registry.>", False),
        ("fog.evt.scheduler", "fog.evt.scheduler.>", False),
        ("fog.evt.scheduler.job.completed.v1", "fog.evt.scheduler.job.completed.v1", True),
    ],
)
def test_a_subject_matches_a_pattern(subject: str, pattern: str, matches: bool) -> None:
    assert subject_matches(subject, pattern) is matches


def test_a_cursor_round_trips_and_a_forged_one_is_refused() -> None:
    cursor = {"EVT_SCHEDULER": 12, "EVT_AUTH": 3}
    assert parse_cursor(format_cursor(cursor)) == cursor
    for forged in ("EVT_AUTH", "EVT_AUTH:x", ":3", "EVT_AUTH:0"):
        with pytest.raises(CursorError):
            parse_cursor(forged)


def test_the_trace_id_comes_from_a_w3c_traceparent_only() -> None:
    assert trace_id_of("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01") == "0af7651916cd43dd8448eb211c80319c"
    assert trace_id_of("garbage") is None
    assert trace_id_of(None) is None


def _event(event_id: str, cause: str | None, after_ms: int, stream: str = "EVT_SCHEDULER") -> EventRecord:
    at = T0 + timedelta(milliseconds=after_ms)
    return EventRecord(
        stream=stream, seq=after_ms + 1, subject=f"fog.evt.x.y.{event_id}.v1", stored_at=at, time=at, id=event_id,
        causation_id=cause, correlation_id="req-1", trace_id="t" * 32,
    )  # fmt: skip


def test_the_trace_is_a_tree_by_causation_with_timings() -> None:
    events = [
        _event("completed", "started", 300),
        _event("submitted", None, 0),
        _event("reputation", "completed", 350, stream="EVT_REGISTRY"),
        _event("assigned", "submitted", 100),
        _event("started", "assigned", 200),
    ]
    trace = build_trace("req-1", events)
    assert [(s.event.id, s.depth) for s in trace.steps] == [
        ("submitted", 0), ("assigned", 1), ("started", 2), ("completed", 3), ("reputation", 4),
    ]  # fmt: skip
    assert [s.offset_ms for s in trace.steps] == [0, 100, 200, 300, 350]
    assert trace.steps[4].after_cause_ms == 50
    assert trace.steps[0].after_cause_ms is None
    assert trace.duration_ms == 350
    assert trace.trace_ids == ["t" * 32]


def test_events_whose_cause_is_missing_or_circular_still_show_as_roots() -> None:
    events = [_event("a", "b", 0), _event("b", "a", 10), _event("orphan", "gone", 20)]
    trace = build_trace("req-1", events)
    assert sorted(s.event.id or "" for s in trace.steps) == ["a", "b", "orphan"]
    assert {s.event.id: s.depth for s in trace.steps}["orphan"] == 0


def test_rows_differ_by_key_and_by_column() -> None:
    live = {"a": {"status": "ready", "reputation": 0.5}, "b": {"status": "down", "reputation": 0.5}}
    rebuilt = {"a": {"status": "ready", "reputation": 0.7}, "c": {"status": "ready", "reputation": 0.5}}
    differences = diff_rows(live, rebuilt)
    assert [(d.key, d.kind, d.columns) for d in differences] == [
        ("a", "changed", {"reputation": [0.5, 0.7]}), ("b", "missing_rebuilt", {}), ("c", "missing_live", {}),
    ]  # fmt: skip
    assert diff_rows(live, live) == []
