"""Groups: create, add and remove members, roles, handing a group over."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg

from fog_messaging import domain, store
from fog_messaging.domain import Rejected, Role
from fog_messaging.service.common import (
    SOURCE,
    MessagingError,
    conversation_seen_by,
    conversation_uuid,
    locked,
    member_of,
    refusal,
)
from fog_shared.commands import messaging as contract
from fog_shared.events.messaging import (
    GroupCreated,
    MemberAdded,
    MemberRemoved,
    MemberRoleChanged,
)
from fog_shared.pg import outbox

# -- groups -----------------------------------------------------------------------------------


async def create_group(
    conn: asyncpg.Connection, command: contract.CreateGroupCommand, *, now: datetime
) -> contract.ConversationView:
    me = member_of(command.by)
    try:
        roster = domain.group_roster(me, command.group.member_ids)
    except Rejected as rejected:
        raise refusal(rejected) from None
    others = [m for m in roster if m != me]
    unknown = set(others) - await store.known_users(conn, others)
    if unknown:
        raise MessagingError("not_found", f"no such user: {', '.join(sorted(unknown))}")
    conversation_id = uuid.uuid4()
    async with conn.transaction():
        await store.create_group(conn, conversation_id, command.group.name, now)
        for member, role in roster.items():
            await store.add_member(conn, conversation_id, member, role, after_seq=0, now=now)
        event = GroupCreated(conversation_id=str(conversation_id), name=command.group.name, owner_id=me,
                             member_ids=list(roster), created_at=now)  # fmt: skip
        await outbox.record(conn, event, source=SOURCE)
        payload = {"member_id": me, "role": "owner", "by": me}
        await store.append_timeline(conn, list(roster), conversation_id, "group_created", payload=payload, now=now)
        return await conversation_seen_by(conn, me, conversation_id)


async def _group_roster(conn: asyncpg.Connection, conversation_id: uuid.UUID) -> tuple[Any, dict[str, Role]]:
    conv = await locked(conn, conversation_id)
    if conv["kind"] != "group":
        raise MessagingError("not_found", "no such group")
    return conv, await store.members(conn, conversation_id)


async def add_member(
    conn: asyncpg.Connection, command: contract.AddMemberCommand, *, now: datetime
) -> contract.ConversationView:
    """Add a member, who reads what is sent from now on. Adding a member again changes nothing."""
    me, conversation_id, new = member_of(command.by), conversation_uuid(command.conversation_id), command.member
    async with conn.transaction():
        conv, roster = await _group_roster(conn, conversation_id)
        try:
            domain.check_add(roster.get(me), new.member_id, len(roster), new.member_id in roster)
        except Rejected as rejected:
            raise refusal(rejected) from None
        if new.member_id not in roster:
            if not await store.known_users(conn, [new.member_id]):
                raise MessagingError("not_found", "no such user")
            await store.add_member(conn, conversation_id, new.member_id, new.role, after_seq=conv["last_seq"], now=now)
            audience = [*roster, new.member_id]
            event = MemberAdded(conversation_id=str(conversation_id), member_id=new.member_id, role=new.role,
                                added_by=me, after_seq=conv["last_seq"], audience=audience, added_at=now)  # fmt: skip
            await outbox.record(conn, event, source=SOURCE)
            payload = {"member_id": new.member_id, "role": new.role, "by": me}
            await store.append_timeline(conn, audience, conversation_id, "member_added", payload=payload, now=now)
        return await conversation_seen_by(conn, me, conversation_id)


async def remove_member(conn: asyncpg.Connection, command: contract.RemoveMemberCommand, *, now: datetime) -> None:
    """Remove a member, or leave (``member_id`` is the caller): they read nothing sent afterwards."""
    me, conversation_id, target = member_of(command.by), conversation_uuid(command.conversation_id), command.member_id
    async with conn.transaction():
        conv, roster = await _group_roster(conn, conversation_id)
        try:
            domain.check_remove(me, roster.get(me), target, roster.get(target))
        except Rejected as rejected:
            raise refusal(rejected) from None
        await store.remove_member(conn, conversation_id, target, until_seq=conv["last_seq"])
        audience = list(roster)  # the removed member learns it too
        event = MemberRemoved(conversation_id=str(conversation_id), member_id=target, removed_by=me,
                              until_seq=conv["last_seq"], audience=audience, removed_at=now)  # fmt: skip
        await outbox.record(conn, event, source=SOURCE)
        payload = {"member_id": target, "role": None, "by": me}
        await store.append_timeline(conn, audience, conversation_id, "member_removed", payload=payload, now=now)


async def set_role(
    conn: asyncpg.Connection, command: contract.SetRoleCommand, *, now: datetime
) -> contract.ConversationView:
    me, conversation_id = member_of(command.by), conversation_uuid(command.conversation_id)
    async with conn.transaction():
        _, roster = await _group_roster(conn, conversation_id)
        try:
            domain.check_set_role(roster.get(me), roster.get(command.member_id), command.change.role)
        except Rejected as rejected:
            raise refusal(rejected) from None
        await _change_roles(conn, conversation_id, roster, {command.member_id: command.change.role}, me, now)
        return await conversation_seen_by(conn, me, conversation_id)


async def transfer(
    conn: asyncpg.Connection, command: contract.TransferCommand, *, now: datetime
) -> contract.ConversationView:
    """The owner hands the group to another member and stays on as an admin."""
    me, conversation_id, target = member_of(command.by), conversation_uuid(command.conversation_id), command.transfer
    async with conn.transaction():
        _, roster = await _group_roster(conn, conversation_id)
        try:
            changes = domain.transfer(me, roster.get(me), target.member_id, roster.get(target.member_id))
        except Rejected as rejected:
            raise refusal(rejected) from None
        await _change_roles(conn, conversation_id, roster, changes, me, now)
        return await conversation_seen_by(conn, me, conversation_id)


async def _change_roles(
    conn: asyncpg.Connection,
    conversation_id: uuid.UUID,
    roster: Mapping[str, Role],
    changes: Mapping[str, Role],
    me: str,
    now: datetime,
) -> None:
    audience = list(roster)
    for member, role in changes.items():
        if roster[member] == role:
            continue
        await store.set_role(conn, conversation_id, member, role)
        event = MemberRoleChanged(conversation_id=str(conversation_id), member_id=member, role=role,
                                  previous_role=roster[member], changed_by=me, audience=audience,
                                  changed_at=now)  # fmt: skip
        await outbox.record(conn, event, source=SOURCE)
        payload = {"member_id": member, "role": role, "by": me}
        await store.append_timeline(conn, audience, conversation_id, "role_changed", payload=payload, now=now)
