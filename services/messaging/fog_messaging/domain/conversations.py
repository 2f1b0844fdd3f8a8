"""Conversations: one direct conversation per pair; groups with roles; who reads which messages."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fog_messaging.domain.common import MAX_GROUP_MEMBERS, Rejected, Role, is_node


def direct_key(a: str, b: str) -> str:
    """The one key of the direct conversation between ``a`` and ``b``, whoever starts it."""
    if a == b:
        raise Rejected("invalid_recipient", "a direct conversation needs two different members")
    first, second = sorted((a, b))
    return f"{first}|{second}"


def group_roster(owner_id: str, member_ids: Iterable[str]) -> dict[str, Role]:
    """A new group's members and roles: its creator owns it; nodes cannot be group members."""
    roster: dict[str, Role] = {owner_id: "owner"}
    for member in member_ids:
        if is_node(member):
            raise Rejected("invalid_member", "nodes talk to their owners only, not in groups")
        roster.setdefault(member, "member")
    check_group_size(len(roster))
    return roster


def check_group_size(size: int) -> None:
    if size > MAX_GROUP_MEMBERS:
        raise Rejected("group_full", f"a group has at most {MAX_GROUP_MEMBERS} members")


def may_add(actor: Role | None) -> bool:
    return actor in ("owner", "admin")


def check_add(actor: Role | None, new_member: str, current_size: int, already_member: bool) -> None:
    if actor is None:
        raise Rejected("not_found", "no such conversation")
    if not may_add(actor):
        raise Rejected("forbidden", "only the group's owner and admins add members")
    if is_node(new_member):
        raise Rejected("invalid_member", "nodes talk to their owners only, not in groups")
    if not already_member:
        check_group_size(current_size + 1)


def check_remove(actor_id: str, actor: Role | None, target_id: str, target: Role | None) -> None:
    """Who may take whom out: anyone may leave (but the owner must hand the group over first),
    the owner removes anyone, an admin removes plain members."""
    if actor is None:
        raise Rejected("not_found", "no such conversation")
    if target is None:
        raise Rejected("not_found", "no such member")
    if target == "owner":
        raise Rejected("owner_must_transfer", "the owner hands the group to another member before leaving")
    if actor_id == target_id:
        return
    if actor == "owner" or (actor == "admin" and target == "member"):
        return
    raise Rejected("forbidden", f"a group's {actor} cannot remove its {target}")


def check_set_role(actor: Role | None, target: Role | None, role: Role) -> None:
    """The owner appoints admins and members; ownership moves only by :func:`transfer`."""
    if actor is None:
        raise Rejected("not_found", "no such conversation")
    if target is None:
        raise Rejected("not_found", "no such member")
    if actor != "owner":
        raise Rejected("forbidden", "only the group's owner changes roles")
    if role == "owner" or target == "owner":
        raise Rejected("use_transfer", "ownership moves by transferring it")


def transfer(actor_id: str, actor: Role | None, target_id: str, target: Role | None) -> dict[str, Role]:
    """The roles after the owner hands the group to ``target_id``: the old owner stays, as an admin."""
    if actor is None:
        raise Rejected("not_found", "no such conversation")
    if actor != "owner":
        raise Rejected("forbidden", "only the owner transfers ownership")
    if target is None:
        raise Rejected("not_found", "no such member")
    if target_id == actor_id:
        raise Rejected("invalid_member", "the owner already owns the group")
    return {target_id: "owner", actor_id: "admin"}


@dataclass(frozen=True, slots=True)
class Access:
    """One stretch of membership: messages with ``after_seq < seq <= until_seq`` are readable
    (``until_seq`` is None while a member). A member sees the history from their joining on,
    never what was sent after they left."""

    after_seq: int
    until_seq: int | None = None

    def covers(self, seq: int) -> bool:
        return seq > self.after_seq and (self.until_seq is None or seq <= self.until_seq)


def may_read(periods: Iterable[Access], seq: int) -> bool:
    return any(period.covers(seq) for period in periods)


def readable_up_to(periods: Sequence[Access], last_seq: int) -> int:
    """The newest seq the member may see (0 if none)."""
    best = 0
    for period in periods:
        end = last_seq if period.until_seq is None else min(period.until_seq, last_seq)
        if end > period.after_seq:
            best = max(best, end)
    return best
