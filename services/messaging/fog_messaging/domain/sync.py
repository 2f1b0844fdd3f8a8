"""Sync tokens and what part of a timeline one sync returns."""

from __future__ import annotations

from dataclasses import dataclass

from fog_messaging.domain.common import Rejected
from fog_shared.commands import messaging as contract


def sync_token(position: int) -> str:
    """An opaque-looking token for a position in the caller's timeline."""
    return contract.sync_token(position)


def parse_sync_token(token: str | None) -> int:
    """The position a token stands for; no token means from the start."""
    position = contract.token_position(token)
    if position is None:
        raise Rejected("invalid_token", "the since token is not one this API gave out")
    return position


@dataclass(frozen=True, slots=True)
class SyncWindow:
    """Where one sync starts in the caller's timeline.

    ``limited`` when the caller missed more than is kept (retention dropped entries after their
    token) or more than ``catch_up_max`` entries: the sync then starts after the gap and says so,
    and the client pages back per conversation for what it wants of it. ``start`` None means
    "just before the caller's newest ``limit`` entries"."""

    start: int | None
    limited: bool


def sync_window(since: int, head: int, pruned_through: int, missed: int, catch_up_max: int) -> SyncWindow:
    """``head``: the newest position; ``pruned_through``: retention may have dropped entries up to
    this position; ``missed``: how many entries the caller has after ``since`` (counted up to
    ``catch_up_max + 1``)."""
    if since > head:
        raise Rejected("invalid_token", "the since token is from the future")
    if since < pruned_through:
        return SyncWindow(start=pruned_through, limited=True)  # all that is still kept, oldest first
    if missed > catch_up_max:
        return SyncWindow(start=None, limited=True)
    return SyncWindow(start=since, limited=False)
