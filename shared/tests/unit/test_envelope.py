"""CloudEvents binary-mode envelope: what goes into NATS headers and back."""

from __future__ import annotations

import pytest

from fog_shared.envelope import NATS_MSG_ID, Envelope, EnvelopeError


def test_headers_round_trip_and_carry_dedupe_id() -> None:
    envelope = Envelope.new(type="auth.user.registered.v1", source="fog/auth", subject="u1").with_trace(
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    )
    headers = envelope.to_headers()
    assert headers["ce-specversion"] == "1.0"
    assert headers[NATS_MSG_ID] == headers["ce-id"] == envelope.id
    assert headers["ce-subject"] == "u1"
    assert headers["traceparent"].startswith("00-0af7")
    assert Envelope.from_headers(headers) == envelope


def test_a_new_chain_correlates_to_itself_and_caused_events_keep_the_chain() -> None:
    first = Envelope.new(type="a.b.c.v1", source="fog/a")
    assert first.correlation_id == first.id
    assert first.causation_id is None
    second = first.caused(type="x.y.z.v1", source="fog/x")
    assert second.correlation_id == first.id
    assert second.causation_id == first.id
    assert second.id != first.id


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        (None, "no headers"),
        ({"ce-id": "1"}, "missing CloudEvents headers"),
        (
            {"ce-specversion": "0.3", "ce-id": "1", "ce-source": "s", "ce-type": "t", "ce-time": "2026-01-01T00:00:00"},
            "unsupported ce-specversion",
        ),
        (
            {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "s", "ce-type": "t", "ce-time": "yesterday"},
            "ce-time",
        ),
    ],
)
def test_invalid_headers_are_refused_with_the_reason(headers: dict[str, str] | None, problem: str) -> None:
    with pytest.raises(EnvelopeError, match=problem):
        Envelope.from_headers(headers)
