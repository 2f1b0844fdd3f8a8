"""Subject builders: one spelling for every subject, and no ids in them."""

from __future__ import annotations

import pytest

from fog_shared import subjects
from fog_shared.bus.topology import CONSUMERS, STREAMS, ConsumerSpec


def test_subjects_follow_the_naming_scheme() -> None:
    assert subjects.event_subject("scheduler", "job", "assigned", 1) == "fog.evt.scheduler.job.assigned.v1"
    assert subjects.command_subject("auth", "login") == "fog.cmd.auth.login.v1"
    assert subjects.query_subject("registry", "get_node", 2) == "fog.qry.registry.get_node.v2"
    assert subjects.event_type_of("fog.evt.auth.user.registered.v1") == "auth.user.registered.v1"


@pytest.mark.parametrize("bad", ["Job", "job.id", "job-1", "", "1job"])
def test_tokens_that_could_hide_ids_or_wildcards_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="must be lower-case"):
        subjects.event_subject("scheduler", bad, "assigned", 1)


def test_version_must_be_positive() -> None:
    with pytest.raises(ValueError, match="version"):
        subjects.event_subject("auth", "user", "registered", 0)


def test_every_consumer_reads_a_declared_stream_and_streams_do_not_overlap() -> None:
    names = {s.name for s in STREAMS}
    assert all(c.stream in names for c in CONSUMERS)
    all_subjects = [subject for s in STREAMS for subject in s.subjects]
    assert len(all_subjects) == len(set(all_subjects))
    assert all(s.duplicate_window_s >= 120 for s in STREAMS)


def test_backoff_grows_then_repeats_its_last_step() -> None:
    spec = ConsumerSpec(stream="S", durable="d", filter_subjects=("x",), backoff_s=(1.0, 5.0))
    assert [spec.backoff_for(n) for n in (1, 2, 3, 9)] == [1.0, 5.0, 5.0, 5.0]
