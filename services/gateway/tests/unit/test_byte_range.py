"""Range headers of downloads (RFC 9110 §14)."""

from __future__ import annotations

import pytest

from fog_gateway.byte_range import Unsatisfiable, parse_range


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", (0, 9)),
        ("bytes=90-", (90, 99)),
        ("bytes=-10", (90, 99)),
        ("bytes=-1000", (0, 99)),
        ("bytes=50-1000", (50, 99)),
        ("bytes=9-0", None),  # invalid: ignored
        ("bytes=0-1,5-6", None),  # several ranges: served whole
        ("items=0-9", None),
        ("bytes=a-b", None),
        ("bytes=5", None),
    ],
)
def test_ranges_served_and_ignored(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0"])
def test_ranges_past_the_end_are_unsatisfiable(header: str) -> None:
    with pytest.raises(Unsatisfiable):
        parse_range(header, 100)
